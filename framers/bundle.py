"""The keyframe bundle, format v2 (v1 still read; see docs/BUNDLE_FORMAT.md).

A bundle is a folder (or the same files in one ZIP file, ``*.frs``; tar in bundles written before
the ZIP container, still read) holding:
  manifest.json   format version, source metadata, clip layout, kept frames per clip,
                  timestamps, scene cuts, per-segment decisions (adaptive mode), keyframe codec
                  and settings, model versions, file checksums
  keyframes.h264  (v2, x264) the kept frames, in order, as H.264 Annex B: one or more x264 runs
                  concatenated, each starting with its own headers and IDR picture, so runs may
                  use different CRFs (``keyframes.runs``)
  keyframes.mkv   (v1, and ffv1 in v2) the kept frames as one Matroska video stream
  audio.m4a       the source's first audio stream as AAC (only when the source had audio)
  refresh.h264    (v4, ``compress --refresh``) one x264 picture per dropped frame: the residual
                  of its worst blocks against the rebuilt frame (``framers.refresh``)
  candidate_map.bin (v7, ``compress --candidate-map``) per block of each dropped frame, framemae's
                  mix or one of its candidates alone (``framers.candidate_map``)
"""

from __future__ import annotations

import itertools
import json
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from framers import defaults
from framers.errors import BundleError
from framers.hashing import sha256_file

FORMAT_NAME = "framers-bundle"
FORMAT_VERSION = 7
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7)
MANIFEST = "manifest.json"
KEYFRAMES = "keyframes.mkv"
KEYFRAMES_H264 = "keyframes.h264"
AUDIO = "audio.m4a"
REFRESH = "refresh.h264"
#: v5: the refresh layer's block map (``framers.refresh_map.BlockMapWriter``; range-coded in v6)
REFRESH_MAP = "refresh_map.bin"
#: v7: the candidate map (``framers.candidate_map``): per block of each dropped frame, framemae's
#: mix or one of its candidates
CANDIDATE_MAP = "candidate_map.bin"
SINGLE_FILE_SUFFIX = ".frs"
BUNDLE_FILES = (MANIFEST, KEYFRAMES_H264, KEYFRAMES, AUDIO, REFRESH, REFRESH_MAP, CANDIDATE_MAP)

# Keyframe codecs. x264: 4:2:0 whenever the output is 4:2:0 (even width and height; 4:4:4
# otherwise), CRF 20 by default, preset medium. Measured (docs/DESIGN.md, 11 real clips): 4:2:0 kept
# frames need 6 % fewer bytes than 4:4:4 at equal PSNR of the rebuilt video (BD-rate vs x264
# +46 % instead of +55 %), as the output is 4:2:0 anyway. Preset medium is x264's default and the
# anchor users compare with: a segment that keeps every frame must cost what x264 costs; kept
# frames are a fraction of all frames, so the slower preset costs little compression time.
KEYFRAME_CODECS: dict[str, dict[str, Any]] = {
    "x264": {"codec": "libx264", "pix_fmt": "auto", "crf": defaults.KEYFRAME_CRF, "preset": "medium"},
    "ffv1": {"codec": "ffv1", "pix_fmt": "bgr0", "crf": None, "preset": None},
}
DEFAULT_KEYFRAME_CODEC = defaults.KEYFRAME_CODEC


