"""bench/rd.py: a smoke run on a tiny generated clip, and the pure parts (methods, BD, summary)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from framers import bdrate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rd() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_rd", ROOT / "bench" / "rd.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_rd"] = module
    spec.loader.exec_module(module)
    return module


def test_smoke_run_on_a_tiny_clip(rd: ModuleType, make_clip: Callable[..., Path], tmp_path: Path) -> None:
    clip = make_clip(width=64, height=48, frames=40)
    out = tmp_path / "rd.json"
    argv = [str(clip), "--frames", "32", "--anchor-crfs", "20,40", "--keyframe-crfs", "20,36",
            "--methods", "stride4+linear", "--json", str(out), "--md", str(tmp_path / "rd.md"),
            "--plots", str(tmp_path / "plots"), "--quiet"]
    assert rd.main(argv) == 0
    report = json.loads(out.read_text())
    (record,) = report["clips"]
    assert record["frames"] == 32 and (record["width"], record["height"]) == (64, 48)

    anchor = record["anchor"]["points"]
    assert [p["crf"] for p in anchor] == [20, 40]
    assert all("error" not in p for p in anchor)
    # higher CRF: fewer bytes, lower quality; kbps consistent with bytes over 32 frames at 25 fps
    assert anchor[0]["bytes"] > anchor[1]["bytes"] > 0
    assert anchor[0]["psnr"] > anchor[1]["psnr"] > 20.0
    assert anchor[0]["kbps"] == pytest.approx(anchor[0]["bytes"] * 8 / (32 / 25) / 1000, rel=1e-3)
    assert 0 < anchor[0]["bitstream_bytes"] - anchor[0]["bytes"] < 200  # + the SPS/PPS extradata
    assert anchor[0]["psnr_mean_mse"] <= anchor[0]["psnr"] + 1e-6  # Jensen: PSNR of mean MSE ≤ mean PSNR

    method = record["methods"]["stride4+linear"]
    points = method["points"]
    assert [p["label"] for p in points] == ["crf20", "crf36"]
    assert all("error" not in p for p in points), points
    assert all(p["kept_frames"] == 9 for p in points)  # every 4th of 32, + the last frame
    assert points[0]["bytes"] > points[1]["bytes"] > 0
    # the bundle less its coded video: the manifest and the ZIP headers (~0.5-1 kB)
    assert all(300 < p["bytes"] - p["bitstream_bytes"] < 1500 for p in points), points
    assert 15.0 < points[1]["psnr"] <= points[0]["psnr"] <= 60.0
    # two anchor points: no Bjøntegaard fit, and the report says why
    assert method["bd_rate"] is None and "at least 4" in method["bd_error"]
    summary = report["summary"]["stride4+linear"]
    assert summary["clips"] == 1 and summary["clips_with_bd"] == 0 and summary["bd_rate_median"] is None

    md = (tmp_path / "rd.md").read_text()
    assert "| stride4+linear | 0/1 |" in md and "crf36" in md
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["rd_clip_64x48_40f_25.png", "rd_summary.png"]

    # a second run with an added method keeps the clip's anchor and measures only the new method
    first_anchor = record["anchor"]
    argv2 = [a if a != "stride4+linear" else "stride4+linear,stride2+hold" for a in argv]
    assert rd.main(argv2) == 0
    (again,) = json.loads(out.read_text())["clips"]
    assert again["anchor"] == first_anchor
    assert again["methods"]["stride4+linear"]["points"] == points
    assert [p["kept_frames"] for p in again["methods"]["stride2+hold"]["points"]] == [17, 17]  # + the last
    # another frame count cannot be mixed into the same file
    assert rd.main([argv[0], "--frames", "16", *argv[3:]]) == 2


def test_parse_methods(rd: ModuleType) -> None:
    methods = rd.parse_methods("stride4,stride2+linear,adaptive", keyframe_crfs=(14, 20), targets=(30, 34.5))
    assert [m.name for m in methods] == ["stride4+framemae", "stride2+linear", "adaptive+framemae"]
    assert methods[0].points[1].kwargs == {"selector": "stride", "stride": 4, "keyframe_crf": 20}
    assert [p.label for p in methods[2].points] == ["t30", "t34.5"]
    assert methods[2].points[1].kwargs == {"target_psnr": 34.5}
    layer = rd.parse_methods("stride4:refresh0.1,stride8+linear:refresh.25", keyframe_crfs=(20,))
    assert [m.name for m in layer] == ["stride4+framemae:refresh0.1", "stride8+linear:refresh0.25"]
    assert layer[1].points[0].kwargs == {"selector": "stride", "stride": 8, "keyframe_crf": 20, "refresh": 0.25,
                                         "refresh_reconstructor": "linear"}
    for bad in ("uniform", "stride0", "stride4+nope", "stride4,stride4", "", "adaptive:refresh0.1",
                "stride4:refresh1.5", "stride4:refresh0"):
        with pytest.raises(ValueError):
            rd.parse_methods(bad)


def _points(rates: list[float], psnrs: list[float], **extra: float) -> list[dict]:
    return [{"bytes": r, "psnr": q, **extra} for r, q in zip(rates, psnrs, strict=True)]


def test_bd_and_summary_from_records(rd: ModuleType) -> None:
    psnr = [30.0, 33.0, 36.0, 39.0]
    anchor = [1000.0, 2000.0, 4000.0, 8000.0]

    def clip(factor: float) -> dict:
        return {"anchor": {"points": _points(anchor, psnr)},
                "methods": {"m": {"points": _points([r * factor for r in anchor], psnr)}}}

    clips = [clip(0.8), clip(1.5), clip(2.0)]
    for c in clips:
        rd.add_bd(c, "cubic")
    assert [c["methods"]["m"]["bd_rate"] for c in clips] == pytest.approx([-20.0, 50.0, 100.0], abs=1e-3)
    # the hull of (anchor ∪ a cheaper method) is the method itself; of a dearer one the anchor
    assert clips[0]["methods"]["m"]["bd_rate_hull_union"] == pytest.approx(-20.0, abs=1e-3)
    assert clips[2]["methods"]["m"]["bd_rate_hull_union"] == pytest.approx(0.0, abs=1e-3)
    s = rd.summarize(clips, ["m"])["m"]
    assert s["bd_rate_median"] == pytest.approx(50.0, abs=1e-3)
    assert s["bd_rate_mean"] == pytest.approx(130.0 / 3, abs=1e-3)
    assert (s["bd_rate_best"], s["bd_rate_worst"]) == pytest.approx((-20.0, 100.0), abs=1e-3)
    assert s["clips_beating_x264"] == 1 and s["clips_with_bd"] == 3
    assert s["bd_rate_median"] == pytest.approx(
        bdrate.bd_rate(anchor, psnr, [r * 1.5 for r in anchor], psnr), abs=1e-3)
    # the bitstream basis reads bitstream_bytes: here the method's container overhead was a factor 2
    for c, factor in zip(clips, (0.8, 1.5, 2.0), strict=True):
        for p in c["anchor"]["points"]:
            p["bitstream_bytes"] = p["bytes"]
        for p in c["methods"]["m"]["points"]:
            p["bitstream_bytes"] = p["bytes"] / 2
        rd.add_bd(c, "cubic", rate="bitstream")
        assert c["methods"]["m"]["bd_rate"] == pytest.approx(100 * (factor / 2 - 1), abs=1e-3)


def test_adaptive_target_share(rd: ModuleType) -> None:
    record = {"anchor": {"points": []}, "methods": {"adaptive+framemae": {"points": [
        {"bytes": 10, "psnr": 29.6, "achieved_minus_target": -0.4},
        {"bytes": 20, "psnr": 31.4, "achieved_minus_target": -0.6},
        {"bytes": 30, "psnr": 34.2, "achieved_minus_target": 0.2},
        {"label": "t36", "error": "ValueError: x"},
    ]}}}
    rd.add_bd(record)
    s = rd.summarize([record], ["adaptive+framemae"])["adaptive+framemae"]
    assert s["target_points"] == 3 and s["target_met_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["achieved_minus_target_median"] == pytest.approx(-0.4)
    assert s["point_errors"] == 1 and s["bd_rate_median"] is None


def test_adaptive_method_when_compress_takes_a_target(
    rd: ModuleType, make_clip: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a ``target_psnr`` keyword on compress (here a stand-in that maps the target to a
    kept-frame CRF), the adaptive method runs, records its targets and the hit share."""
    from framers import pipeline

    real = pipeline.compress
    calls: list[float] = []

    def compress(source: Path, bundle: Path, *, target_psnr: float | None = None, **kwargs):
        assert target_psnr is not None and not kwargs
        calls.append(target_psnr)
        return real(source, bundle, selector="stride", stride=2, keyframe_crf=int(70 - target_psnr))

    def without_target(source: Path, bundle: Path, selector: str = "uniform", keyframe_crf: int | None = None):
        return real(source, bundle, selector=selector, keyframe_crf=keyframe_crf)

    clip = make_clip(width=64, height=48, frames=40)
    monkeypatch.setattr(pipeline, "compress", without_target)  # as before issue 12 lands
    argv = [str(clip), "--frames", "16", "--anchor-crfs", "30", "--methods", "adaptive+linear",
            "--targets", "20,45", "--json", str(tmp_path / "rd.json"), "--quiet"]
    assert rd.main(argv) == 0
    (record,) = json.loads((tmp_path / "rd.json").read_text())["clips"]
    assert record["methods"]["adaptive+linear"]["skipped"].startswith("framers.pipeline.compress has no")
    assert calls == []

    monkeypatch.setattr(pipeline, "compress", compress)
    assert rd.adaptive_available()
    assert rd.main(argv) == 0  # the skipped method is measured now, the anchor is kept
    report = json.loads((tmp_path / "rd.json").read_text())
    assert calls == [20.0, 45.0]
    points = report["clips"][0]["methods"]["adaptive+linear"]["points"]
    assert [p["target_psnr"] for p in points] == [20.0, 45.0]
    for p in points:
        assert p["achieved_minus_target"] == pytest.approx(p["psnr"] - p["target_psnr"], abs=1e-3)
    # 20 dB is met on this clip, 45 dB is not
    assert points[0]["achieved_minus_target"] > 0 > points[1]["achieved_minus_target"] + 0.5
    s = report["summary"]["adaptive+linear"]
    assert s["target_points"] == 2 and s["target_met_share"] == 0.5


