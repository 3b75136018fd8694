import numpy as np
import pytest

from hygie_w2l import split
from hygie_w2l.audio import HOP_LENGTH, MEL_WINDOW_FRAMES, N_FFT, mel_window_start


def _audio_samples(frame_lo: int, frame_hi: int) -> tuple[int, int]:
    """Audio samples read by the mel windows of frames [lo, hi) (centred STFT frames)."""
    first = mel_window_start(frame_lo, 25, "train")
    last = mel_window_start(frame_hi - 1, 25, "train") + MEL_WINDOW_FRAMES - 1
    return first * HOP_LENGTH - N_FFT // 2, last * HOP_LENGTH + N_FFT // 2


@pytest.mark.parametrize("n_frames", [120, 607, 1500])
def test_no_validation_frame_or_audio_is_reachable_from_training(n_frames: int) -> None:
    s = split.make_split(n_frames)
    usable = np.ones(n_frames, bool)
    train_starts = split.valid_starts(s.train, usable)
    val_starts = split.valid_starts(s.val, usable)
    assert len(train_starts) > 0 and len(val_starts) > 0
    train_frames = set()
    for start in train_starts:
        lo, hi = split.sample_reach(start)
        train_frames.update(range(lo, hi))
    val_frames = set(range(*s.val))
    assert not train_frames & val_frames
    train_audio_end = max(_audio_samples(*split.sample_reach(t))[1] for t in train_starts)
    val_audio_start = min(_audio_samples(*split.sample_reach(v))[0] for v in val_starts)
    assert train_audio_end < val_audio_start
    assert s.val[0] - s.train[1] >= split.GUARD_FRAMES == 10


def test_samples_skip_frames_without_a_face() -> None:
    usable = np.ones(100, bool)
    usable[40:43] = False
    starts = split.valid_starts((0, 100), usable)
    assert not any(40 - 4 <= st <= 42 for st in starts)


def test_too_short_a_video_is_refused_with_the_length_needed() -> None:
    with pytest.raises(split.DatasetTooShortError, match=r"at least \d+\.\d s"):
        split.make_split(40, source="clip.mp4")
