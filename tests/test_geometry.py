import numpy as np
import pytest

from hygie_w2l import geometry
from hygie_w2l.landmarks import lip_rings, outer_inner_rings


def _face(cx: float = 200, cy: float = 220, scale: float = 1.0) -> np.ndarray:
    """A plausible 478-point face: points on an oval, lips as two ellipses below the centre."""
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 2 * np.pi, 478)
    r = np.sqrt(rng.uniform(0, 1, 478))
    pts = np.c_[cx + 80 * scale * r * np.cos(t), cy + 100 * scale * r * np.sin(t)]
    a, b = lip_rings()
    for ring, (rx, ry) in ((a, (30, 14)), (b, (22, 5))):
        u = np.linspace(0, 2 * np.pi, len(ring), endpoint=False)
        pts[list(ring)] = np.c_[cx + scale * rx * np.cos(u), cy + scale * (55 + ry * np.sin(u))]
    from mediapipe.python.solutions.face_mesh_connections import (
        FACEMESH_LEFT_EYE,
        FACEMESH_RIGHT_EYE,
    )
    for conn, ex in ((FACEMESH_RIGHT_EYE, -35), (FACEMESH_LEFT_EYE, 35)):
        ring = sorted({i for e in conn for i in e})
        u = np.linspace(0, 2 * np.pi, len(ring), endpoint=False)
        pts[ring] = np.c_[cx + scale * (ex + 12 * np.cos(u)), cy + scale * (-30 + 4 * np.sin(u))]
    return pts.astype(np.float32)


def test_face_box_is_square_and_pads_the_chin() -> None:
    lm = _face()
    box = geometry.face_box(lm)
    x1, y1, x2, y2 = box.xyxy()
    assert abs((x2 - x1) - (y2 - y1)) <= 1
    assert y2 > lm[:, 1].max() + 5  # room under the chin
    assert x1 <= lm[:, 0].min() and x2 >= lm[:, 0].max()


def test_crop_and_paste_back_are_inverse() -> None:
    box = geometry.SquareBox(210.0, 190.0, 150.0)
    m = geometry.box_affine(box, 96)
    corners = np.array([[box.cx - 75, box.cy - 75], [box.cx + 75, box.cy + 75]])
    assert np.allclose(geometry.transform_points(corners, m), [[0, 0], [96, 96]], atol=1e-4)
    pts = np.random.default_rng(1).uniform(0, 400, (10, 2))
    back = geometry.transform_points(geometry.transform_points(pts, m), geometry.invert(m))
    assert np.allclose(back, pts, atol=1e-3)


def test_lower_half_mask_is_the_official_one() -> None:
    mask = geometry.lower_half_mask(96)
    assert mask[:48].sum() == 0 and (mask[48:] == 1).all()


def test_mouth_mask_sits_on_the_lips_in_crop_and_frame() -> None:
    lm = _face()
    outer, _ = outer_inner_rings(lm)
    frame_mask = geometry.mouth_mask(lm, geometry.IDENTITY, (480, 400))
    ys, xs = np.nonzero(frame_mask > 0.5)
    assert outer[:, 0].min() <= xs.mean() <= outer[:, 0].max()
    assert outer[:, 1].min() <= ys.mean() <= outer[:, 1].max()
    assert 0 < frame_mask.min() + 1e-6 and frame_mask.max() == pytest.approx(1.0)
    box = geometry.mouth_box(lm)
    m = geometry.box_affine(box, 128)
    crop_mask = geometry.mouth_mask(lm, m, (128, 128))
    ys, xs = np.nonzero(crop_mask > 0.5)
    assert abs(xs.mean() - 64) < 6 and abs(ys.mean() - 64) < 6  # centred on the lips
    assert box.side == pytest.approx(60 * 1.35, rel=0.02)


def test_hd_alignment_is_a_similarity_to_fixed_corners() -> None:
    hw = geometry.hd_patch_size(60.0)
    assert hw[1] % 8 == 0 and hw[0] % 8 == 0 and hw[1] >= 120
    for scale in (1.0, 2.0):
        lm = _face(scale=scale)
        m = geometry.hd_affine(lm, hw)
        a, b = m[:, :2][0], m[:, :2][1]
        assert abs(np.dot(a, b)) < 1e-6 and np.linalg.norm(a) == pytest.approx(np.linalg.norm(b))
        outer, _ = outer_inner_rings(lm)
        pts = geometry.transform_points(outer, m)
        assert pts[:, 0].min() == pytest.approx(hw[1] * 0.25, abs=1.0)
        assert pts[:, 0].max() == pytest.approx(hw[1] * 0.75, abs=1.0)


