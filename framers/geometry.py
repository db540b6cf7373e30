"""Clip geometry, the one source of these facts for the codec, the service and training.

A video is cut into clips of ``CLIP_LEN`` = 16 frames; a clip has ``N_SLOTS`` = 8 temporal slots
of ``SLOT_LEN`` = 2 frames (the FrameMAE tubelet depth). The paper's selector keeps 2 slots of 8
(25 % of the frames) and scores the ``N_PAIRS`` = 28 kept slot pairs, indexed in lexicographic
order: (0,1)=0, (0,2)=1, … (6,7)=27 (``PAIRS``, ``pair_index``). ``uniform`` keeps (1, 5).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

CLIP_LEN = 16
SLOT_LEN = 2
N_SLOTS = CLIP_LEN // SLOT_LEN
#: the kept slot pairs of a full clip, in class-index order
PAIRS: tuple[tuple[int, int], ...] = tuple(itertools.combinations(range(N_SLOTS), 2))
N_PAIRS = len(PAIRS)
#: the pair ``uniform`` keeps with keep = 2 (evenly spaced, centred slots)
UNIFORM_SLOTS: tuple[int, int] = (1, 5)
UNIFORM_PAIR = PAIRS.index(UNIFORM_SLOTS)


def pair_index(slots: Sequence[int]) -> int:
    """The paper's class index of a kept pair: lexicographic, (0,1)=0, (0,2)=1, ... (6,7)=27.

    Raises ValueError unless ``slots`` are two different slots of a full clip (0..7)."""
    first, second = sorted(slots)
    return PAIRS.index((first, second))


def pair_frames(pair: Sequence[int], slot_len: int = SLOT_LEN) -> list[int]:
    """Kept frame offsets in the clip of a set of slots: (1, 5) → [2, 3, 10, 11]."""
    return [f for s in sorted(pair) for f in range(s * slot_len, (s + 1) * slot_len)]
