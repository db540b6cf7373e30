"""bench/rd.py's numbers and reports: Bjøntegaard deltas per clip, the summary over clips, the
Markdown tables and the plots (pure functions of rd.py's JSON records)."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from framers import bdrate
from framers.adaptive.selector import ANALYSIS_TIME, TIME_BOUND
from framers.evaluate_report import round_opt

TARGET_TOLERANCE_DB = 0.5  # an adaptive point hits its target when ≥ target − this

RATE_KEYS = {"bundle": "bytes", "bitstream": "bitstream_bytes"}



def plan_time(point: dict[str, Any], frames: int) -> float:
    """An adaptive point's compression time in units of x264 medium coding every frame, counted
    as the selector counts it (issue 12's bound, ``selector.codings_fit``): ``ANALYSIS_TIME`` plus
    each coding's share of the frames kept (the first plan's from ``first_segments``, the others
    the final plan's)."""
    final = point["kept_frames"] / max(1, frames)
    first = final
    if point.get("first_segments"):
        first = sum(-(-(stop - start) // stride) for start, stop, stride, _ in point["first_segments"]) / max(1, frames)
    codings = 1 + int(bool(point.get("recoded"))) + int(point.get("brackets", 1 if point.get("bracketed") else 0))
    return ANALYSIS_TIME + min(1.0, first) + (codings - 1) * final

def _curve(points: Sequence[dict[str, Any]], rate: str = "bundle") -> tuple[list[float], list[float]]:
    key = RATE_KEYS[rate]
    ok = [p for p in points if "error" not in p and p.get("psnr") is not None and (p.get(key) or 0) > 0]
    return [float(p[key]) for p in ok], [float(p["psnr"]) for p in ok]


def add_bd(record: dict[str, Any], bd_method: str = "cubic", rate: str = "bundle") -> None:
    """Set ``bd_rate`` (%), ``bd_psnr`` (dB) and ``bd_rate_hull_union`` (%) on every method of a clip
    record, against its anchor; where undefined (< 4 points, no overlap) the value is None and
    ``bd_error`` says why. ``bd_rate_hull_union``: the upper hull of anchor ∪ method points vs the
    anchor (≤ 0 by construction up to fit error). ``rate``: "bundle" (``bytes``: x264 packets vs
    the .frs bundle file as stored, less audio) or "bitstream" (``bitstream_bytes``: no container on either side).
    Points without the chosen field (older records) are left out."""
    a_rate, a_psnr = _curve(record.get("anchor", {}).get("points", []), rate)
    for entry in record.get("methods", {}).values():
        entry.pop("bd_error", None)
        entry.pop("bd_hull_error", None)
        entry.update(bd_method=bd_method, bd_rate_basis=rate, bd_rate=None, bd_psnr=None, bd_rate_hull_union=None)
        if "skipped" in entry:
            continue
        m_rate, m_psnr = _curve(entry["points"], rate)
        try:
            entry["bd_rate"] = round_opt(bdrate.bd_rate(a_rate, a_psnr, m_rate, m_psnr, bd_method), 3)
            entry["bd_psnr"] = round_opt(bdrate.bd_psnr(a_rate, a_psnr, m_rate, m_psnr, bd_method), 4)
        except ValueError as exc:
            entry["bd_error"] = str(exc)
        try:
            all_rate, all_psnr = a_rate + m_rate, a_psnr + m_psnr
            hull = bdrate.upper_hull(all_rate, all_psnr)
            entry["bd_rate_hull_union"] = round_opt(bdrate.bd_rate(
                a_rate, a_psnr, [all_rate[i] for i in hull], [all_psnr[i] for i in hull], bd_method), 3)
        except ValueError as exc:
            entry["bd_hull_error"] = str(exc)


def summarize(clips: Sequence[dict[str, Any]], method_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method over clips: BD-rate median / mean / best / worst (%), clips beating x264 (BD-rate < 0),
    median BD-PSNR and hull-union BD-rate; for adaptive points the share with achieved PSNR
    ≥ target − 0.5 dB and the median of achieved − target."""
    summary: dict[str, dict[str, Any]] = {}
    for name in method_names:
        entries = [c["methods"][name] for c in clips if name in c.get("methods", {})]
        rates = [e["bd_rate"] for e in entries if e.get("bd_rate") is not None]
        psnrs = [e["bd_psnr"] for e in entries if e.get("bd_psnr") is not None]
        hulls = [e["bd_rate_hull_union"] for e in entries if e.get("bd_rate_hull_union") is not None]
        item: dict[str, Any] = {
            "clips": len(entries), "clips_with_bd": len(rates),
            "skipped": sum(1 for e in entries if "skipped" in e),
            "bd_rate_median": round_opt(statistics.median(rates), 3) if rates else None,
            "bd_rate_mean": round_opt(statistics.fmean(rates), 3) if rates else None,
            "bd_rate_best": round_opt(min(rates), 3) if rates else None,
            "bd_rate_worst": round_opt(max(rates), 3) if rates else None,
            "clips_beating_x264": sum(1 for r in rates if r < 0),
            "bd_psnr_median": round_opt(statistics.median(psnrs), 4) if psnrs else None,
            "bd_rate_hull_union_median": round_opt(statistics.median(hulls), 3) if hulls else None,
            "point_errors": sum(1 for e in entries for p in e["points"] if "error" in p),
        }
        deltas = [p["achieved_minus_target"] for e in entries for p in e["points"]
                  if p.get("achieved_minus_target") is not None]
        if deltas:
            item["target_points"] = len(deltas)
            item["target_met_share"] = round_opt(sum(1 for d in deltas if d >= -TARGET_TOLERANCE_DB) / len(deltas), 4)
            item["achieved_minus_target_median"] = round_opt(statistics.median(deltas), 3)
        recoded = [p["achieved_minus_target"] for e in entries for p in e["points"]
                   if p.get("recoded") and p.get("achieved_minus_target") is not None]
        item["recoded_points"] = len(recoded)
        recoded_points = [p for e in entries for p in e["points"] if p.get("recoded")]
        if recoded_points:  # why (a short or a surplus first estimate) and how often the first stayed
            item["recoded_reasons"] = {
                "short": sum(1 for p in recoded_points if p.get("recoded_reason", "short") == "short"),
                "over": sum(1 for p in recoded_points if p.get("recoded_reason") == "over"),
                "kept_first": sum(1 for p in recoded_points if p.get("kept_first")),
                "bracketed": sum(1 for p in recoded_points if p.get("bracketed")),
                "bracketed_twice": sum(1 for p in recoded_points if p.get("brackets", 0) >= 2)}
        times = [plan_time(p, int(c["frames"])) for c in clips if name in c.get("methods", {})
                 for p in c["methods"][name]["points"] if p.get("target_psnr") is not None and p.get("kept_frames")]
        if times:  # issue 12's time bound, counted by the plan (selector.ANALYSIS_TIME + codings x kept share)
            item["plan_time"] = {"points": len(times), "over_bound": sum(1 for t in times if t > TIME_BOUND + 1e-9),
                                 "median": round(statistics.median(times), 2), "max": round(max(times), 2)}
        if recoded:  # where a second coding lands against its target
            item["recoded_achieved_minus_target"] = {"min": min(recoded), "median": statistics.median(recoded),
                                                     "max": max(recoded)}
        for key in ("predicted_psnr", "estimated_psnr"):  # how well each foretold the achieved PSNR
            errors = [p["psnr"] - p[key] for e in entries for p in e["points"]
                      if p.get(key) is not None and p.get("psnr") is not None]
            if len(errors) > 1:
                item[f"{key}_error"] = {
                    "points": len(errors), "mean": round_opt(statistics.fmean(errors), 3),
                    "sd": round_opt(statistics.stdev(errors), 3),
                    "within_0_5_db": round_opt(
                        sum(1 for x in errors if abs(x) <= TARGET_TOLERANCE_DB) / len(errors), 4),
                    "short_by_over_0_5_db": sum(1 for x in errors if x < -TARGET_TOLERANCE_DB)}
        summary[name] = item
    return summary


def _fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:+.{digits}f}{suffix}" if suffix == " %" else f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def to_markdown(report: dict[str, Any]) -> str:
    """Summary table, per-clip BD-rate table, adaptive target table and every RD point."""
    settings = report["settings"]
    names = list(settings["methods"])
    clips = report["clips"]
    anchor = settings["anchor"]
    lines = [
        "# Rate–distortion against x264 (bench/rd.py)", "",
        f"{len(clips)} clips, first {settings['frames']} frames (lossless cut); anchor libx264 preset "
        f"{anchor['preset']}, CRF {', '.join(map(str, anchor['crfs']))}, 4:2:0 (4:4:4 if odd size), same RGB "
        f"frames and colour path; rate for BD: {settings.get('rate_basis', 'bundle')} (bundle: x264 packets vs "
        f"the .frs bundle file as stored, less audio; bitstream: no container on either side); PSNR: RGB, "
        f"capped at 60 dB per frame, mean over frames. BD: {settings['bd_method']} "
        f"({'VCEG-M33' if settings['bd_method'] == 'cubic' else 'JVET CTC PCHIP'}); negative = fewer bytes "
        f"than x264. framers {report['framers_version']}, {report['created']}; points measured in "
        f"{report.get('measured_seconds', 0):.0f} s (this run {report['seconds']:.0f} s).", "",
    ]
    lines += [f"Note: {n}" for n in report.get("notes", [])]
    if report.get("notes"):
        lines.append("")
    lines += ["## Summary over clips", "",
              "| method | clips | BD-rate median | mean | best | worst | beat x264 | BD-PSNR median "
              "| hull(x264 ∪ method) median | target met (±0.5 dB) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        s = report["summary"][name]
        if s["skipped"] and not s["clips_with_bd"]:
            lines.append(f"| {name} | skipped | – | – | – | – | – | – | – | – |")
            continue
        met = (f"{100 * s['target_met_share']:.0f} % of {s['target_points']}" if "target_met_share" in s else "–")
        lines.append(
            f"| {name} | {s['clips_with_bd']}/{s['clips']} | {_fmt(s['bd_rate_median'], 1, ' %')} "
            f"| {_fmt(s['bd_rate_mean'], 1, ' %')} | {_fmt(s['bd_rate_best'], 1, ' %')} "
            f"| {_fmt(s['bd_rate_worst'], 1, ' %')} | {s['clips_beating_x264']} of {s['clips_with_bd']} "
            f"| {_fmt(s['bd_psnr_median'], 2, ' dB')} | {_fmt(s['bd_rate_hull_union_median'], 1, ' %')} | {met} |")
    accuracy = [(name, key, report["summary"][name][f"{key}_error"]) for name in names
                for key in ("predicted_psnr", "estimated_psnr") if f"{key}_error" in report["summary"][name]]
    if accuracy:
        recoded = sum(report["summary"][n].get("recoded_points", 0) for n in names)
        landed = [report["summary"][n]["recoded_achieved_minus_target"] for n in names
                  if "recoded_achieved_minus_target" in report["summary"][n]]
        where = (f"; they landed {min(x['min'] for x in landed):+.2f} to {max(x['max'] for x in landed):+.2f} dB "
                 f"from their targets, median {statistics.median(x['median'] for x in landed):+.2f}" if landed else "")
        reasons = [report["summary"][n]["recoded_reasons"] for n in names if "recoded_reasons" in report["summary"][n]]
        why = (f" ({sum(r['short'] for r in reasons)} short, {sum(r['over'] for r in reasons)} over; the first "
               f"coding kept in {sum(r['kept_first'] for r in reasons)}; coded a third time, between the two, in "
               f"{sum(r.get('bracketed', 0) for r in reasons)}, a fourth time in "
               f"{sum(r.get('bracketed_twice', 0) for r in reasons)})" if reasons else "")
        lines += ["", "## Achieved PSNR against what was foretold (achieved − foretold, dB)", "",
                  "predicted: the plan's, before coding; estimated: the same plan with the kept frames' "
                  "coding error as x264 measured it while coding them and, where frames are dropped, the "
                  "interpolation error corrected by a rebuilt sample (the job's `estimated_psnr`; after a "
                  "second coding where the first fell short of the target or came out more than 1 dB over it: "
                  f"{recoded} points{why}{where}).{_time_line(report, names)}", "",
                  "| method | foretold by | points | mean | sd | within ±0.5 dB | achieved > 0.5 dB short |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {key.split('_')[0]} | {e['points']} | {e['mean']:+.2f} | {e['sd']:.2f} "
                  f"| {100 * e['within_0_5_db']:.0f} % | {e['short_by_over_0_5_db']} |" for name, key, e in accuracy]
    lines += ["", "## BD-rate per clip (BD-PSNR in brackets)", "",
              "| clip | size | frames | x264 PSNR range | " + " | ".join(names) + " |",
              "|---|---|---|---|" + "---|" * len(names)]
    for clip in clips:
        _, a_psnr = _curve(clip.get("anchor", {}).get("points", []))
        span = f"{min(a_psnr):.1f}–{max(a_psnr):.1f}" if a_psnr else "–"
        cells = []
        for name in names:
            e = clip["methods"].get(name, {})
            if "skipped" in e:
                cells.append("skipped")
            elif e.get("bd_rate") is None:
                cells.append("n/a" + (f" ({e['bd_error'][:40]}…)" if e.get("bd_error") else ""))
            else:
                psnr_delta = f"{e['bd_psnr']:+.2f} dB" if e.get("bd_psnr") is not None else "BD-PSNR n/a"
                cells.append(f"{e['bd_rate']:+.1f} % ({psnr_delta})")
        if "error" in clip and "width" not in clip:
            blanks = " | ".join("" for _ in names)
            lines.append(f"| {clip['video']} | error: {str(clip['error'])[:80]} | | | {blanks} |")
            continue
        lines.append(f"| {clip['video']} | {clip['width']}x{clip['height']} | {clip['frames']} | {span} | "
                     + " | ".join(cells) + " |")
    lines += ["", "## RD points", "", "| clip | method | point | kbps | PSNR | PSNR(MSE) | target Δ | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    for clip in clips:
        for p in clip.get("anchor", {}).get("points", []):
            lines.append(f"| {clip['video']} | x264 medium | crf{p['crf']} | " + (
                f"error: {p['error']} | | | | |" if "error" in p else
                f"{p['kbps']:.1f} | {p['psnr']:.2f} | {p['psnr_mean_mse']:.2f} | – | {p['seconds']:.1f} |"))
        for name in names:
            for p in clip["methods"].get(name, {}).get("points", []):
                delta = p.get("achieved_minus_target")
                lines.append(f"| {clip['video']} | {name} | {p['label']} | " + (
                    f"error: {p['error']} | | | | |" if "error" in p else
                    f"{p['kbps']:.1f} | {p['psnr']:.2f} | {p['psnr_mean_mse']:.2f} | "
                    f"{_fmt(delta, 2) if delta is not None else '–'} | {p['seconds']:.1f} |"))
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:80]


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """``rd_<clip>.png`` per clip (PSNR vs kbit/s on a log axis: the x264 anchor and every method,
    adaptive points labelled with their target) and ``rd_summary.png`` (BD-rate per clip and method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    names = list(report["settings"]["methods"])
    key = RATE_KEYS[report["settings"].get("rate_basis", "bundle")]

    def kbps(p: dict[str, Any]) -> float:
        """The point's rate in kbit/s on the report's rate basis."""
        return p["kbps"] * p.get(key, p["bytes"]) / p["bytes"]

    colours = plt.get_cmap("tab10")
    written: list[Path] = []
    for clip in report["clips"]:
        fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
        anchor = [p for p in clip.get("anchor", {}).get("points", []) if "error" not in p]
        if anchor:
            anchor.sort(key=kbps)
            ax.plot([kbps(p) for p in anchor], [p["psnr"] for p in anchor], "k-o", ms=4, label="x264 medium (anchor)")
        for i, name in enumerate(names):
            entry = clip["methods"].get(name, {})
            pts = sorted((p for p in entry.get("points", []) if "error" not in p), key=kbps)
            if not pts:
                continue
            bd = entry.get("bd_rate")
            label = f"{name} (BD-rate {bd:+.1f} %)" if bd is not None else name
            ax.plot([kbps(p) for p in pts], [p["psnr"] for p in pts], "-s", ms=4, color=colours(i + 1), label=label)
            for p in pts:
                if "target_psnr" in p:
                    ax.annotate(f"{p['target_psnr']:g}", (kbps(p), p["psnr"]), fontsize=7,
                                xytext=(3, -8), textcoords="offset points", color=colours(i + 1))
        ax.set_xscale("log")
        ax.set_xlabel(f"rate (kbit/s, {report['settings'].get('rate_basis', 'bundle')} bytes, log scale)")
        ax.set_ylabel("PSNR (dB, RGB, mean over frames)")
        ax.set_title(f"{clip['video']} ({clip.get('width')}x{clip.get('height')}, {clip.get('frames')} frames)",
                     fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / f"rd_{_slug(clip['video'])}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    # summary: BD-rate per clip, grouped by method
    clips = report["clips"]
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(clips) * max(1, len(names)) + 2), 5), dpi=110)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [c["methods"].get(name, {}).get("bd_rate") for c in clips]
        xs = [k + (i - (len(names) - 1) / 2) * width for k in range(len(clips))]
        ax.bar([x for x, v in zip(xs, values, strict=True) if v is not None], [v for v in values if v is not None],
               width=width, color=colours(i + 1), label=f"{name} (median "
               f"{_fmt(report['summary'][name]['bd_rate_median'], 1, ' %')})")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(range(len(clips)))
    ax.set_xticklabels([_slug(c["video"])[:28] for c in clips], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("BD-rate vs x264 medium (%)")
    ax.set_title(f"Bjøntegaard delta rate per clip ({report['settings']['bd_method']}; below 0: fewer bytes "
                 f"than x264 at equal PSNR)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = folder / "rd_summary.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written


def _time_line(report: dict[str, Any], names: Sequence[str]) -> str:
    """Issue 12's time bound counted by the plan (``plan_time``), for the accuracy section."""
    counts = [report["summary"][n]["plan_time"] for n in names if "plan_time" in report["summary"][n]]
    if not counts:
        return ""
    over, points = sum(c["over_bound"] for c in counts), sum(c["points"] for c in counts)
    return (f" Time by the plan's count (analysis {ANALYSIS_TIME:g} + each coding's kept share, in x264 medium's "
            f"time for every frame): {over} of {points} points over the {TIME_BOUND:g}× bound, median "
            f"{statistics.median(c['median'] for c in counts):.2f}×, most {max(c['max'] for c in counts):.2f}×.")
