"""I420 frames (every render path's): a region read as BGR or as the frame's own planes,
edited and written back changes only that region, and the untouched pixels come back as
they were."""

from __future__ import annotations

import cv2
import numpy as np

from hygie_w2l import pixels
from hygie_w2l.compose import compose_lips, piecewise_affine_maps
from hygie_w2l.library import lip_points


def _picture(h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)  # smooth, like video


def test_shapes_and_sizes() -> None:
    assert pixels.frame_shape(720, 1280, "yuv420p") == (1080, 1280)
    assert pixels.frame_shape(720, 1280, "bgr24") == (720, 1280, 3)
    assert pixels.supports("yuv420p", 720, 1280) and not pixels.supports("yuv420p", 721, 1280)
    assert pixels.frame_hw(np.zeros((1080, 1280), np.uint8)) == (720, 1280)
    i420 = np.zeros((1080, 1280), np.uint8)
    assert pixels.align((3, 5, 101, 99), i420) == (2, 4, 102, 100)
    assert pixels.align((3, 5, 101, 99), np.zeros((720, 1280, 3), np.uint8)) == (3, 5, 101, 99)


def test_a_region_round_trips_and_only_it_changes() -> None:
    bgr = _picture()
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    roi = (40, 30, 100, 90)
    region = pixels.read_region(i420, roi)
    assert np.abs(region.astype(int) - pixels.to_bgr(i420)[30:90, 40:100]).max() == 0
    back = np.abs(pixels.with_layers(i420, roi, pixels.layers_like(region, i420)).astype(int)
                  - i420)
    # BT.601 both ways: within a level, but where a colour outside BGR's cube was clipped
    assert back.mean() < 0.05 and (back > 1).mean() < 0.005
    edited = pixels.with_layers(i420, roi, pixels.layers_like(np.full_like(region, 200), i420))
    changed = np.abs(pixels.to_bgr(edited).astype(int) - pixels.to_bgr(i420)).max(-1) > 0
    ys, xs = np.nonzero(changed)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (30, 89, 40, 99)
    assert (i420 == cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)).all()  # the input is kept


def test_each_chroma_sample_is_its_whole_2x2_blocks() -> None:
    region = np.zeros((20, 20, 3), np.uint8)
    region[:, :5] = (40, 40, 200)  # red lips | white teeth, the edge inside a 2x2 block
    region[:, 5:] = (235, 235, 235)
    _, u, v = pixels._planes(pixels.to_i420(region))

    def chroma(bgr: tuple[int, int, int]) -> np.ndarray:
        yuv = cv2.cvtColor(np.full((2, 2, 3), bgr, np.uint8), cv2.COLOR_BGR2YUV_I420)
        return yuv.reshape(-1)[4:].astype(float)  # (u, v)

    red, white = chroma((40, 40, 200)), chroma((235, 235, 235))
    got = np.array([u[:, 2], v[:, 2]], float).T  # the block over columns 4 and 5
    assert np.abs(got - (red + white) / 2).max() <= 1  # their mean, not one of them
    assert np.abs(np.array([u[:, 0], v[:, 0]], float).T - red).max() <= 1


def test_layers_are_the_frames_own_planes_and_go_back_exactly() -> None:
    i420 = cv2.cvtColor(_picture(), cv2.COLOR_BGR2YUV_I420)
    roi = pixels.align((31, 17, 99, 77), i420)
    luma, chroma = pixels.read_layers(i420, roi)
    assert roi == (30, 16, 100, 78) and luma.shape == (62, 70) and chroma.shape == (31, 35, 2)
    assert (pixels.with_layers(i420, roi, [luma, chroma]) == i420).all()  # not a level off
    brighter = pixels.with_layers(i420, roi, [luma // 2 + 100, chroma])
    y, u, v = pixels._planes(brighter)
    y0, u0, v0 = pixels._planes(i420)
    assert (u == u0).all() and (v == v0).all()  # the chroma is untouched
    changed = y != y0
    assert changed[16:78, 30:100].mean() > 0.9 and not changed[:16].any()
    assert not changed[:, :30].any() and not changed[78:].any() and not changed[:, 100:].any()
    patch = pixels.layers_like(_picture(41, 57), i420)  # odd: its edge repeated to even
    assert patch[0].shape == (42, 58) and patch[1].shape == (21, 29, 2)
    assert [a.shape for a in pixels.layers_like(_picture(41, 57), _picture())] == [(41, 57, 3)]


def test_subsampled_warp_maps_are_the_same_warp_at_half_resolution() -> None:
    a = np.array([[0.9, 0.15, 12.0], [-0.1, 1.1, -7.0]])  # one affine for every triangle
    rng = np.random.default_rng(1)
    dst = rng.uniform(10, 110, (30, 2))
    src = dst @ a[:, :2].T + a[:, 2]
    (x1, y1), (x2, y2) = np.floor(dst.min(0)).astype(int) & ~1, (120, 120)
    full, half = piecewise_affine_maps(src, dst, (x1, y1, x2, y2), a, 4, (1, 2))
    ys, xs = np.mgrid[y1:y2, x1:x2].astype(np.float64)
    want = np.stack([a[0, 0] * xs + a[0, 1] * ys + a[0, 2], a[1, 0] * xs + a[1, 1] * ys + a[1, 2]])
    assert np.abs(np.stack(full) - want).max() < 1e-3  # affine everywhere: exact
    # a chroma sample (i, j) is centred on the luma pixels' (2 j + 0.5, 2 i + 0.5); the map
    # gives chroma coordinates, which are (luma - 0.5) / 2
    want_half = (want[:, :-1:2, :-1:2] + want[:, 1::2, 1::2]) / 2
    assert np.abs(np.stack(half) - (want_half - 0.5) / 2).max() < 1e-3


def test_warp_affine_reads_only_what_it_needs_and_matches_the_whole_frame() -> None:
    bgr = _picture()
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    whole = pixels.to_bgr(i420)
    for m in (np.array([[1.5, 0.2, -60.0], [-0.2, 1.5, -40.0]]),  # inside
              np.array([[1.0, 0.0, 30.0], [0.0, 1.0, 20.0]])):  # past the frame's corner
        got = pixels.warp_affine(i420, m, (64, 48))
        want = cv2.warpAffine(whole, m, (64, 48), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        assert np.abs(got.astype(int) - want).max() <= 1


def test_compose_lips_on_i420_is_compose_lips_on_bgr(two_mouths) -> None:
    frame, lm, patch, patch_points = two_mouths
    lips = lip_points(lm)
    target = lips + (0.0, 2.0) * (np.arange(len(lips)) % 2)[:, None]  # a little more open
    bgr = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420), cv2.COLOR_YUV2BGR_I420)
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    a = compose_lips(bgr, lm, target, patch, patch_points, mode="poisson")
    b = pixels.to_bgr(compose_lips(i420, lm, target, patch, patch_points, mode="poisson"))
    changed = np.abs(a.astype(int) - bgr).max(-1) > 0
    assert changed.sum() > 500
    # the same edit, but for I420's chroma (one sample per 2x2 pixels)
    assert np.abs(a.astype(int) - b)[changed].mean() < 3
    assert np.abs(b.astype(int) - bgr)[~changed].mean() < 0.1