def test_refresh_compare_measures_the_gain_at_equal_bytes() -> None:
    """bench/refresh_compare.py: a refresh curve 1 dB above its plain curve at every rate gives a
    BD-PSNR of +1 dB; clips without the plain method are skipped."""
    spec = importlib.util.spec_from_file_location("bench_refresh_compare", ROOT / "bench" / "refresh_compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rates, psnr = [1000.0, 2000.0, 4000.0, 8000.0], [30.0, 33.0, 36.0, 39.0]

    def points(shift: float, seconds: float) -> list[dict]:
        return [{"bitstream_bytes": r, "bytes": r + 500, "psnr": q + shift, "compress_seconds": seconds}
                for r, q in zip(rates, psnr, strict=True)]

    report = {"clips": [
        {"video": "a.mp4", "methods": {"stride4+framemae": {"points": points(0.0, 1.0), "bd_rate": 10.0},
                                       "stride4+framemae:refresh0.1": {"points": points(1.0, 3.0), "bd_rate": 0.0}}},
        {"video": "b.mp4", "methods": {"stride4+framemae:refresh0.1": {"points": points(1.0, 3.0)}}},
    ]}
    rows = module.compare(report)
    assert len(rows) == 1 and rows[0]["video"] == "a.mp4" and rows[0]["compress_time_ratio"] == 3.0
    assert rows[0]["bd_psnr_db"] == pytest.approx(1.0, abs=1e-3) and rows[0]["bd_rate_pct"] < 0
    totals = module.summary(rows)
    assert totals["stride4+framemae:refresh0.1"]["clips_gaining"] == 1
    assert "+1.00" in module.to_markdown(rows, totals, "bitstream")


def test_plan_error_reads_the_first_plan_of_points_coded_again(tmp_path: Path) -> None:
    """``bench/plan_error.py --from-rd``: a point coded again is judged by its first plan and first
    coding (what the second coding corrected), one coded once by its only plan."""
    spec = importlib.util.spec_from_file_location("bench_plan_error", ROOT / "bench" / "plan_error.py")
    assert spec is not None and spec.loader is not None
    plan_error = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plan_error)
    once = {"target_psnr": 34.0, "recoded": False, "predicted_psnr": 34.5, "estimated_psnr": 34.7,
            "segments": [[0, 32, 1, 26]]}
    again = {"target_psnr": 34.0, "recoded": True, "recoded_reason": "over", "predicted_psnr": 34.4,
             "estimated_psnr": 34.3, "first_predicted": 34.4, "first_estimate": 35.6,
             "segments": [[0, 32, 1, 27]], "first_segments": [[0, 32, 4, 25]]}
    path = tmp_path / "rd.json"
    path.write_text(json.dumps({"clips": [{"video": "a.mp4", "methods": {"adaptive+framemae": {
        "points": [once, again, {"label": "fixed"}]}}}]}))
    rows = plan_error.rows_of_rd(path)
    assert [(r["predicted"], r["estimated"], r["recoded"]) for r in rows] == [(34.5, 34.7, None),
                                                                              (34.4, 35.6, "over")]
    result = plan_error.summary(rows)
    assert result["points"] == 2 and result["recoded"] == {"over": 1, "short": 0}
    assert result["estimated_minus_predicted"]["50"] == pytest.approx(0.7)
    assert result["estimated_minus_predicted_every_frame_kept"]["50"] == pytest.approx(0.2)  # the first only
