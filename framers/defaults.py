"""The codec's default options: one registry read by the CLI, the service's settings, the
pipeline and training (no imports beyond the standard library).

The user-facing default (``framers compress`` and ``POST /compress`` with no option) is the
content-adaptive mode at ``TARGET_PSNR`` dB. Any fixed-pattern option (``FIXED_PATTERN_OPTIONS``)
or an ffv1 keyframe codec turns it off, and the fixed defaults apply: every ``STRIDE``-th frame
(``SELECTOR`` = stride), rebuilt by ``RECONSTRUCTOR``. ``keep`` without a selector asks for
two-frame slots, chosen by ``SLOT_SELECTOR`` (the learned selector). The library functions
(``framers.pipeline``) default to the fixed pattern; the CLI and the service add the adaptive
default through ``adaptive_by_default``.
"""

from __future__ import annotations

from collections.abc import Collection

#: fixed pattern: every 4th frame (measured best at the 25 % budget, BENCHMARKS.md section 1)
SELECTOR = "stride"
#: the selector when slots are asked for (``keep`` given, no selector)
SLOT_SELECTOR = "framers"
KEEP = 2  # slots of 8 per 16-frame clip (25 %)
STRIDE = 4
#: the reconstructor of ``reconstruct`` and of GET /reconstruct
RECONSTRUCTOR = "framemae"
#: what the ``oracle`` selector optimises for when the CLI is not told (``compress --reconstructor``)
ORACLE_RECONSTRUCTOR = "linear"
#: content-adaptive default: mean per-frame PSNR (dB) of the rebuilt video
TARGET_PSNR = 35.0
KEYFRAME_CODEC = "x264"
#: x264 CRF of the kept frames (fixed patterns; ``compress --crf``)
KEYFRAME_CRF = 20
#: x264 CRF of a reconstructed output video (``reconstruct --crf``; 0 = lossless)
OUTPUT_CRF = 18
#: options that ask for a fixed pattern, so the adaptive mode is not used by default (a refresh
#: layer, ``refresh`` > 0 or ``refresh_kbps``, goes with fixed patterns only; a refresh of 0 is
#: off and not counted)
FIXED_PATTERN_OPTIONS: tuple[str, ...] = ("selector", "keep", "stride", "crf", "refresh", "refresh_kbps")
#: share of the dropped frames' blocks a refresh layer corrects when only its byte budget
#: (``refresh_kbps``) is given: the share the issue's goal names (BENCHMARKS.md section 8b)
REFRESH_SHARE = 0.1
#: whether ``compress`` (CLI and service) adds the candidate map (``framers.candidate_map``) when
#: not told: measured against the same bundles without it in BENCHMARKS.md section 2f
CANDIDATE_MAP = False


def selector_for(selector: str | None, keep_given: bool, *, fixed: str = SELECTOR,
                 slots: str = SLOT_SELECTOR) -> str:
    """The selector of a request: the one named, else ``slots`` when only ``keep`` is given
    (keep alone asks for two-frame slots), else ``fixed``."""
    if selector:
        return selector
    return slots if keep_given else fixed


def adaptive_by_default(given: Collection[str], keyframe_codec: str | None) -> bool:
    """Whether a request that names the options in ``given`` (and no target) runs the adaptive
    mode at the default target: none of ``FIXED_PATTERN_OPTIONS`` and x264 keyframes."""
    return not set(given) & set(FIXED_PATTERN_OPTIONS) and keyframe_codec in (None, "", KEYFRAME_CODEC)


#: selectors that keep two-frame slots per 16-frame clip (``keep``); ``stride`` keeps every Nth frame
SLOT_SELECTORS: tuple[str, ...] = ("framers", "uniform", "oracle", "random")
#: reconstructors that rebuild a clip at a time (``framers.reconstructors.base.WindowReconstructor``):
#: the ones the ``oracle`` selector can choose slots for
CLIP_WISE_RECONSTRUCTORS: tuple[str, ...] = ("framemae", "linear", "hold")
#: the reconstructor a candidate map is made for (``framers.candidate_map``)
MAP_RECONSTRUCTOR = "framemae"
#: x264's CRF range (libx264 clamps a larger value to 51 without a word)
X264_MAX_CRF = 51


def option_conflicts(*, selector: str | None = None, keep_given: bool = False, stride_given: bool = False,
                     reconstructor: str | None = None, keyframe_codec: str | None = None, crf: int | None = None,
                     candidate_map: bool = False) -> list[tuple[str, str]]:
    """(field, why) for each option of a fixed-pattern request that cannot take effect as given,
    for the CLI and the service to refuse alike (a fresh-user trial found each accepted and
    ignored: ``crf=60`` clamped to 51, a candidate map made for a reconstructor that never reads
    it, ``keep`` with ``selector=stride``, the oracle selector failing only in the worker).
    ``selector``: the one named (None: not named); ``keep_given``/``stride_given``: whether those
    were named; ``reconstructor``: the one the request rebuilds with (the oracle selector chooses for it);
    ``keyframe_codec`` None = x264. Pure: no codec is loaded."""
    out: list[tuple[str, str]] = []
    if selector == "stride" and keep_given:
        out.append(("keep", "keep counts two-frame slots of the slot selectors "
                            f"({', '.join(SLOT_SELECTORS)}); selector stride keeps every Nth frame (stride)"))
    if selector in SLOT_SELECTORS and stride_given:
        out.append(("stride", f"stride applies to selector stride; selector {selector} keeps two-frame slots (keep)"))
    if selector is None and keep_given and stride_given:
        out.append(("stride", "keep asks for two-frame slots and stride for every Nth frame: give one of them"))
    if selector == "oracle" and reconstructor is not None and reconstructor not in CLIP_WISE_RECONSTRUCTORS:
        out.append(("reconstructor", f"the oracle selector chooses slots for a clip-wise reconstructor "
                                     f"({', '.join(CLIP_WISE_RECONSTRUCTORS)}); {reconstructor} is not one"))
    if crf is not None and keyframe_codec == "ffv1":
        out.append(("crf", "ffv1 keeps the kept frames losslessly: crf (x264's quality) does not apply"))
    elif crf is not None and not 0 <= crf <= X264_MAX_CRF:
        out.append(("crf", f"x264's CRF is 0 to {X264_MAX_CRF}"))
    if candidate_map and reconstructor is not None and reconstructor != MAP_RECONSTRUCTOR:
        out.append(("candidate_map", f"the candidate map is made for {MAP_RECONSTRUCTOR}; reconstructor "
                                     f"{reconstructor} would never read it"))
    return out
