from pathlib import Path

from hygie_w2l import __version__, media
from tests.conftest import run_cli


def test_version() -> None:
    run = run_cli("--version")
    assert run.returncode == 0 and run.stdout.strip() == f"hygie-w2l {__version__}"


def test_doctor_lists_everything_and_passes(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    run = run_cli("doctor", "--checkpoints", str(repo / "checkpoints"))
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("ffmpeg", "torch", "opencv", "mediapipe", "faiss", "weights"):
        assert name in run.stdout
    assert "wav2lip.pth" in run.stdout  # listed as present or absent, never an error


def test_synth_writes_a_25fps_h264_aac_clip(tmp_path: Path) -> None:
    out = tmp_path / "s.mp4"
    run = run_cli("synth", "--seconds", "1.2", "--size", "200", "--out", str(out))
    assert run.returncode == 0, run.stderr
    info = media.probe(out)
    assert (info.video_codec, info.fps, info.audio_streams[0].codec) == ("h264", 25, "aac")
    assert info.n_frames == 30 and (info.width, info.height) == (200, 200)
    assert (tmp_path / "s.truth.json").exists()


def test_no_command_prints_help_and_exits_2() -> None:
    run = run_cli()
    assert run.returncode == 2 and "usage" in run.stdout