def _open_mouth(lm: np.ndarray, px: float) -> np.ndarray:
    """The same face with the lower lip and everything below the mouth moved down by px."""
    out = lm.copy()
    outer, _ = outer_inner_rings(lm)
    below = out[:, 1] > outer[:, 1].mean()
    out[below, 1] += px
    return out


def test_boxes_placed_on_the_eyes_ignore_the_mouth() -> None:
    """Neither the crop framing nor its size may tell the generator how open the mouth is."""
    from hygie_w2l.face_tracker import MediaPipeBackend

    frames = [_face(), _face(scale=1.02), _face(cx=205)]
    lm_all = np.stack(frames)
    calib = geometry.calibrate_boxes(lm_all, np.ones(len(frames), bool))
    closed, opened = _face(), _open_mouth(_face(), 25.0)
    assert geometry.face_box(opened).cy != geometry.face_box(closed).cy  # the raw box moves
    for rel in (calib.face, calib.mouth):
        a, b = geometry.placed_box(closed, rel), geometry.placed_box(opened, rel)
        assert (a.cx, a.cy, a.side) == pytest.approx((b.cx, b.cy, b.side))
    assert MediaPipeBackend.n_points == 478


def test_placed_boxes_follow_head_motion_and_scale() -> None:
    lm = _face()
    calib = geometry.calibrate_boxes(lm[None], np.ones(1, bool))
    moved = geometry.placed_box(_face(cx=260, cy=200, scale=1.5), calib.mouth)
    base = geometry.placed_box(lm, calib.mouth)
    assert moved.side == pytest.approx(1.5 * base.side, rel=1e-3)
    raw = geometry.mouth_box(lm)
    assert (base.cx, base.cy, base.side) == pytest.approx((raw.cx, raw.cy, raw.side))


def test_generator_mask_is_fixed_and_covers_lips_and_jaw() -> None:
    m = geometry.generator_mask(128)
    assert m.shape == (128, 128) and m.dtype == np.float32
    assert m[64, 64] > 0.99 and m[110, 64] > 0.99  # lips and jaw
    assert m[5, 64] < 0.01 and m[5, 5] < 0.01  # nose base and a corner stay visible
    assert np.array_equal(m, geometry.generator_mask(128))


def test_the_batched_geometry_is_the_per_frame_geometry() -> None:
    """Tracks and crop plans are computed for all frames at once: each frame's result is
    the one-frame function's, in any batch."""
    rng = np.random.default_rng(1)
    faces = np.stack([_face(cx=200 + 30 * rng.random(), cy=220 + 20 * rng.random(),
                            scale=0.8 + 0.6 * rng.random()) for _ in range(6)])
    theta = np.radians(12.0)  # one of them tilted
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    faces[2] = (faces[2] - faces[2].mean(0)) @ rot.T + faces[2].mean(0)
    hw = geometry.hd_patch_size(60.0)
    batched = geometry.eye_frames(faces)
    hd = geometry.hd_affines(faces, hw)
    rel = (0.1, 1.2, 0.9)
    placed = geometry.placed_boxes(faces, rel)
    rigid = geometry.rigid_points(faces)
    for i, lm in enumerate(faces):
        one = geometry.eye_frames(lm[None])
        for a, b in zip(one, batched, strict=True):
            np.testing.assert_allclose(a[0], b[i], atol=1e-9)
        np.testing.assert_allclose(geometry.hd_affine(lm, hw), hd[i], atol=1e-9)
        np.testing.assert_allclose(geometry.placed_box(lm, rel).as_array(), placed[i])
        np.testing.assert_allclose(geometry.similarity_fit(rigid[i], rigid[0]),
                                   geometry.similarity_fit(rigid, rigid[0])[i], atol=1e-9)
    # the similarity fit recovers a known rotation, scale and shift
    m = geometry.similarity_fit(rigid[0], rigid[0] @ (1.5 * rot).T + (3.0, -4.0))
    np.testing.assert_allclose(m, np.hstack([1.5 * rot, [[3.0], [-4.0]]]), atol=1e-9)
