import fcntl
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hygie_w2l import media
from hygie_w2l.errors import InputFileError, NoAudioStreamError, OutputError
from tests.conftest import run_cli

# ------------------------------------------------------------- pure argument builders ----


def test_read_args_resample_with_the_fps_filter() -> None:
    args = media.read_frames_args("in.mp4", 25)
    assert args[args.index("-vf") + 1] == "fps=25"
    assert args[args.index("-pix_fmt") + 1] == "bgr24" and args[-1] == "pipe:1"
    assert "-ss" not in args
    passthrough = media.read_frames_args("in.mp4", None, start_s=1.5)
    assert "fps=" not in " ".join(passthrough) and "passthrough" in passthrough
    assert passthrough[passthrough.index("-ss") + 1] == "1.500000"
    assert passthrough.index("-ss") < passthrough.index("-i")  # fast input seeking


def test_audio_args_decode_to_16k_mono_float() -> None:
    args = media.extract_audio_args("x.m4a")
    assert args[args.index("-ar") + 1] == "16000" and args[args.index("-ac") + 1] == "1"
    assert args[args.index("-f") + 1] == "f32le" and "0:a:0" in args


def test_writer_args_are_h264_yuv420p_with_even_padding() -> None:
    args = media.write_video_args("o.mp4", 321, 240, 25, crf=20)
    assert args[args.index("-c:v") + 1] == "libx264"
    assert args[args.index("-crf") + 1] == "20"
    assert args[args.index("-s") + 1] == "321x240"
    assert "pad=ceil(iw/2)*2:ceil(ih/2)*2" in args


def test_mux_args_copy_video_encode_aac_and_tag() -> None:
    args = media.mux_args("v.mp4", "a.wav", "o.mp4", {"comment": "synthetic mouth"})
    assert args[args.index("-c:v") + 1] == "copy" and args[args.index("-c:a") + 1] == "aac"
    assert "comment=synthetic mouth" in args
    assert any("use_metadata_tags" in a for a in args)


REPORT_VFR = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':
  Duration: 00:00:06.13, start: 0.000000, bitrate: 864 kb/s
  Stream #0:0[0x1](und): Video: h264 (Constrained Baseline) (avc1 / 0x31637661), yuv420p(progressive), 700x700, 628 kb/s, 22.13 fps, 30 tbr, 15360 tbn, start 0.033008 (default)
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, fltp, 231 kb/s (default)
"""

REPORT_ROTATED = """  Duration: 00:00:02.00, start: 0.000000, bitrate: 100 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 1920x1080, 90 kb/s, 30 fps, 30 tbr, 15360 tbn (default)
      Side data:
        displaymatrix: rotation of -90.00 degrees
