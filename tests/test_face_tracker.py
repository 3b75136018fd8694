from pathlib import Path

import cv2
import numpy as np
import pytest

from hygie_w2l import face_tracker as ft
from hygie_w2l import media
from tests.conftest import make_variant


def test_one_euro_smooths_noise_and_follows_a_fast_move() -> None:
    rng = np.random.default_rng(0)
    n = 200
    truth = np.c_[np.full(n, 100.0), np.full(n, 100.0), np.full(n, 150.0)]
    truth[100:, 0] += 80  # a fast move halfway
    noisy = truth + rng.normal(0, 2.0, truth.shape)
    filt = ft.OneEuro(25)
    smooth = np.stack([filt(v) for v in noisy])
    jitter = lambda a: np.abs(np.diff(a[10:95, 0], 2)).mean()  # noqa: E731
    assert jitter(smooth) < 0.35 * jitter(noisy)
    assert abs(smooth[108, 0] - truth[108, 0]) < 10  # caught up within 8 frames


def test_fill_gaps_interpolates_short_runs_only() -> None:
    pts = np.zeros((20, 2, 3), np.float32)
    pts[:, :, 0] = np.arange(20)[:, None]
    status = np.zeros(20, np.uint8)
    status[5:8] = ft.STATUS_MISSING
    status[12:19] = ft.STATUS_MISSING
    pts[status == ft.STATUS_MISSING] = np.nan
    ft.fill_gaps(pts, status, max_gap=4)
    assert np.allclose(pts[5:8, 0, 0], [5, 6, 7])
    assert (status[5:8] == ft.STATUS_INTERPOLATED).all()
    assert (status[12:19] == ft.STATUS_MISSING).all() and np.isnan(pts[12:19]).all()
    assert ft.runs(status == ft.STATUS_MISSING) == [(12, 19)]


def test_tracks_the_fixture_with_a_smoother_box(synth_clip) -> None:
    path, truth = synth_clip
    track = ft.track_frames(media.read_frames(path), 25, progress=False)
    assert track.valid.all() and len(track.status) == truth["n_frames"]
    assert track.landmarks.shape == (truth["n_frames"], 478, 2)
    jitter = lambda b: np.abs(np.diff(b[:, :2], 2, axis=0)).mean()  # noqa: E731
    assert jitter(track.boxes) < 0.7 * jitter(track.raw_boxes)
    assert (track.confidence == 1.0).all()
    assert np.nanmax(np.abs(track.pose_deg)) < 20


def test_gaps_are_interpolated_or_reported_and_two_faces_use_the_largest(
        synth_clip, tmp_path: Path) -> None:
    path, _ = synth_clip

    def edit(frame: np.ndarray, i: int) -> np.ndarray:
        if 20 <= i < 24 or i >= 60:  # a short gap, then no face for the rest
            return np.full_like(frame, 128)
        if 30 <= i < 40:  # a second, smaller face in the corner
            small = cv2.resize(frame, (120, 120))
            frame = frame.copy()
            frame[-120:, -120:] = small
        return frame

    variant = make_variant(path, tmp_path / "gaps.mp4", edit)
    track = ft.track_frames(media.read_frames(variant), 25, progress=False)
    assert (track.status[20:24] == ft.STATUS_INTERPOLATED).all()
    assert track.missing_ranges() == [(60, 100)]
    assert track.multi_face_frames >= 5
    report = track.report()
    assert "2.40-4.00 s" in report and "largest" in report
    big = track.boxes[35, 2]
    assert big > 150  # the large face, not the 120-px copy


def test_face_alignment_backend_says_what_is_missing() -> None:
    with pytest.raises(ft.HygieError, match="face-alignment|S3FD"):
        ft.FaceAlignmentBackend()
