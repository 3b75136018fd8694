import json

import cv2
import numpy as np
import pytest

from hygie_w2l import fixtures, media
from hygie_w2l.face_tracker import FaceMeshDetector
from hygie_w2l.landmarks import mouth_opening, mouth_width, outer_inner_rings


def test_astronaut_geometry_constants_match_mediapipe() -> None:
    from skimage import data

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    with FaceMeshDetector(video=False) as detector:
        lm = detector.detect(img)
    assert lm is not None
    outer, inner = outer_inner_rings(lm)
    left = outer[np.argmin(outer[:, 0])]
    right = outer[np.argmax(outer[:, 0])]
    assert np.allclose(left, fixtures.MOUTH_LEFT_PX, atol=3)
    assert np.allclose(right, fixtures.MOUTH_RIGHT_PX, atol=3)
    assert inner[:, 1].min() < fixtures.MOUTH_SPLIT_Y_PX < outer[:, 1].max()
    assert abs(float(lm[:, 1].max()) - fixtures.CHIN_Y_PX) < 4


def test_speech_is_deterministic_and_has_pauses() -> None:
    a = fixtures.synth_speech(3.0, seed=4)
    b = fixtures.synth_speech(3.0, seed=4)
    assert np.array_equal(a.wav, b.wav)
    assert a.wav.dtype == np.float32 and np.abs(a.wav).max() <= 0.5 + 1e-6
    assert (a.envelope == 0).mean() > 0.1  # gaps between syllables
    assert not np.array_equal(a.wav, fixtures.synth_speech(3.0, seed=5).wav)


def test_fixture_clip_is_25fps_h264_aac(synth_clip) -> None:
    path, truth = synth_clip
    info = media.probe(path)
    assert info.video_codec == "h264" and info.fps == 25 and not info.variable_frame_rate
    assert info.audio_streams[0].codec == "aac"
    assert info.n_frames == truth["n_frames"] == 100
    saved = json.loads(fixtures.truth_path(path).read_text())
    assert saved["opening"] == truth["opening"] and len(saved["opening"]) == 100


def test_mediapipe_finds_the_face_and_follows_the_mouth(synth_clip) -> None:
    path, truth = synth_clip
    measured, widths = [], []
    with FaceMeshDetector(video=True) as detector:
        for frame in media.read_frames(path):
            lm = detector.detect(frame)
            assert lm is not None, "MediaPipe lost the face"
            measured.append(mouth_opening(lm))
            widths.append(mouth_width(lm))
    assert len(measured) == truth["n_frames"]
    r = float(np.corrcoef(measured, truth["opening"])[0, 1])
    assert r > 0.9, r
    assert min(widths) > 50  # the face is big enough for a 96-px crop


@pytest.mark.parametrize("opening", [0.0, 1.0])
def test_render_frame_opens_the_mouth(opening: float) -> None:
    from skimage import data

    base = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    closed = fixtures.render_frame(base, 0.0, 0.0, 0, 0, 0, 256)
    frame = fixtures.render_frame(base, opening, 0.0, 0, 0, 0, 256)
    assert frame.shape == (256, 256, 3)
    diff = np.abs(frame.astype(int) - closed.astype(int)).sum(-1)
    if opening == 0.0:
        assert diff.max() == 0
    else:
        ys, xs = np.nonzero(diff > 40)
        assert ys.size > 100
        # the change sits around the mouth (photo (223, 149) -> frame (126, 152)), not in the
        # eyes or the hair
        assert ys.min() > 256 * 0.45
        assert abs(xs.mean() - 126) < 15 and 145 < ys.mean() < 195  # the jaw drops too
