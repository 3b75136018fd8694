#!/usr/bin/env bash
# `make demo`: the journey on an embedded synthetic face, offline, with what is built so far.
# Fine-tuning, HD index, render and eval join this script as they land (issues 5-9).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${DEMO_OUT:-demo_out}
mkdir -p "$OUT"
VIDEO=${DEMO_VIDEO:-}

echo "== 1. the machine"
$BIN/hygie-w2l doctor

if [ -z "$VIDEO" ]; then
  echo "== 2. a synthetic talking face (astronaut photograph, speech-like audio)"
  VIDEO="$OUT/person.mp4"
  $BIN/hygie-w2l synth --seconds 6 --out "$VIDEO"
fi

echo "== 3. what ffmpeg sees"
$BIN/hygie-w2l info "$VIDEO" --audio

echo "== 4. MediaPipe follows the mouth"
$BIN/python - "$VIDEO" <<'PY'
import sys
from pathlib import Path

import numpy as np

from hygie_w2l.face_tracker import FaceMeshDetector
from hygie_w2l.fixtures import truth_path
from hygie_w2l.landmarks import mouth_opening
from hygie_w2l.media import read_frames

video = Path(sys.argv[1])
opening, missing = [], 0
with FaceMeshDetector() as detector:
    for frame in read_frames(video, fps=25):
        lm = detector.detect(frame)
        missing += lm is None
        opening.append(np.nan if lm is None else mouth_opening(lm))
print(f"{len(opening)} frames, face found in {len(opening) - missing}")
truth = truth_path(video)
if truth.exists():
    import json
    gt = json.loads(truth.read_text())["opening"]
    ok = ~np.isnan(opening)
    r = np.corrcoef(np.asarray(opening)[ok], np.asarray(gt)[ok])[0, 1]
    print(f"mouth-opening correlation with the fixture's ground truth: r = {r:.3f}")
PY

echo "== 5. the generator runs on this CPU (export + ONNX check of a fresh Wav2Lip)"
$BIN/hygie-w2l export-onnx --arch wav2lip --out "$OUT/wav2lip_fresh.onnx" 2>&1 | grep -v WARNING

echo
echo "demo outputs are in $OUT/ (fine-tuning, index, render and eval are not built yet)"
