"""One `Settings` object for the gateway, the workers and `framers serve` (env prefix FRAMERS_).

Every knob of the service lives here so a deployment is configured in one place (environment
variables, or a `.env` file named by FRAMERS_ENV_FILE). Values are validated at startup: a typo in
an API key list or a limit fails loudly instead of silently disabling a check.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.queue_names import ALL_QUEUES
from framers import defaults as codec_defaults

_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Tenant used when no API keys are configured (single-user, loopback-only mode).
ANONYMOUS_TENANT = "default"


class SettingsError(ValueError):
    """A setting has a value the service cannot work with."""


def parse_api_keys(raw: str) -> dict[str, str]:
    """Parse "key1:tenantA,key2:tenantB" into {key: tenant}.

    Keys may contain any character but ',' and whitespace; tenants are short slugs because they
    appear in logs and records. A key listed twice is an error (it could map to two tenants).
    """
    keys: dict[str, str] = {}
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, tenant = entry.rpartition(":")
        if not sep or not key or not tenant:
            raise SettingsError(f"FRAMERS_API_KEYS entry {_mask(entry)!r} is not of the form key:tenant")
        if not _TENANT_RE.match(tenant):
            raise SettingsError(f"FRAMERS_API_KEYS: tenant {tenant!r} must match {_TENANT_RE.pattern}")
        if key in keys:
            raise SettingsError(f"FRAMERS_API_KEYS: key {_mask(key)!r} is listed twice")
        keys[key] = tenant
    return keys


def _mask(secret: str) -> str:
    # Error messages must not leak a whole key into logs.
    return secret[:2] + "…" if len(secret) > 2 else "…"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAMERS_", extra="ignore", validate_default=True)

    # --- where things live ---------------------------------------------------------------
    data_dir: Path = Field(default=Path("data"), description="Local storage, temp files, and serve's Redis data")
    work_dir: Path | None = Field(
        default=None, description="Scratch space for uploads and jobs (default DATA_DIR/work)"
    )
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str = "framers"
    s3_prefix: str = Field(default="", description="Key prefix inside the bucket, e.g. 'prod/'")
    s3_endpoint_url: str | None = Field(default=None, description="e.g. http://minio:9000; None = AWS")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"

    # --- gateway -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: SecretStr = Field(default=SecretStr(""), description="key1:tenantA,key2:tenantB; empty = no auth")
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After sent with 202 answers")
    ready_requires_workers: bool = Field(
        default=True,
        description="/readyz is 503 while some queue has no connected worker (false: reported, not required)",
    )
    upload_idle_timeout_s: float = Field(
        default=60.0, gt=0, description="An upload that sends no data for this long is refused (408)"
    )
    log_level: str = "INFO"
    idempotency_ttl_s: int = Field(
        default=86_400, ge=1, description="How long an Idempotency-Key of POST /compress is remembered"
    )

    # --- webhooks ------------------------------------------------------------------------
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of X-FrameRS-Signature; callbacks are refused without it"
    )
    callback_allowed_hosts: str = Field(
        default="", description="Comma list of callback hosts that may resolve to private/loopback addresses"
    )
    default_callback_urls: SecretStr = Field(
        default=SecretStr(""), description="Per-tenant default callback URL: tenantA=https://...,tenantB=https://..."
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Per delivery attempt")
    webhook_ca_bundle: Path | None = Field(
        default=None, description="PEM file of extra CAs trusted for https callbacks (an internal CA)"
    )
    webhook_retry_backoff_s: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [10, 60, 300, 1800, 7200],
        description="Seconds before redelivery 1, 2, 3… (comma list; its length is the number of retries)",
    )

    # --- limits (checked before a job is queued) -----------------------------------------
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    max_duration_s: float = Field(default=3600.0, gt=0)
    max_width: int = Field(default=3840, ge=16, description="Long side limit (either orientation)")
    max_height: int = Field(default=2160, ge=16, description="Short side limit (either orientation)")
    max_frames: int = Field(default=216_000, ge=1)

    # --- defaults of the compression options ---------------------------------------------
    # The codec's defaults (framers.defaults, where the reasons are), overridable per deployment.
    # A form that sets ``keep`` but no ``selector`` asks for two-frame slots (default_slot_selector);
    # a form with none of selector/keep/stride/crf (and no ffv1 keyframes) runs the content-adaptive
    # mode at default_target_psnr (None: the fixed pattern).
    default_selector: str = codec_defaults.SELECTOR
    default_slot_selector: str = codec_defaults.SLOT_SELECTOR
    default_reconstructor: str = codec_defaults.RECONSTRUCTOR
    default_keep: int = Field(default=codec_defaults.KEEP, ge=1, le=8)
    default_stride: int = Field(default=codec_defaults.STRIDE, ge=1)
    default_target_psnr: float | None = Field(default=codec_defaults.TARGET_PSNR, ge=20, le=60)

    # --- jobs and workers ----------------------------------------------------------------
    compress_timeout_s: int = Field(default=3600, ge=1)
    reconstruct_timeout_s: int = Field(default=3600, ge=1)
    job_retries: int = Field(default=3, ge=0, description="Retries of a transient failure or a dead worker")
    retry_backoff_s: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [10, 60, 300], description="Seconds before retry 1, 2, 3… (comma list)"
    )
    job_lease_s: int = Field(
        default=60, ge=2, description="A running job whose worker has not renewed its lease for this long is re-run"
    )
    maintenance_interval_s: float = Field(default=5.0, gt=0, description="Dead-job reaping and retry promotion")
    reconcile_interval_s: float = Field(default=300.0, gt=0, description="Records vs queue reconciliation")
    result_ttl_s: int = Field(default=86_400, ge=0, description="How long RQ keeps finished job results")
    progress_interval_s: float = Field(default=1.0, ge=0, description="Minimum seconds between progress writes")
    keep_sources: bool = Field(default=False, description="Keep the uploaded source after a successful compression")
    # Issue 18: workers yield the CPU to the gateway (status and health answers stay fast while
    # jobs run) and, together, do not run more codec/ONNX threads than the machine has cores.
    worker_nice: int = Field(
        default=10, ge=0, le=19, description="CPU niceness a worker adds to its own at start (0 = same as the gateway)"
    )
    worker_threads: int = Field(
        default=0,
        ge=0,
        description="Threads per worker for ONNX Runtime, x264, FFmpeg decoders and OpenCV; "
        "0 = cores / workers under `framers serve`, the libraries' defaults otherwise",
    )
    # Issue 18, by measurement (BENCHMARKS.md §7c): two gateway processes answer GET /jobs at
    # 200 req/s with p99 4.1 ms where one gives 20.5 ms, so `framers serve` runs two where there
    # are two cores. /metrics then sums both processes (service.metrics, multiprocess mode).
    gateway_workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="uvicorn processes of the gateway under `framers serve`; unset (or 'auto') = "
        "min(2, cores). A plain `uvicorn service.main:app` (the images) runs one",
    )
    worker_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(ALL_QUEUES),
        description="Queues a worker listens on, in priority order",
    )

    @field_validator("retry_backoff_s", "webhook_retry_backoff_s", mode="before")
    @classmethod
    def _split_ints(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(v) for v in value.replace(" ", "").split(",") if v]
        return value

    @field_validator("gateway_workers", mode="before")
    @classmethod
    def _auto(cls, value: object) -> object:
        # FRAMERS_GATEWAY_WORKERS= or =auto: the default (chosen by `framers serve` from the cores).
        if isinstance(value, str) and value.strip().lower() in ("", "auto"):
            return None
        return value

    @field_validator("worker_queues", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [v for v in value.replace(" ", "").split(",") if v]
        return value

    @field_validator("retry_backoff_s", "webhook_retry_backoff_s")
    @classmethod
    def _non_negative(cls, value: list[int]) -> list[int]:
        if any(v < 0 for v in value):
            raise ValueError("retry_backoff_s must not contain negative numbers")
        return value or [0]

    @model_validator(mode="after")
    def _check(self) -> Settings:
        parse_api_keys(self.api_keys.get_secret_value())  # fail at startup, not at the first request
        _ = self.tenant_callback_urls  # parsed and checked at startup
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise SettingsError("FRAMERS_S3_BUCKET is required with FRAMERS_STORAGE_BACKEND=s3")
        if self.s3_prefix and not self.s3_prefix.endswith("/"):
            self.s3_prefix += "/"
        return self

    def replace(self, **changes: object) -> Settings:
        """A validated copy with some values changed (model_copy(update=...) skips validation)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values.update(changes)
        return type(self)(**values)

    # --- derived values ------------------------------------------------------------------
    @property
    def tenants_by_key(self) -> dict[str, str]:
        return parse_api_keys(self.api_keys.get_secret_value())

    @property
    def allowed_callback_hosts(self) -> frozenset[str]:
        """Hosts a callback may reach even on private/loopback addresses."""
        from core.webhooks import parse_allowed_hosts

        return parse_allowed_hosts(self.callback_allowed_hosts)

    @property
    def tenant_callback_urls(self) -> dict[str, str]:
        """{tenant: default callback URL} from FRAMERS_DEFAULT_CALLBACK_URLS (each URL checked)."""
        from core.webhooks import CallbackRefused, check_callback_url

        urls: dict[str, str] = {}
        for entry in self.default_callback_urls.get_secret_value().split(","):
            entry = entry.strip()
            if not entry:
                continue
            tenant, sep, url = entry.partition("=")
            tenant, url = tenant.strip(), url.strip()
            if not sep or not _TENANT_RE.match(tenant) or not url:
                raise SettingsError(f"FRAMERS_DEFAULT_CALLBACK_URLS entry for {tenant[:64]!r} is not tenant=url")
            try:
                urls[tenant] = check_callback_url(url, self.allowed_callback_hosts)
            except CallbackRefused as exc:
                raise SettingsError(f"FRAMERS_DEFAULT_CALLBACK_URLS ({tenant}): {exc}") from exc
        return urls

    @property
    def auth_enabled(self) -> bool:
        return bool(self.tenants_by_key)

    @property
    def scratch_dir(self) -> Path:
        return self.work_dir if self.work_dir is not None else self.data_dir / "work"

    @property
    def local_storage_dir(self) -> Path:
        return self.data_dir / "objects"

    def worker_env(self) -> dict[str, str]:
        """Environment that makes a child process (worker) see these same settings."""
        env = dict(os.environ)
        for name, value in self.model_dump(mode="json").items():
            key = f"FRAMERS_{name.upper()}"
            if value is None:
                env.pop(key, None)
            elif isinstance(value, list):
                env[key] = ",".join(str(v) for v in value)
            else:
                env[key] = str(value)
        # Workers never authenticate anyone: they do not get the API keys.
        env["FRAMERS_API_KEYS"] = ""
        if self.s3_secret_access_key is not None:
            env["FRAMERS_S3_SECRET_ACCESS_KEY"] = self.s3_secret_access_key.get_secret_value()
        if self.webhook_secret is not None:
            env["FRAMERS_WEBHOOK_SECRET"] = self.webhook_secret.get_secret_value()
        env["FRAMERS_DEFAULT_CALLBACK_URLS"] = self.default_callback_urls.get_secret_value()
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings read from the environment once."""
    return Settings()
