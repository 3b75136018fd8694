"""Pasting works on the mask's support only, with the same pixels as a full-frame paste."""

import cv2
import numpy as np

from hygie_w2l.blend import paste
from hygie_w2l.geometry import SquareBox, box_affine, generator_mask, invert, warp


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur((rng.random((360, 640, 3)) * 255).astype(np.uint8), (21, 21), 6)
    m = box_affine(SquareBox(330.0, 190.0, 160.0), 96)  # a Wav2Lip face crop
    to_face = m @ np.vstack([invert(box_affine(SquareBox(330.0, 230.0, 70.0), 128)),
                             [0, 0, 1]])
    mask = warp(generator_mask(128), to_face, (96, 96))  # the mouth: part of the square
    crop = cv2.GaussianBlur((rng.random((96, 96, 3)) * 255).astype(np.uint8), (7, 7), 2)
    return frame, crop, mask, m


def test_feather_paste_equals_a_full_frame_alpha_blend() -> None:
    frame, crop, mask, m = _scene()
    assert 0.05 < (mask > 1e-3).mean() < 0.7  # the mask covers only part of the crop
    inv = invert(m)
    size = (frame.shape[1], frame.shape[0])
    full = cv2.warpAffine(crop, inv, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE).astype(float)
    alpha = cv2.warpAffine(mask.astype(np.float32), inv, size, flags=cv2.INTER_LINEAR)[..., None]
    expected = alpha * full + (1 - alpha) * frame
    got = paste(frame, crop, mask, m, "feather", colour_correct=False)
    assert np.abs(got - expected).max() <= 1.0
    assert np.abs(got.astype(int) - frame).max() > 30  # it did paste something


def test_poisson_changes_only_the_mask_region() -> None:
    frame, crop, mask, m = _scene()
    got = paste(frame, crop, mask, m, "poisson")
    region = cv2.warpAffine(mask.astype(np.float32), invert(m),
                            (frame.shape[1], frame.shape[0])) > 1e-3
    assert np.array_equal(got[~region], frame[~region])
    assert np.abs(got[region].astype(int) - frame[region]).mean() > 3


def test_membrane_keeps_the_known_values_and_fills_smoothly() -> None:
    from hygie_w2l.blend import membrane

    h, w = 60, 80
    known = np.zeros((h, w), np.float32)
    known[0, :] = known[-1, :] = known[:, 0] = known[:, -1] = 1
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.stack([xs, ys, 0 * xs + 7], -1)  # harmonic: the interior must follow it
    field = membrane(ramp * known[..., None], known)
    np.testing.assert_allclose(field[known > 0], ramp[known > 0], atol=1e-4)
    assert np.abs(field - ramp)[10:-10, 10:-10].max() < 6.0  # of a 0..80 ramp


def test_the_compiled_membrane_is_the_opencv_one(kernels, monkeypatch) -> None:
    # the same push-pull (pyramid borders as OpenCV's pyrDown, pyrUp and blur make them),
    # to float32 rounding, on odd and even sizes, 1 to 3 channels
    from hygie_w2l import native
    from hygie_w2l.blend import membrane

    rng = np.random.default_rng(4)
    for h, w, c in ((61, 83, 1), (40, 40, 2), (9, 130, 3), (5, 5, 2), (3, 7, 1)):
        ring = np.zeros((h, w), np.uint8)
        cv2.ellipse(ring, (w // 2, h // 2), (max(w // 3, 1), max(h // 3, 1)), 20, 0, 360,
                    (1,), 1)
        known = ring.astype(np.float32)
        values = rng.normal(0, 40, (h, w, c)).astype(np.float32) * known[..., None]
        fast = membrane(values, known)
        monkeypatch.setattr(native, "kernels", None)
        slow = membrane(values, known)
        monkeypatch.undo()
        assert fast.shape == slow.shape == (h, w, c) and fast.dtype == np.float32
        assert np.abs(fast - slow).max() < 1e-3


def test_poisson_is_close_to_opencvs_seamless_clone() -> None:
    frame, crop, mask, m = _scene()
    crop = cv2.add(crop, (40, -30, 20, 0))  # a colour the blend must take away
    ours = paste(frame, crop, mask, m, "poisson", colour_correct=False)
    region = cv2.warpAffine(mask.astype(np.float32), invert(m),
                            (frame.shape[1], frame.shape[0]))
    y, x = np.nonzero(region > 1e-3)
    box = (slice(y.min(), y.max() + 1), slice(x.min(), x.max() + 1))
    placed = cv2.warpAffine(crop, invert(m), (frame.shape[1], frame.shape[0]),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    soft = region[box]
    binary = (soft > 0.5).astype(np.uint8) * 255
    binary[0, :] = binary[-1, :] = binary[:, 0] = binary[:, -1] = 0
    bx, by, bw, bh = cv2.boundingRect(binary)
    cloned = cv2.seamlessClone(np.ascontiguousarray(placed[box]),
                               np.ascontiguousarray(frame[box]), binary,
                               (bx + bw // 2, by + bh // 2), cv2.NORMAL_CLONE)
    want = soft[..., None] * cloned + (1 - soft[..., None]) * frame[box]
    err = np.abs(ours[box].astype(float) - want)[soft > 1e-3]
    shift = np.abs(placed[box].astype(float) - want)[soft > 1e-3]
    assert err.mean() < 0.25 * shift.mean() and err.mean() < 4.0