def _rounded_steps(start: int, step: Fraction, count: int) -> list[int]:
    """start + i·step rounded to the nearest integer (halves up), i = 0..count-1: how a muxer
    rescales a constant frame rate into a time base it does not divide (av_rescale_q)."""
    num, den = step.numerator, step.denominator
    return [start + (2 * i * num + den) // (2 * den) for i in range(count)]


def encode_timestamps(pts: list[int], frame_step: Fraction | None = None) -> dict[str, Any]:
    """Timestamps of the frames (in the time base) in the smallest form that reproduces them:
    constant rate as ``{"start", "step", "count"}``; a constant rate the time base does not
    divide (30 fps in Matroska's 1/1000 s: 0, 33, 67, 100, ...) as ``"step": [num, den]``, the
    exact frame duration ``frame_step`` (time-base units) rounded per frame (format v3: a v2
    reader would refuse it); anything else as the full list ``{"pts": [...]}``."""
    if len(pts) >= 2:
        step = pts[1] - pts[0]
        if all(b - a == step for a, b in itertools.pairwise(pts)):
            return {"start": pts[0], "step": step, "count": len(pts)}
        if frame_step is not None and frame_step > 0 and _rounded_steps(pts[0], frame_step, len(pts)) == pts:
            return {"start": pts[0], "step": [frame_step.numerator, frame_step.denominator], "count": len(pts)}
    return {"pts": pts}


def decode_timestamps(entry: dict[str, Any]) -> list[int]:
    """The per-frame timestamps of an ``encode_timestamps`` entry. Raises BundleError on a
    malformed one."""
    if "pts" in entry:
        return [int(p) for p in entry["pts"]]
    start, step, count = int(entry["start"]), entry["step"], int(entry["count"])
    if isinstance(step, list):
        num, den = (int(v) for v in step)
        if num <= 0 or den <= 0:
            raise BundleError(f"malformed timestamp step {step!r}")
        return _rounded_steps(start, Fraction(num, den), count)
    return [start + i * int(step) for i in range(count)]


def frame_step_of(fps: float, time_base: Fraction) -> Fraction | None:
    """The exact duration of one frame in time-base units for a nominal ``fps`` (29.97 is taken
    as 30000/1001), or None for a rate that is not positive."""
    if fps <= 0:
        return None
    rate = Fraction(fps).limit_denominator(1001)
    ntsc = Fraction(round(fps * 1.001) * 1000, 1001)  # 23.976, 29.97, 59.94 (as rounded in a manifest)
    if abs(float(ntsc) - fps) < 0.005:
        rate = ntsc
    return 1 / (rate * time_base)


def encode_runs(indices: list[int]) -> list[list[int]]:
    """Sorted frame indices as arithmetic runs [start, step, count] (greedy, longest first run):
    every 4th frame of a long video is one run, where the per-clip lists of v1 grow with it."""
    runs: list[list[int]] = []
    i = 0
    while i < len(indices):
        if i + 1 == len(indices):
            runs.append([indices[i], 1, 1])
            break
        step = indices[i + 1] - indices[i]
        j = i + 1
        while j + 1 < len(indices) and indices[j + 1] - indices[j] == step:
            j += 1
        runs.append([indices[i], step, j - i + 1])
        i = j + 1
    return runs


def decode_runs(runs: list[list[int]]) -> list[int]:
    """Frame indices of ``encode_runs`` output. Raises BundleError on a malformed run."""
    out: list[int] = []
    for run in runs:
        start, step, count = (int(x) for x in run)
        if count < 1 or (count > 1 and step < 1):
            raise BundleError(f"malformed kept-frame run {run}")
        out.extend(start + k * step for k in range(count))
    return out


def per_clip(indices: list[int], n_frames: int, clip_len: int) -> list[list[int]]:
    """Kept frame indices → per clip, positions inside the clip (the Manifest's ``kept``)."""
    clips: list[list[int]] = [[] for _ in range(-(-n_frames // clip_len))]
    for i in indices:
        if not 0 <= i < n_frames:
            raise BundleError(f"kept frame {i} outside the video's {n_frames} frames")
        clips[i // clip_len].append(i % clip_len)
    return clips


def without_empty(value: Any, *, drop_false: bool = False) -> Any:
    """``value`` with every dict entry whose value is None, ``[]`` or ``{}`` left out (and
    ``False`` in the ``source`` dict), recursively through dicts; lists are kept as they are.

    Readers take an absent key as that empty value (``Manifest.from_json`` and every reader of
    ``source`` use ``.get``), so the manifest says only what is there: ~120 of its ~700 deflated
    bytes, 1-2 % of a low-rate 96-frame bundle (``bench/rd.py``'s bundle basis)."""
    if not isinstance(value, dict):
        return value
    kept: dict[str, Any] = {}
    for key, item in value.items():
        item = without_empty(item, drop_false=drop_false or key == "source")
        if item is None or item == [] or item == {} or (drop_false and item is False):
            continue
        kept[key] = item
    return kept


@dataclass
class Manifest:
    source: dict[str, Any]
    clip_len: int
    slot_len: int
    n_frames: int
    kept: list[list[int]]  # per clip, positions of kept frames inside the clip
    time_base: Fraction
    pts: list[int]
    fps: float
    keyframes: dict[str, Any]
    selection: dict[str, Any]
    audio: dict[str, Any] | None = None
    models: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: v2: frames that start a new shot (scene cuts found by the encoder; [] in v1 bundles)
    cuts: list[int] = field(default_factory=list)
    #: v2: the adaptive mode's per-segment decisions (start, stop, stride, crf, predictions) and
    #: its target; None for fixed keep patterns
    adaptive: dict[str, Any] | None = None
    #: v4: the refresh layer (file, share, block, crf, reconstructor and its model version,
    #: pictures, blocks); None without one
    refresh: dict[str, Any] | None = None
    #: v7: the candidate map (file, reconstructor and its model version, cell, rows, cols, maps,
    #: mixed, switched, bytes); None without one
    candidate_map: dict[str, Any] | None = None

    def kept_indices(self) -> list[int]:
        return [c * self.clip_len + p for c, positions in enumerate(self.kept) for p in positions]

    def duration_seconds(self) -> float:
        """Seconds the video plays: from the first frame's pts to the end of the last frame (the
        source's ``end_pts`` when known, else one nominal frame after the last pts); ``n_frames /
        fps`` without timestamps. A held frame of a variable-rate video counts as long as it shows."""
        step = 1.0 / self.fps if self.fps > 0 else 0.04
        if not self.pts:
            return self.n_frames * step
        end = self.source.get("end_pts")
        last = float((int(end) - self.pts[0]) * self.time_base) if end is not None and int(end) > self.pts[-1] \
            else float((self.pts[-1] - self.pts[0]) * self.time_base) + step
        return max(last, step)

    def to_json(self) -> dict[str, Any]:
        timestamps = encode_timestamps(self.pts, frame_step_of(self.fps, self.time_base))
        return without_empty({
            "format": FORMAT_NAME,
            # the lowest version that reads it: a candidate map needs v7, a range-coded block map
            # v6, a block map v5, a refresh layer v4, rounded-rate timestamps v3
            "version": 7 if self.candidate_map else 6 if self.refresh and self.refresh.get("map_coding")
            else 5 if self.refresh and self.refresh.get("map") else 4 if self.refresh
            else 3 if isinstance(timestamps.get("step"), list) else 2,
            "source": self.source,
            "layout": {"clip_len": self.clip_len, "slot_len": self.slot_len, "n_frames": self.n_frames},
            "selection": {**self.selection, "kept_runs": encode_runs(self.kept_indices())},
            "timing": {
                "time_base": [self.time_base.numerator, self.time_base.denominator],
                "fps": self.fps,
                "timestamps": timestamps,
            },
            "keyframes": self.keyframes,
            "audio": self.audio,
            "models": self.models,
            "files": self.files,
            "scenes": {"cuts": self.cuts},
            "adaptive": self.adaptive,
            "refresh": self.refresh,
            "candidate_map": self.candidate_map,
        })

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT_NAME:
            raise BundleError("not a FrameRS bundle (manifest format field missing or wrong)")
        if data.get("version") not in READABLE_VERSIONS:
            raise BundleError(
                f"bundle format version {data.get('version')} is not supported (readable: {READABLE_VERSIONS})"
            )
        try:
            selection = dict(data["selection"])
            layout = data["layout"]
            if "kept_runs" in selection:  # v2
                kept = per_clip(decode_runs(selection.pop("kept_runs")), int(layout["n_frames"]),
                                int(layout["clip_len"]))
            else:  # v1: per clip, positions inside the clip
                kept = [[int(p) for p in clip] for clip in selection.pop("kept")]
            timing = data["timing"]
            num, den = timing["time_base"]
            manifest = cls(
                source=data["source"],
                clip_len=int(data["layout"]["clip_len"]),
                slot_len=int(data["layout"]["slot_len"]),
                n_frames=int(data["layout"]["n_frames"]),
                kept=kept,
                time_base=Fraction(int(num), int(den)),
                pts=decode_timestamps(timing["timestamps"]),
                fps=float(timing["fps"]),
                keyframes=data["keyframes"],
                selection=selection,
                audio=data.get("audio"),
                models=dict(data.get("models") or {}),
                files=dict(data.get("files") or {}),
                cuts=[int(c) for c in (data.get("scenes") or {}).get("cuts", [])],
                adaptive=data.get("adaptive"),
                refresh=data.get("refresh"),
                candidate_map=data.get("candidate_map"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed bundle manifest: {exc!r}") from exc
        if len(manifest.pts) != manifest.n_frames:
            raise BundleError("manifest timestamps do not match the frame count")
        if len(manifest.kept) != -(-manifest.n_frames // manifest.clip_len):
            raise BundleError("manifest clip list does not match the frame count")
        return manifest


def keyframes_path(folder: Path, manifest: Manifest) -> Path:
    """The keyframe file of an opened bundle (v1: keyframes.mkv; v2: as its settings say)."""
    name = str(manifest.keyframes.get("file", KEYFRAMES))
    if name not in (KEYFRAMES, KEYFRAMES_H264):
        raise BundleError(f"unknown keyframe file {name!r} in manifest")
    return Path(folder) / name


def write_manifest(folder: Path, manifest: Manifest) -> None:
    manifest.files = {}
    for name in BUNDLE_FILES[1:]:
        path = folder / name
        if path.exists():
            manifest.files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    (folder / MANIFEST).write_text(json.dumps(manifest.to_json(), separators=(",", ":")))


def read_manifest(folder: Path, verify: bool = True) -> Manifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder}: no {MANIFEST}; not a bundle")
    try:
        manifest = Manifest.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a damaged or overwritten manifest (binary)
        raise BundleError(f"manifest is not valid JSON: {exc}") from exc
    if verify:
        for name, entry in manifest.files.items():
            file = folder / name
            if not file.is_file():
                raise BundleError(f"bundle file {name} is missing")
            if "bytes" in entry and file.stat().st_size != int(entry["bytes"]):
                raise BundleError(f"bundle file {name} has {file.stat().st_size} bytes, the manifest says "
                                  f"{entry['bytes']} (truncated or altered)")
            # a .frs stores no sha256: its members' CRC-32 was checked when they were extracted
            if "sha256" in entry and sha256_file(file) != entry["sha256"]:
                raise BundleError(f"bundle file {name} fails its checksum (corrupt or altered)")
    return manifest


def bundle_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


ZIP_MAGIC = b"PK\x03\x04"


def is_zip_bundle(path: Path) -> bool:
    """True when the file starts like a ZIP archive (the .frs container; tar before it): a
    truncated ZIP still does, so its error can say "truncated" rather than "not a bundle"."""
    with open(path, "rb") as handle:
        return handle.read(4) == ZIP_MAGIC


def holds_bundle(path: Path) -> bool:
    """True for a bundle in either form: a folder holding a manifest, or a ZIP archive (a .frs,
    whatever its name) whose members include one. What a video reader must refuse: FFmpeg reads
    the H.264 stream inside a .frs and would make a video of it without its audio."""
    path = Path(path)
    if path.is_dir():
        return (path / MANIFEST).is_file()
    if not (path.is_file() and is_zip_bundle(path)):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return MANIFEST in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


#: deflate level of the manifest inside a .frs (JSON halves; the video streams are stored as is)
MANIFEST_DEFLATE_LEVEL = 9


def pack(folder: Path, dest: Path) -> None:
    """Write the single-file form: a ZIP archive, manifest first, the manifest deflated and the
    coded streams stored (already entropy-coded; deflate would only cost time).

    ZIP rather than tar: ~100 bytes of headers per member against tar's 512-byte header and
    padding to 512 bytes, and the manifest's JSON deflated (~1.3 kB → ~0.6 kB). For a short clip
    at a low rate (10 kB of kept frames) the container and manifest are a visible share of the
    rate. Zip64 extensions are used only where a member passes 4 GiB."""
    with zipfile.ZipFile(dest, "w") as archive:
        for name in BUNDLE_FILES:
            path = folder / name
            if not path.exists():
                continue
            if name == MANIFEST:
                archive.writestr(name, zip_manifest(path.read_text()), compress_type=zipfile.ZIP_DEFLATED,
                                 compresslevel=MANIFEST_DEFLATE_LEVEL)
            else:
                archive.write(path, arcname=name, compress_type=zipfile.ZIP_STORED)


def zip_manifest(text: str) -> str:
    """The manifest as a .frs stores it: without the members' sha256 (their sizes stay). Inside the
    ZIP each member carries a CRC-32 that extraction checks (a flipped byte is refused as
    "damaged"); the sha256 repeated that check for ~45 deflated bytes (0.5 % of a 64-frame bundle
    at 28 dB), and neither is tamper-proof in an unsigned file. Folder bundles keep the sha256."""
    doc = json.loads(text)
    for entry in (doc.get("files") or {}).values():
        entry.pop("sha256", None)
    return json.dumps(doc, separators=(",", ":"))


def stored_sizes(path: Path) -> dict[str, int]:
    """Bytes each member of a .frs file occupies as stored (ZIP: compressed size plus its local
    and central headers; tar: 512-byte header plus the data padded to 512 bytes). Raises
    BundleError when the file is not a bundle."""
    path = Path(path)
    try:
        if is_zip_bundle(path):
            with zipfile.ZipFile(path) as archive:
                return {i.filename: i.compress_size + 30 + 46 + 2 * len(i.filename.encode()) + len(i.extra)
                        for i in archive.infolist()}
        with tarfile.open(path, "r") as tar:
            return {m.name: 512 + -(-m.size // 512) * 512 for m in tar.getmembers()}
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{path.name}: the bundle file is truncated or damaged ({exc})") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(bundle_read_error(path.name, exc)) from exc


#: a manifest is a few kB; a deflated member beyond this is not one of ours (and no ZIP bomb)
MAX_MANIFEST_BYTES = 16 << 20


def _check_member(name: str, is_file: bool) -> None:
    if name not in BUNDLE_FILES or not is_file:
        raise BundleError(f"unexpected entry {name!r} in bundle file")


def _check_zip_member(info: zipfile.ZipInfo) -> None:
    _check_member(info.filename, not info.is_dir())
    deflated = info.compress_type != zipfile.ZIP_STORED
    if deflated and (info.filename != MANIFEST or info.file_size > MAX_MANIFEST_BYTES):
        raise BundleError(f"unexpected compressed entry {info.filename!r} in bundle file")


def unpack(file: Path, folder: Path) -> None:
    """Extract a .frs file (ZIP, or tar from before the ZIP container) into ``folder``. Only the
    bundle's own file names are accepted. Raises BundleError for anything else, a truncated or
    damaged file (ZIP members are CRC-checked on the way out)."""
    try:
        if is_zip_bundle(file):
            with zipfile.ZipFile(file) as archive:
                for info in archive.infolist():
                    _check_zip_member(info)
                    with archive.open(info) as member_data, open(folder / info.filename, "wb") as out:
                        shutil.copyfileobj(member_data, out)
            return
        with tarfile.open(file, "r") as tar:
            for member in tar.getmembers():
                _check_member(member.name, member.isfile())
                source = tar.extractfile(member)
                assert source is not None
                with source, open(folder / member.name, "wb") as out:
                    shutil.copyfileobj(source, out)
    except zipfile.BadZipFile as exc:  # starts as a ZIP, so damaged rather than something else
        raise BundleError(f"{Path(file).name}: the bundle file is truncated or damaged ({exc})") from exc
    except (tarfile.TarError, EOFError) as exc:
        # One line for people, not tarfile's list of tried compressions.
        raise BundleError(bundle_read_error(Path(file).name, exc)) from exc


def bundle_read_error(name: str, exc: BaseException) -> str:
    """A one-line reason why a .frs file could not be unpacked."""
    text = str(exc).lower()
    if "truncated" in text or "unexpected end" in text or isinstance(exc, EOFError):
        return f"{name}: the bundle file is truncated or damaged"
    return f"{name}: not a FrameRS bundle (.frs file or bundle folder expected)"


@contextmanager
def open_bundle(path: Path) -> Iterator[Path]:
    """Yield a folder holding the bundle's files, unpacking the single-file form if needed."""
    path = Path(path)
    if path.is_dir():
        yield path
    elif path.is_file():
        with tempfile.TemporaryDirectory(prefix="framers-bundle-") as tmp:
            unpack(path, Path(tmp))
            yield Path(tmp)
    else:
        raise BundleError(f"{path}: no such bundle")
