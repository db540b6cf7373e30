"""The model store without ONNX Runtime (the gateway image), typed configs, and the runtime's
one session cache and provider log line."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from framers import model_store, runtime
from framers.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "model_store"

# Importing onnxruntime fails as if it were not installed (the gateway image installs no ORT).
BLOCKER = '''
import sys


class _NoOnnxRuntime:
    def find_spec(self, name, path=None, target=None):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError(f"No module named {name!r} (test: image without ONNX Runtime)", name=name)
        return None


sys.meta_path.insert(0, _NoOnnxRuntime())
'''


def _blocked_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMERS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    env.update(extra)
    return env


def test_blocker_really_hides_onnxruntime(tmp_path: Path) -> None:
    probe = "import importlib.util, sys\ntry:\n    import onnxruntime\nexcept ImportError:\n    print('blocked')\n"
    out = subprocess.run([sys.executable, "-c", probe], env=_blocked_env(tmp_path), capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.stdout.strip() == "blocked", out.stderr


def test_gateway_without_onnxruntime_is_ready_and_lists_models(tmp_path: Path, redis_url: str) -> None:
    """The gateway's own command (docker/gateway.Dockerfile CMD) in a Python where onnxruntime
    cannot be imported, configured as deploy/config.yaml configures it (readiness reports the
    workers without requiring them): /readyz is 200 with Redis, storage and the model store ok (and
    says no worker runs here) and /models lists the store's models."""
    from service.redis_server import free_port

    port = free_port()
    env = _blocked_env(
        tmp_path,
        FRAMERS_REDIS_URL=redis_url,
        FRAMERS_DATA_DIR=str(tmp_path / "data"),
        FRAMERS_MODEL_STORE=str(STORE),
        FRAMERS_LOG_LEVEL="WARNING",
        FRAMERS_READY_REQUIRES_WORKERS="false",
    )
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the gateway did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
        models = httpx.get(f"{url}/models", timeout=10)
    finally:
        proc.terminate()
        proc.wait(15)
    checks = ready.json()["checks"]
    assert checks["models"].startswith("ok") and checks["redis"] == checks["storage"] == "ok", ready.text
    assert ready.status_code == 200 and checks["workers"].startswith("no worker serves"), ready.text
    assert models.status_code == 200, models.text
    listed = models.json()["models"]
    assert listed == model_store.latest_versions(STORE)
    assert {"framemae", "selector"} <= set(listed)


def test_gateway_image_installs_no_onnxruntime() -> None:
    """The blocked-import test above stands for the gateway image: it installs no ORT extra."""
    dockerfile = (ROOT / "docker" / "gateway.Dockerfile").read_text()
    installs = re.findall(r'pip install "?\.\[([^\]]*)\]', dockerfile)
    assert installs, "gateway.Dockerfile no longer installs the project with extras"
    pyproject = (ROOT / "pyproject.toml").read_text()
    ort_extras = set(re.findall(r'^(\w+) = \["onnxruntime', pyproject, flags=re.M))
    assert ort_extras >= {"cpu", "gpu"}
    for extras in installs:
        assert not ort_extras & {e.strip() for e in extras.split(",")}


def test_store_config_round_trips_the_shipped_configs() -> None:
    for name, version in model_store.latest_versions(STORE).items():
        folder = STORE / name / version
        raw = json.loads((folder / model_store.CONFIG_FILE).read_text())
        if "inputs" not in raw:  # the rate model: coefficients only, no ONNX file
            continue
        config = model_store.read_config(folder)
        assert config.version == version and config.name == name
        assert config.to_dict() == {"file": model_store.MODEL_FILE, "size_bytes": None, **raw}


def test_store_config_refuses_incomplete_configs(tmp_path: Path) -> None:
    (tmp_path / model_store.CONFIG_FILE).write_text(json.dumps({"name": "x", "version": "1", "sha256": "0"}))
    with pytest.raises(ModelError, match="inputs"):
        model_store.read_config(tmp_path)
    (tmp_path / model_store.CONFIG_FILE).write_text("[]")
    with pytest.raises(ModelError):
        model_store.read_config(tmp_path)


def test_runtime_logs_the_providers_it_chose(caplog: pytest.LogCaptureFixture) -> None:
    folder = model_store.model_dir("framemae", root=STORE)
    runtime.clear_cache()
    with caplog.at_level(logging.INFO, logger="framers.runtime"):
        first = runtime.load_model(folder)
        again = runtime.load_model(folder)
    assert first is again  # one cache: verified once, one session
    lines = [r.getMessage() for r in caplog.records if "execution providers" in r.getMessage()]
    assert len(lines) == 1 and "CPUExecutionProvider" in lines[0] and first.version in lines[0]


def test_codec_modules_the_gateway_imports_do_not_import_onnxruntime(tmp_path: Path) -> None:
    code = ("import sys\nimport framers.model_store, framers.registry, service.main\n"
            "from framers.registry import available_methods\n"
            "print(sorted(available_methods()['models']))\n")
    out = subprocess.run([sys.executable, "-c", code], env=_blocked_env(tmp_path, FRAMERS_MODEL_STORE=str(STORE)),
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed: Any = out.stdout.strip()
    assert "framemae" in listed and "selector" in listed
