"""framers.rgb: nearest-neighbour chroma, unbiased YUV -> RGB, trips that do not drift."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from framers.rgb import chroma_repeated, to_rgb

DATA = Path(__file__).parent / "data"
STEPS = {"yuv420p": (2, 2), "yuv420p10le": (2, 2), "yuv422p": (1, 2), "yuvj422p": (1, 2), "yuv411p": (1, 4),
         "yuv410p": (4, 4), "yuv440p": (2, 1), "yuva420p": (2, 2)}


def real_frame() -> av.VideoFrame:
    """Frame 0 of a real clip (mmaction2 test.avi, 4:2:0 limited range)."""
    with av.open(str(DATA / "mmaction2_test.avi")) as container:
        return next(container.decode(video=0)).reformat(format="yuv420p")


def planes(frame: av.VideoFrame) -> list[np.ndarray]:
    dtype = np.uint16 if frame.format.name.endswith(("le", "be")) else np.uint8
    return [np.frombuffer(memoryview(p), dtype).reshape(p.height, -1)[:, : p.width] for p in frame.planes]


@pytest.mark.parametrize("fmt", sorted(STEPS))
@pytest.mark.parametrize("size", [(37, 29), (64, 48), (5, 5), (1, 1)])
def test_chroma_repeated_matches_numpy_repeat(fmt: str, size: tuple[int, int]) -> None:
    frame = real_frame().reformat(width=size[0], height=size[1], format=fmt)
    frame.colorspace, frame.color_range = 1, 1
    out = chroma_repeated(frame)
    assert out.format.name == re.sub(r"4(20|22|40|11|10)", "444", fmt, count=1)
    assert (out.colorspace, out.color_range) == (1, 1)
    sy, sx = STEPS[fmt]
    source = planes(frame)
    chroma = [np.repeat(np.repeat(p, sy, 0), sx, 1)[: size[1], : size[0]] for p in source[1:3]]
    expected = [source[0], *chroma, *source[3:]]
    for got, want in zip(planes(out), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_packed_and_444_pictures_are_left_alone() -> None:
    for fmt in ("yuv444p", "rgb24", "gbrp", "nv12"):
        frame = real_frame().reformat(format=fmt)
        assert chroma_repeated(frame) is frame


def exact_rgb_mean(frame: av.VideoFrame) -> float:
    """Mean of an exact float BT.601 limited-range conversion (a mean needs no chroma upsampling
    model: each chroma sample covers four luma samples, all taken once)."""
    y, u, v = (p.astype(np.float64) for p in planes(frame))
    yc = (y - 16) * 255 / 219
    uc, vc = (np.repeat(np.repeat((c - 128) * 255 / 224, 2, 0), 2, 1)[: y.shape[0], : y.shape[1]] for c in (u, v))
    r, b = yc + 1.402 * vc, yc + 1.772 * uc
    g = (yc - 0.299 * r - 0.114 * b) / 0.587
    return float(np.clip(np.stack([r, g, b]), 0, 255).mean())


def test_to_rgb_is_unbiased_where_swscales_default_is_dark() -> None:
    frame = real_frame()
    exact = exact_rgb_mean(frame)
    assert abs(to_rgb(frame, src_colorspace=5, src_color_range=1).mean() - exact) < 0.05
    # the fault this module exists for: swscale's default table conversion comes out dark
    default = frame.reformat(format="rgb24", src_colorspace=5, src_color_range=1).to_ndarray()
    assert default.mean() - exact < -0.3


def test_two_trips_do_not_drift() -> None:
    """source 4:2:0 -> RGB -> 4:2:0 -> RGB -> 4:2:0 (a kept frame, then the output file) stays
    within 0.2 levels of the source's luma on average and close to it per pixel."""
    source = real_frame()
    current = source
    for _ in range(2):
        rgb = to_rgb(current, src_colorspace=5, src_color_range=1)
        current = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format="yuv420p", dst_colorspace=5, dst_color_range=1)
    before, after = planes(source)[0].astype(np.float64), planes(current)[0].astype(np.float64)
    assert abs(float(np.mean(after - before))) < 0.2
    assert 10 * np.log10(255**2 / float(np.mean((after - before) ** 2))) > 40


def test_rgba_keeps_alpha() -> None:
    frame = real_frame().reformat(format="yuva420p")
    alpha = planes(frame)[3]
    alpha[:, : alpha.shape[1] // 2] = 0
    rgba = to_rgb(frame, "rgba")
    assert rgba.shape[-1] == 4 and (rgba[:, : alpha.shape[1] // 2, 3] == 0).all()
