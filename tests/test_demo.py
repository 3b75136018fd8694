"""The demo's whole journey at a tiny size: synthetic person -> prepare -> train -> index ->
render with --hd-retrieval -> eval, through scripts/demo.sh exactly as `make demo` runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hygie_w2l import media

REPO = Path(__file__).resolve().parents[1]


def test_demo_journey_tiny(tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_OUT": str(tmp_path / "demo"), "DEMO_STEPS": "30",
           "DEMO_SECONDS": "8", "HYGIE_BIN_DIR": str(Path(sys.executable).parent)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "demo"
    info = media.probe(out / "output.mp4")
    assert info.video_codec == "h264" and info.audio_streams[0].codec == "aac"
    assert abs(info.duration_s - media.probe(out / "new_speech.mp4").duration_s) < 0.1
    assert media.read_metadata(out / "output.mp4")["hygie_synthetic_mouth"] == "1"
    for path in ("output.preview.mp4", "report/report.md", "report/metrics.json",
                 "retrieval/meta.json"):
        assert (out / path).is_file(), path
    text = proc.stdout
    assert "mouth-opening correlation with the new utterance's ground truth" in text
    assert "sync (held-out eval)" in text and "render speed" in text
    assert "lips path:" in text and "eval report:" in text  # the CPU default: the lips path
    generated, template = re.search(r"opening r = (-?[\d.]+) vs (-?[\d.]+)", text).groups()
    assert float(generated) > float(template) + 0.2, text[-1500:]
