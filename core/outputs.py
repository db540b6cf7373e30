"""Output options of a reconstruction: video codec, container and quality (CRF).

One reconstruction of a video is named by its *variant*: the reconstructor alone for the default
output (H.264 in mp4 at CRF 18, the names every earlier version used), otherwise
`<reconstructor>-<codec>-crf<N>-<container>` (e.g. `framemae-vp9-crf32-webm`). The variant is the
key of the output object, the state record and the RQ job, so different options are different
cached outputs, and equal options (however they were spelled) are the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.records import is_method_name

CODECS = ("h264", "vp9", "av1")
CONTAINERS = ("mp4", "webm")
#: which container holds which codec (H.264 in WebM is not allowed by the format)
ALLOWED = {("h264", "mp4"), ("av1", "mp4"), ("vp9", "webm"), ("av1", "webm")}
DEFAULT_CONTAINER = {"h264": "mp4", "vp9": "webm", "av1": "mp4"}
#: CRF ranges of the encoders (libx264 0-51, libvpx-vp9 0-63, libsvtav1 1-63)
CRF_RANGE = {"h264": (0, 51), "vp9": (0, 63), "av1": (1, 63)}
#: quality presets per codec (about equal visual quality across codecs)
QUALITY = {
    "high": {"h264": 18, "vp9": 24, "av1": 27},
    "medium": {"h264": 23, "vp9": 32, "av1": 35},
    "low": {"h264": 28, "vp9": 40, "av1": 45},
}
DEFAULT_QUALITY = "high"
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm"}


class InvalidOutput(ValueError):
    """Output options that do not go together (e.g. H.264 in WebM, a CRF out of range)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class OutputSpec:
    """What a reconstruction is written as: `codec` (h264, vp9, av1), `container` (mp4, webm),
    `crf` (the encoder's constant rate factor: lower = better and larger)."""

    codec: str = "h264"
    container: str = "mp4"
    crf: int = QUALITY[DEFAULT_QUALITY]["h264"]

    @property
    def is_default(self) -> bool:
        return self == OutputSpec()

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.container]

    def variant(self, reconstructor: str) -> str:
        """The name of the reconstruction with these options (see the module doc)."""
        if not is_method_name(reconstructor):
            raise ValueError(f"invalid reconstructor name {reconstructor!r}")
        if self.is_default:
            return reconstructor
        return f"{reconstructor}-{self.codec}-crf{self.crf}-{self.container}"


def output_spec(
    codec: str | None = None, container: str | None = None, crf: int | None = None, quality: str | None = None
) -> OutputSpec:
    """Resolve request options into an OutputSpec; raises InvalidOutput naming the bad field.

    Defaults: codec h264 (or the one that fits `container`: vp9 for webm), the container that fits
    the codec, the CRF of `quality` (default "high"); `crf` and `quality` are exclusive."""
    if codec is not None and codec not in CODECS:
        raise InvalidOutput(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}", "codec")
    if container is not None and container not in CONTAINERS:
        raise InvalidOutput(f"unknown container {container!r}; choose one of {', '.join(CONTAINERS)}", "container")
    if quality is not None and quality not in QUALITY:
        raise InvalidOutput(f"unknown quality {quality!r}; choose one of {', '.join(QUALITY)}", "quality")
    if crf is not None and quality is not None:
        raise InvalidOutput("give either crf or quality, not both", "crf")
    if codec is None:
        codec = "vp9" if container == "webm" else "h264"
    container = container or DEFAULT_CONTAINER[codec]
    if (codec, container) not in ALLOWED:
        raise InvalidOutput(f"{codec} cannot be stored in {container}", "container")
    if crf is None:
        crf = QUALITY[quality or DEFAULT_QUALITY][codec]
    low, high = CRF_RANGE[codec]
    if not low <= crf <= high:
        raise InvalidOutput(f"crf {crf} is out of range for {codec} ({low}-{high})", "crf")
    return OutputSpec(codec=codec, container=container, crf=int(crf))


def parse_variant(variant: str) -> tuple[str, OutputSpec]:
    """(reconstructor, output options) of a variant name; raises ValueError for a malformed one."""
    name, sep, rest = variant.partition("-")
    if not is_method_name(name):
        raise ValueError(f"invalid reconstruction name {variant!r}")
    if not sep:
        return name, OutputSpec()
    parts = rest.split("-")
    if len(parts) != 3 or not parts[1].startswith("crf") or not parts[1][3:].isdigit():
        raise ValueError(f"invalid reconstruction name {variant!r}")
    try:
        spec = output_spec(parts[0], parts[2], int(parts[1][3:]))
    except InvalidOutput as exc:
        raise ValueError(f"invalid reconstruction name {variant!r}: {exc}") from exc
    if spec.variant(name) != variant:  # one spelling per output (e.g. no "-h264-crf18-mp4")
        raise ValueError(f"invalid reconstruction name {variant!r}; it is called {spec.variant(name)!r}")
    return name, spec
