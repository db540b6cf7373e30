"""What ``framers evaluate`` measures: the methods (``SELECTOR+RECONSTRUCTOR``), the videos of
the given paths, the options, and the settings a resumed report must share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framers import bundle as fb
from framers import defaults
from framers.errors import UnsupportedOptionError
from framers.evaluate_report import read_report
from framers.metrics import PSNR_CAP
from framers.registry import RECONSTRUCTORS, SELECTORS

DEFAULT_METHODS = "uniform+hold,uniform+linear,oracle+linear,stride+linear,stride+mci"


VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".264", ".h264", ".265", ".hevc", ".y4m",
     ".mpg", ".mpeg", ".ts", ".flv", ".ogv", ".wmv", ".3gp"}
)


@dataclass(frozen=True)
class Method:
    selector: str
    reconstructor: str

    @property
    def name(self) -> str:
        return f"{self.selector}+{self.reconstructor}"

    @property
    def bundle_key(self) -> tuple[str, str]:
        """Methods with equal keys keep the same frames: only the oracle depends on the reconstructor."""
        return (self.selector, self.reconstructor if self.selector == "oracle" else "")


def parse_methods(text: str) -> list[Method]:
    methods: list[Method] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        selector, plus, reconstructor = item.partition("+")
        if not plus or selector not in SELECTORS or reconstructor not in RECONSTRUCTORS:
            raise UnsupportedOptionError(
                f"method {item!r} is not SELECTOR+RECONSTRUCTOR with a selector in {', '.join(SELECTORS)} "
                f"and a reconstructor in {', '.join(RECONSTRUCTORS)}"
            )
        method = Method(selector, reconstructor)
        if method not in methods:
            methods.append(method)
    if not methods:
        raise UnsupportedOptionError("no methods given")
    return methods


def find_videos(paths: Sequence[Path]) -> list[Path]:
    """Files as given; folders contribute their video files (by suffix), sorted by name."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


@dataclass
class Options:
    """Options of one ``framers evaluate`` run (the CLI's flags)."""

    methods: list[Method]
    keyframe_codec: str = fb.DEFAULT_KEYFRAME_CODEC
    max_frames: int | None = None
    keep: int = defaults.KEEP
    stride: int = defaults.STRIDE
    h264_reference: bool = True
    structural: bool = True  # SSIM and MS-SSIM
    progress: bool = True
    candidate_map: bool = False  # bundles with a candidate map (``compress(candidate_map=True)``)


def settings_of(options: Options) -> dict[str, Any]:
    """Everything that changes the numbers (a resumed run must match it)."""
    return {
        "methods": [m.name for m in options.methods],
        "keyframe_codec": options.keyframe_codec,
        "max_frames": options.max_frames,
        "keep": options.keep,
        "stride": options.stride,
        "h264_reference": options.h264_reference,
        "ssim": options.structural,
        "psnr_cap_db": PSNR_CAP,
        # only when asked: reports written before the option resume as they were
        **({"candidate_map": True} if options.candidate_map else {}),
    }


def resumable(path: Path, options: Options) -> dict[str, dict[str, Any]]:
    """Video records of an earlier report at ``path`` with the same settings, by video path.

    Videos that failed as a whole are not carried over (they are tried again).
    """
    old = read_report(path)
    if old is None:
        return {}
    if old.get("settings") != settings_of(options):
        raise UnsupportedOptionError(f"{path} was made with other settings ({old.get('settings')}); cannot resume it")
    return {v["path"]: v for v in old.get("videos", []) if "error" not in v}
