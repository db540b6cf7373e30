"""bench/recon_gap.py: a new FrameMAE's report set beside the classical methods of earlier ones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_recon_gap", ROOT / "bench" / "recon_gap.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(stride: int, psnr: dict[str, dict[str, float]]) -> dict:
    return {"settings": {"stride": stride},
            "videos": [{"video": v, "frames": 64, "methods": {m: {"psnr": p} for m, p in methods.items()}}
                       for v, methods in psnr.items()]}


def test_framemae_is_replaced_by_stride_and_missing_videos_drop_out(gap: ModuleType, tmp_path: Path) -> None:
    base4 = _report(4, {"a": {"stride+linear": 30.0, "stride+mci": 31.0, "stride+framemae": 31.2},
                        "b": {"stride+linear": 20.0, "stride+mci": 22.0, "stride+framemae": 22.1}})
    base8 = _report(8, {"a": {"stride+linear": 26.0, "stride+mci": 27.0, "stride+framemae": 27.1}})
    new4 = _report(4, {"a": {"stride+framemae": 32.5}})  # b failed in the new run
    new8 = _report(8, {"a": {"stride+framemae": 28.0}})
    table4 = gap.gap_table(gap.with_framemae_of(base4, [new8, new4]))
    assert table4["videos"] == 1 and table4["rows"][0]["vs_mci"] == pytest.approx(1.5)
    table8 = gap.gap_table(gap.with_framemae_of(base8, [new4, new8]))
    assert table8["rows"][0]["vs_linear"] == pytest.approx(2.0)
    assert gap.with_framemae_of(base4, []) is base4
    paths = []
    for name, report in (("b4", base4), ("b8", base8), ("n4", new4), ("n8", new8)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(report))
    md = tmp_path / "gap.md"
    assert gap.main([str(paths[0]), str(paths[1]), "--framemae", str(paths[2]), str(paths[3]), "--md", str(md)]) == 0
    text = md.read_text()
    assert "| b4 | 4 | 1 | 30.00 | 31.00 | 32.50 | +1.50 |" in text
    assert "| b8 | 8 | 1 | 26.00 | 27.00 | 28.00 | +1.00 |" in text
