#!/usr/bin/env bash
# `make demo`: the journey on an embedded synthetic face, offline, on a CPU, in minutes:
# synthetic person -> prepare -> fine-tune (quick preset) -> render new speech -> measure.
# DEMO_VIDEO=person.mp4 DEMO_AUDIO=speech.wav make demo runs it on your own files.
# (The HD mouth index and the eval report join when those commands land.)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${DEMO_OUT:-demo_out}
STEPS=${DEMO_STEPS:-}
mkdir -p "$OUT"
start=$(date +%s)
VIDEO=${DEMO_VIDEO:-}
AUDIO=${DEMO_AUDIO:-}

echo "== 1. the machine"
$BIN/hygie-w2l doctor

if [ -z "$VIDEO" ]; then
  echo "== 2. a synthetic person (astronaut photograph, speech-like audio) and a new utterance"
  VIDEO="$OUT/person.mp4"
  [ -f "$VIDEO" ] || $BIN/hygie-w2l synth --seconds 20 --seed 0 --out "$VIDEO"
  if [ -z "$AUDIO" ]; then
    $BIN/hygie-w2l synth --seconds 6 --seed 7 --out "$OUT/new_speech.mp4"
    AUDIO="$OUT/new_speech.mp4"
  fi
fi
[ -n "$AUDIO" ] || { echo "set DEMO_AUDIO=speech.wav too" >&2; exit 2; }

echo "== 3. prepare"
$BIN/hygie-w2l prepare "$VIDEO" --out "$OUT/dataset"

ARCH=film-unet
[ -f checkpoints/wav2lip.pth ] && ARCH=wav2lip
echo "== 4. fine-tune ($ARCH, quick preset)"
RESUME=""
[ -f "$OUT/run/last.pt" ] && RESUME=--resume
$BIN/hygie-w2l train "$OUT/dataset" --out "$OUT/run" --arch "$ARCH" --preset quick \
  ${STEPS:+--steps "$STEPS"} $RESUME

echo "== 5. render the new speech on the person's video"
$BIN/hygie-w2l render --face "$VIDEO" --audio "$AUDIO" --checkpoint "$OUT/run" \
  --out "$OUT/output.mp4" --preview --stats "$OUT/render_stats.json"

echo "== 6. does the mouth follow the new audio?"
$BIN/python - "$OUT/output.mp4" "$AUDIO" "$OUT/render_stats.json" <<'PY'
import json
import sys
from pathlib import Path

import numpy as np

from hygie_w2l.face_tracker import FaceMeshDetector
from hygie_w2l.fixtures import truth_path
from hygie_w2l.landmarks import mouth_opening
from hygie_w2l.media import probe, read_frames
from hygie_w2l.metrics import pearson

out, audio, stats = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
info = probe(out)
print(f"output: {info.video_codec} + {info.audio_streams[0].codec}, {info.duration_s:.2f} s")
with FaceMeshDetector() as detector:
    opening = np.array([mouth_opening(lm) if (lm := detector.detect(f)) is not None else np.nan
                        for f in read_frames(out)])
truth = truth_path(audio)
if truth.exists():
    gt = np.asarray(json.loads(truth.read_text())["opening"])
    n = min(len(gt), len(opening))
    print(f"sync: mouth-opening correlation with the new utterance's ground truth "
          f"r = {pearson(opening[:n], gt[:n]):.2f}")
print(f"render speed: {stats['frames_per_s']:.1f} frames/s end to end")
PY
echo
echo "output video:       $OUT/output.mp4"
echo "side-by-side:       $OUT/output.preview.mp4"
echo "render stats:       $OUT/render_stats.json"
echo "training log:       $OUT/run/log.csv (previews in $OUT/run/previews/)"
echo "demo took $(( $(date +%s) - start )) s"
