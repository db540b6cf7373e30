"""Compression options from the upload form: defaults from settings, names checked with the codec."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from core.records import CompressOptions
from core.settings import Settings
from core.webhooks import CallbackRefused, check_callback_url
from framers import defaults as codec_defaults
from service.methods import CatalogUnavailable, MethodCatalog
from service.problems import name_few, shown_name

OPTION_FIELDS = ("selector", "keep", "stride", "reconstructor", "keyframe_codec", "crf", "target_psnr", "target_kbps",
                 "refresh", "refresh_kbps", "candidate_map")
#: form fields that are not compression options
EXTRA_FIELDS = ("callback_url", "metadata", "keep_source")
MAX_METADATA_BYTES = 4096
#: fields the content-adaptive mode (target_psnr / target_kbps) decides itself
ADAPTIVE_EXCLUSIVE = codec_defaults.FIXED_PATTERN_OPTIONS


class InvalidOptions(ValueError):
    """An option is unknown, malformed or names a method the codec does not have.

    `code` is the problem code of the answer (422); `errors` the field errors, when known."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None, code: str = "invalid_option") -> None:
        super().__init__(message)
        self.errors = errors
        self.code = code


def parse_options(fields: dict[str, str], settings: Settings, catalog: MethodCatalog) -> CompressOptions:
    """The job's options from the form's text fields (defaults from settings). Raises InvalidOptions."""
    unknown = sorted(set(fields) - set(OPTION_FIELDS))
    if unknown:
        raise InvalidOptions(
            f"unknown form field(s) {name_few(unknown)}; "
            f"fields are {', '.join(OPTION_FIELDS + EXTRA_FIELDS)}",
            [_field_error(name, "unknown form field") for name in unknown[:10]],
        )
    given = {k for k, v in fields.items() if v.strip() != "" and not (k == "refresh" and _is_zero(v))}
    if given & {"target_psnr", "target_kbps"} and given & set(ADAPTIVE_EXCLUSIVE):
        clashing = sorted(given & set(ADAPTIVE_EXCLUSIVE))
        raise InvalidOptions(
            f"target_psnr/target_kbps choose the kept frames and their CRF per segment; drop {', '.join(clashing)}",
            [_field_error(name, "a fixed-pattern option with target_psnr/target_kbps") for name in clashing],
        )
    if {"target_psnr", "target_kbps"} <= given:
        raise InvalidOptions("give target_psnr or target_kbps, not both",
                             [_field_error("target_kbps", "given with target_psnr")])
    if "refresh_kbps" in given and _is_zero(fields.get("refresh", "")):
        raise InvalidOptions("refresh=0 turns the refresh layer off and refresh_kbps asks for one; drop one of them",
                             [_field_error("refresh", "0 (off) with refresh_kbps")])
    codec = fields.get("keyframe_codec", "").strip()
    if codec not in ("", "x264") and given & {"target_psnr", "target_kbps"}:
        raise InvalidOptions(
            f"target_psnr/target_kbps code kept frames with x264 at per-shot CRFs; drop keyframe_codec={codec}",
            [_field_error("keyframe_codec", "not x264 with target_psnr/target_kbps")],
        )
    adaptive_default = (
        settings.default_target_psnr is not None
        and not given & {"target_psnr", "target_kbps"}
        and codec_defaults.adaptive_by_default(given, codec)
    )
    selector = codec_defaults.selector_for(
        fields.get("selector", "").strip(),
        "keep" in given,
        fixed=settings.default_selector,
        slots=settings.default_slot_selector,
    )
    raw: dict[str, object] = {
        "selector": selector,
        "keep": settings.default_keep,
        "stride": settings.default_stride,
        "reconstructor": settings.default_reconstructor,
    }
    if adaptive_default:
        raw["target_psnr"] = settings.default_target_psnr
    raw.update({k: v.strip() for k, v in fields.items() if v.strip() != ""})
    raw.setdefault("candidate_map", codec_defaults.CANDIDATE_MAP)
    if "refresh_kbps" in given:  # a budget alone refreshes the codec's default share: the record says which
        raw.setdefault("refresh", codec_defaults.REFRESH_SHARE)
    try:
        options = CompressOptions.model_validate(raw)
    except ValidationError as exc:
        errors = [_field_error(".".join(str(p) for p in e["loc"]), str(e["msg"])[:200]) for e in exc.errors()[:10]]
        problems = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidOptions(f"invalid options: {problems}", errors) from exc
    check_method(catalog, "selector", options.selector)
    check_method(catalog, "reconstructor", options.reconstructor)
    if options.keyframe_codec is not None:
        check_keyframe_codec(options.keyframe_codec)
    conflicts = codec_defaults.option_conflicts(
        selector=options.selector if "selector" in given else None,
        keep_given="keep" in given,
        stride_given="stride" in given,
        reconstructor=options.reconstructor,
        keyframe_codec=options.keyframe_codec,
        crf=options.crf,
        candidate_map=options.candidate_map,
    )
    if conflicts:
        raise InvalidOptions("invalid options: " + "; ".join(f"{name}: {why}" for name, why in conflicts),
                             [_field_error(name, why) for name, why in conflicts])
    return options


