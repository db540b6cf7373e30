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