"""


def test_parse_probe_reads_rates_sizes_and_streams() -> None:
    info = media.parse_probe(Path("x.mp4"), REPORT_VFR)
    assert info.duration_s == pytest.approx(6.13)
    assert (info.width, info.height, info.video_codec) == (700, 700, "h264")
    assert info.fps == pytest.approx(22.13) and info.tbr == 30
    assert info.variable_frame_rate  # no packet table: falls back on fps vs tbr
    assert info.audio_streams == (media.AudioStream("aac", 44100, "stereo"),)


def test_parse_probe_applies_rotation_to_the_displayed_size() -> None:
    info = media.parse_probe(Path("x.mp4"), REPORT_ROTATED)
    assert info.rotation_deg == 270 and (info.width, info.height) == (1080, 1920)
    assert not info.has_audio


def test_packet_table_counts_frames_and_sees_uneven_durations() -> None:
    head = "#tb 0: 1/15360\n"
    even = head + "".join(f"0, {i * 512}, {i * 512}, 512, 100, 0x0\n" for i in range(10))
    uneven = head + "0, 0, 0, 1024, 9, 0x0\n0, 1, 1, 512, 9, 0x0\n0, 2, 2, 512, 9, 0x0\n"
    assert media.parse_packet_table(even) == (10, False)
    assert media.parse_packet_table(uneven) == (3, True)


# --------------------------------------------------------------- real ffmpeg, synthetic ----


def test_writer_and_reader_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "grad.mp4"
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)]
    with media.VideoWriter(out, 64, 48, 25) as writer:
        for f in frames:
            writer.write(f)
    info = media.probe(out)
    assert (info.width, info.height, info.n_frames, info.fps) == (64, 48, 10, 25)
    back = list(media.read_frames(out))
    assert len(back) == 10
    assert all(abs(float(b.mean()) - float(f.mean())) < 3 for b, f in zip(back, frames, strict=True))


@pytest.mark.skipif(sys.platform != "linux", reason="pipe sizes are Linux's")
def test_frame_pipes_are_widened_towards_a_frame(tmp_path: Path) -> None:
    # a 640x480 I420 frame is 460,800 bytes: its pipes hold it whole, not in 64 KiB fills
    frame_bytes = 640 * 480 * 3 // 2
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as r, os.fdopen(write_fd, "wb") as w:
        assert fcntl.fcntl(w.fileno(), fcntl.F_GETPIPE_SZ) < frame_bytes
        assert media.widen_pipe(w, frame_bytes) >= frame_bytes
        assert fcntl.fcntl(r.fileno(), fcntl.F_GETPIPE_SZ) >= frame_bytes  # one pipe, two ends
        assert media.widen_pipe(w, 3072) >= frame_bytes  # a small frame never shrinks it
    with media.VideoWriter(tmp_path / "v.mp4", 640, 480, 25, pix_fmt="yuv420p") as writer:
        assert writer._proc.stdin is not None
        assert fcntl.fcntl(writer._proc.stdin.fileno(), fcntl.F_GETPIPE_SZ) >= frame_bytes
        writer.write(np.zeros((720, 640), np.uint8))
    frames = media.read_frames(tmp_path / "v.mp4", pix_fmt="yuv420p")
    assert next(frames).shape == (720, 640)  # the decoder's stdout is open now: find it
    assert any(os.readlink(f).startswith("pipe:") and _pipe_size(f) >= frame_bytes
               for f in Path(f"/proc/{os.getpid()}/fd").iterdir())
    frames.close()


def _pipe_size(fd_link: Path) -> int:
    """The size of the pipe behind one of our descriptors (opened anew through /proc)."""
    try:
        fd = os.open(fd_link, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    finally:
        os.close(fd)


def test_reader_resamples_to_the_requested_rate(tmp_path: Path) -> None:
    out = tmp_path / "30fps.mp4"
    with media.VideoWriter(out, 32, 32, 30) as writer:
        for i in range(60):  # 2 s at 30 fps
            writer.write(np.full((32, 32, 3), i * 4, np.uint8))
    assert len(list(media.read_frames(out, fps=25))) == 50


def test_reader_stops_the_decoder_at_max_frames(tmp_path: Path) -> None:
    out = tmp_path / "30fps.mp4"
    with media.VideoWriter(out, 32, 32, 30) as writer:
        for i in range(60):
            writer.write(np.full((32, 32, 3), i * 4, np.uint8))
    whole = list(media.read_frames(out, fps=25))
    first = list(media.read_frames(out, fps=25, max_frames=7))  # the decoder ends, not killed
    assert len(first) == 7
    assert all(np.array_equal(a, b) for a, b in zip(first, whole[:7], strict=True))
    assert len(list(media.read_frames(out, fps=25, max_frames=80))) == len(whole) == 50
    assert media.read_frames_args("in.mp4", 25, max_frames=7)[-7:-5] == ["-frames:v", "7"]


def test_reader_can_stop_early_without_error(tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    with media.VideoWriter(out, 32, 32, 25) as writer:
        for _ in range(50):
            writer.write(np.zeros((32, 32, 3), np.uint8))
    gen = media.read_frames(out)
    next(gen)
    gen.close()  # kills ffmpeg quietly


def test_mux_is_atomic_and_tags_the_output(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    with media.VideoWriter(video, 32, 32, 25) as writer:
        for _ in range(25):
            writer.write(np.zeros((32, 32, 3), np.uint8))
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    out = tmp_path / "o.mp4"
    media.mux(video, wav, out, {"comment": "mouth is synthetic", "hygie_synthetic": "1"})
    tags = media.read_metadata(out)
    assert tags["comment"] == "mouth is synthetic" and tags["hygie_synthetic"] == "1"
    info = media.probe(out)
    assert info.has_audio and info.audio_streams[0].codec == "aac"
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_mux_into_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        media.mux(tmp_path / "v.mp4", tmp_path / "v.mp4", tmp_path / "nope" / "o.mp4")


# -------------------------------------------------------------------------- bad input ----


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    video = tmp_path / "silent.mp4"
    with media.VideoWriter(video, 32, 32, 25) as writer:
        for i in range(50):
            writer.write(np.full((32, 32, 3), i, np.uint8))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    return {"missing": tmp_path / "missing.mp4", "text": text, "truncated": truncated,
            "silent": video, "empty": empty}


def test_bad_inputs_raise_errors_naming_the_file(tmp_path: Path) -> None:
    bad = _bad_inputs(tmp_path)
    for key in ("missing", "text", "truncated"):
        with pytest.raises(InputFileError, match=str(bad[key].name)):
            media.probe(bad[key])
    with pytest.raises(NoAudioStreamError, match="silent.mp4: has no audio stream"):
        media.load_audio(bad["silent"])
    with pytest.raises(InputFileError, match="empty.wav"):
        media.load_audio(bad["empty"])


def test_bad_inputs_at_the_cli_give_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = _bad_inputs(tmp_path)
    for key, path in bad.items():
        run = run_cli("info", "--audio", str(path))
        assert run.returncode == 2, (key, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in run.stderr


# ------------------------------------------------------------------------ real footage ----

CLIPS = ["talk_selfie_24s.mp4", "talk_sun_22s.mp4", "talk_office_5s.mp4",
         "talk_studio_7s_30fps.mp4", "talk_suit_6s_vfr.mp4", "talk_hdtf_8s.mp4"]
AUDIO = ["talk_sun_22s.wav", "speech_eng_60s.wav", "speech_radio_8s.wav",
         "speech_japanese_9s_48k24bit.wav", "speech_abstract_33s.mp3"]


@pytest.mark.parametrize("name", CLIPS)
def test_real_clip_probes_and_decodes_at_25_fps(real_data: Path, name: str) -> None:
    info = media.probe(real_data / name)
    assert info.has_video and info.width > 0 and info.n_frames and info.n_frames > 0
    assert info.variable_frame_rate == (name == "talk_suit_6s_vfr.mp4")
    n = 0
    for frame in media.read_frames(real_data / name, fps=25, info=info):
        assert frame.shape == (info.height, info.width, 3) and frame.dtype == np.uint8
        n += 1
    assert abs(n - info.duration_s * 25) <= 2, (n, info.duration_s)
    if name == "talk_sun_22s.mp4":
        assert not info.has_audio
        with pytest.raises(NoAudioStreamError):
            media.load_audio(real_data / name)
    else:
        wav = media.load_audio(real_data / name)
        assert abs(wav.size / 16000 - info.duration_s) < 0.1


@pytest.mark.parametrize("name", AUDIO)
def test_real_audio_decodes_to_16k_mono(real_data: Path, name: str) -> None:
    info = media.probe(real_data / name)
    wav = media.load_audio(real_data / name)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(wav.size / 16000 - info.duration_s) < 0.1
    assert 0.001 < float(np.sqrt(np.mean(wav ** 2))) < 1.0 and np.abs(wav).max() <= 1.01
