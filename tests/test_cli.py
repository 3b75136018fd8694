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
    for name in ("ffmpeg", "torch", "opencv", "mediapipe", "faiss", "kernels", "weights"):
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


def test_peak_memory_is_the_command_s_own_not_its_parent_s() -> None:
    """Commands report their peak memory; started from a big process (a test runner that
    loaded models), getrusage's ru_maxrss would report the parent's peak as theirs."""
    import subprocess
    import sys

    import numpy as np

    ballast = np.ones(700 * 2**20 // 8)  # this process now holds 700 MB
    code = ("import resource; from hygie_w2l.doctor import peak_memory_mb; "
            "print(peak_memory_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    own, maxrss = map(float, run.stdout.split())
    assert ballast.sum() > 0 and 5 < own < 300, own
    print(f"child peak {own:.0f} MB; its ru_maxrss says {maxrss:.0f} MB")


def test_progress_bars_draw_on_a_terminal_through_the_stderr_filter(
        synth_clip, random_film_ckpt: Path, tmp_path: Path) -> None:
    """stderr goes through a pipe that drops MediaPipe's logging; on a terminal the progress
    bars must still draw (they ask stderr whether it is a terminal)."""
    import os
    import pty
    import subprocess
    import sys

    clip, _ = synth_clip
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "hygie_w2l.cli", "render", "--face",
                             str(clip), "--audio", str(clip), "--checkpoint",
                             str(random_film_ckpt), "--blend", "feather", "--out",
                             str(tmp_path / "out.mp4")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the command closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=300) == 0, seen[-2000:]
    text = seen.decode(errors="replace")
    assert "render:" in text and "100%|" in text, text[-2000:]
    assert "TensorFlow Lite" not in text and "W0000" not in text
