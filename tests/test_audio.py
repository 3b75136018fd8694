import numpy as np
import pytest

from hygie_w2l import audio
from tests.conftest import TESTS_DATA


def test_mel_matches_the_official_reference() -> None:
    ref = np.load(TESTS_DATA / "wav2lip_mel_reference.npz")
    mel = audio.melspectrogram(ref["wav"])
    assert mel.shape == ref["mel"].shape
    assert mel.dtype == np.float32
    np.testing.assert_allclose(mel, ref["mel"], atol=1e-4)


def test_mel_frame_rate_is_80_per_second() -> None:
    wav = np.zeros(audio.SAMPLE_RATE_HZ * 3, np.float32)
    assert audio.melspectrogram(wav).shape == (80, 1 + 3 * 80)
    assert audio.MEL_FRAMES_PER_S == 80


def test_silence_maps_to_the_floor() -> None:
    mel = audio.melspectrogram(np.zeros(8000, np.float32))
    assert np.all(mel == -audio.MAX_ABS_VALUE)


@pytest.mark.parametrize("fps", [25.0, 30.0, 24.0])
def test_train_windows_are_centred_on_the_frame(fps: float) -> None:
    n = audio.SAMPLE_RATE_HZ * 2
    mel = np.tile(np.arange(1 + n // audio.HOP_LENGTH, dtype=np.float32), (80, 1))
    i = 20
    win = audio.mel_window(mel, i, fps, "train")
    assert win.shape == (80, 16)
    start = int(80 * (i - 2) / fps)
    assert win[0, 0] == start and win[0, -1] == start + 15
    centre_s = (win[0, 0] + 8) / 80
    assert abs(centre_s - (i + 0.5) / fps) < 1.5 / fps  # within the frame's neighbourhood


def test_inference_alignment_starts_at_the_frame_and_clamps_at_the_end() -> None:
    mel = np.tile(np.arange(100, dtype=np.float32), (80, 1))
    assert audio.mel_window(mel, 5, 25, "inference")[0, 0] == int(5 * 80 / 25)
    last = audio.mel_window(mel, 1000, 25, "inference")
    assert last[0, 0] == 100 - 16 and last[0, -1] == 99


def test_edge_windows_repeat_the_edge_frames() -> None:
    mel = np.tile(np.arange(50, dtype=np.float32), (80, 1))
    first = audio.mel_window(mel, 0, 25, "train")
    # the window starts 6 mel frames before 0: the first 7 columns repeat frame 0
    assert first[0, 0] == 0 and first[0, 6] == 0 and first[0, 7] == 1
    assert not audio.window_is_complete(mel, 0)
    assert audio.window_is_complete(mel, 5)


def test_every_frame_of_the_audio_gets_a_window() -> None:
    n_samples = int(3.3 * audio.SAMPLE_RATE_HZ)
    n_frames = audio.n_video_frames(n_samples, 25)
    assert n_frames == 83  # 3.3 s -> 82.5 frames -> 83, the last one partial
    mel = audio.melspectrogram(np.random.default_rng(0).standard_normal(n_samples)
                               .astype(np.float32) * 0.1)
    assert audio.mel_windows(mel, n_frames).shape == (83, 80, 16)


def test_frame_rms_follows_the_signal() -> None:
    wav = np.zeros(audio.SAMPLE_RATE_HZ, np.float32)
    wav[8000:] = 0.5
    rms = audio.frame_rms(wav, 25, 25)
    assert rms[:12].max() == 0 and np.allclose(rms[13:], 0.5)


@pytest.mark.parametrize("n_samples", [500, 801, 16000 * 3 + 37])
def test_mel_columns_equal_the_whole_file_mel(n_samples: int) -> None:
    rng = np.random.default_rng(n_samples)
    wav = (rng.standard_normal(n_samples) * 0.1).astype(np.float32)
    whole = audio.melspectrogram(wav)
    samples = audio.ArraySamples(wav)
    n_mel = whole.shape[1]
    for first, stop in [(0, 1), (0, 7), (1, 5), (n_mel // 2, n_mel // 2 + 16),
                        (n_mel - 3, n_mel), (n_mel - 1, n_mel + 10), (-4, 3), (0, n_mel)]:
        cols = audio.mel_columns(samples, first, stop)
        np.testing.assert_allclose(cols, whole[:, max(first, 0):min(stop, n_mel)], atol=2e-5)


def test_streamed_windows_equal_the_whole_file_windows() -> None:
    wav = (np.random.default_rng(1).standard_normal(16000 * 2 + 123) * 0.1).astype(np.float32)
    n_frames = audio.n_video_frames(len(wav))
    expected = audio.mel_windows(audio.melspectrogram(wav), n_frames)
    windows = audio.MelWindows(audio.ArraySamples(wav))
    for frames in ([0, 1, 2], list(range(20, 36)), [n_frames - 2, n_frames - 1], [7]):
        np.testing.assert_allclose(windows(frames), expected[frames], atol=2e-5)


def test_frame_rms_reads_in_chunks_with_the_same_result() -> None:
    wav = (np.random.default_rng(2).standard_normal(16000 * 3) * 0.2).astype(np.float32)
    whole = audio.frame_rms(wav, 75, 25, chunk_frames=10_000)
    np.testing.assert_array_equal(audio.frame_rms(wav, 75, 25, chunk_frames=7), whole)
    np.testing.assert_array_equal(audio.frame_rms(audio.ArraySamples(wav), 75, 25), whole)


def test_our_mel_filters_and_stft_equal_librosa() -> None:
    """The front-end is written in numpy; librosa (the official code's library) agrees."""
    librosa = pytest.importorskip("librosa")
    ours = audio.mel_filterbank()
    theirs = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55.0, fmax=7600.0)
    assert ours.shape == theirs.shape == (80, 401)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)
    wav = (np.random.default_rng(3).standard_normal(16000 + 321) * 0.1).astype(np.float32)
    y = audio.preemphasis(wav)
    spec = np.abs(librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, window="hann",
                               center=True, pad_mode="reflect"))
    np.testing.assert_allclose(audio._stft_magnitude(np.pad(y, 400, mode="reflect")), spec,
                               rtol=1e-6, atol=1e-9)


def test_the_audio_front_end_does_not_import_librosa() -> None:
    import subprocess
    import sys

    code = "import sys, hygie_w2l.audio, hygie_w2l.media; print('librosa' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == "False"