def parse_callback_url(raw: str, settings: Settings, tenant: str) -> str | None:
    """The callback URL of an upload: the form's `callback_url`, else the tenant's default (None:
    no events). Raises InvalidOptions (code `invalid_callback_url`) for a URL that is not http(s)
    or names a literal private/loopback/link-local/multicast address (unless allowed), and
    (code `callbacks_disabled`) when no FRAMERS_WEBHOOK_SECRET is set to sign events with."""
    url = raw.strip() or settings.tenant_callback_urls.get(tenant)
    if not url:
        return None
    if settings.webhook_secret is None:
        raise InvalidOptions(
            "callbacks are not enabled on this service (no FRAMERS_WEBHOOK_SECRET to sign them)",
            [_field_error("callback_url", "callbacks are not enabled")],
            code="callbacks_disabled",
        )
    try:
        return check_callback_url(url, settings.allowed_callback_hosts)
    except CallbackRefused as exc:
        raise InvalidOptions(
            f"callback_url refused: {exc}", [_field_error("callback_url", str(exc)[:200])], code="invalid_callback_url"
        ) from exc


def parse_metadata(raw: str) -> dict[str, Any] | None:
    """The form's `metadata`: a JSON object of at most 4 KB (None when not given). Raises
    InvalidOptions (code `invalid_metadata`)."""
    if not raw.strip():
        return None
    if len(raw.encode()) > MAX_METADATA_BYTES:
        raise InvalidOptions(
            f"metadata is larger than {MAX_METADATA_BYTES} bytes",
            [_field_error("metadata", "too large")],
            code="invalid_metadata",
        )
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidOptions(
            f"metadata is not valid JSON: {str(exc)[:100]}",
            [_field_error("metadata", "not JSON")],
            code="invalid_metadata",
        ) from exc
    if not isinstance(value, dict):
        raise InvalidOptions(
            "metadata must be a JSON object ({...})",
            [_field_error("metadata", "not an object")],
            code="invalid_metadata",
        )
    return value


def _is_zero(raw: str) -> bool:
    """Whether a numeric form value is 0 (a refresh of 0 is off, as if not given)."""
    try:
        return float(raw) == 0.0
    except ValueError:
        return False


def _field_error(name: str, message: str) -> dict[str, str]:
    return {"field": name[:64], "location": f"body.{name[:64]}", "message": message}


def check_keyframe_codec(name: str) -> None:
    """Reject a keyframe codec the codec library does not know."""
    try:
        from framers.bundle import KEYFRAME_CODECS
    except ImportError:  # an older codec: the job will report an unknown codec itself
        return
    if name not in KEYFRAME_CODECS:
        raise InvalidOptions(
            f"unknown keyframe_codec {shown_name(name)}; available: {', '.join(sorted(KEYFRAME_CODECS))}",
            [_field_error("keyframe_codec", "unknown keyframe codec")],
        )


def parse_flag(name: str, raw: str) -> bool:
    """A boolean form field: true/false, 1/0, yes/no, on/off (empty: false). Raises InvalidOptions."""
    value = raw.strip().lower()
    if value in ("", "false", "0", "no", "off"):
        return False
    if value in ("true", "1", "yes", "on"):
        return True
    raise InvalidOptions(f"{name} must be true or false", [_field_error(name, "not a boolean")])


def check_method(catalog: MethodCatalog, kind: str, name: str) -> None:
    """Reject a name the codec does not offer. If the catalog is unavailable the job will tell."""
    try:
        known = catalog.selectors() if kind == "selector" else catalog.reconstructors()
    except CatalogUnavailable:
        return
    if known and name not in known:
        raise InvalidOptions(
            f"unknown {kind} {shown_name(name)}; available: {', '.join(known)}", [_field_error(kind, f"unknown {kind}")]
        )
