#!/usr/bin/env bash
# `make demo`: the journey on an embedded synthetic face, offline, on a CPU, in minutes:
# synthetic person -> prepare -> the person's HD mouth library -> the lips model (audio ->
# lip shape, seconds) -> render new speech -> eval report -> the numbers that matter.
# With the official Wav2Lip weights in checkpoints/ (or DEMO_ARCH=film-unet), that image
# generator is fine-tuned (quick preset) and rendered with --hd-retrieval instead.
# DEMO_VIDEO=person.mp4 DEMO_AUDIO=speech.wav make demo runs it on your own files.
# DEMO_STEPS=N and DEMO_SECONDS=S shorten training and the synthetic person (the end-to-end
# test runs a tiny journey); DEMO_OUT=folder (default demo_out/).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${HYGIE_BIN_DIR:-.venv/bin}
SECONDS_PERSON=${DEMO_SECONDS:-20}
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
  [ -f "$VIDEO" ] || $BIN/hygie-w2l synth --seconds "$SECONDS_PERSON" --seed 0 --out "$VIDEO"
  if [ -z "$AUDIO" ]; then
    $BIN/hygie-w2l synth --seconds 6 --seed 7 --out "$OUT/new_speech.mp4"
    AUDIO="$OUT/new_speech.mp4"
  fi
fi
[ -n "$AUDIO" ] || { echo "set DEMO_AUDIO=speech.wav too" >&2; exit 2; }

echo "== 3. prepare"
$BIN/hygie-w2l prepare "$VIDEO" --out "$OUT/dataset"

echo "== 4. the person's own HD mouths (training split only)"
$BIN/hygie-w2l index "$OUT/dataset" --out "$OUT/retrieval"

ARCH=${DEMO_ARCH:-lips}
[ -z "${DEMO_ARCH:-}" ] && [ -f checkpoints/wav2lip.pth ] && ARCH=wav2lip
echo "== 5. fine-tune ($ARCH, quick preset)"
RESUME=""
[ -f "$OUT/run/last.pt" ] && RESUME=--resume
STEP_ARGS=()  # DEMO_STEPS shortens an image generator's training; the lips model takes seconds
[ "$ARCH" != lips ] && [ -n "$STEPS" ] && STEP_ARGS=(--steps "$STEPS")
$BIN/hygie-w2l train "$OUT/dataset" --out "$OUT/run" --arch "$ARCH" --preset quick \
  "${STEP_ARGS[@]}" $RESUME

echo "== 6. render the new speech on the person's video"
HD=()
[ "$ARCH" != lips ] && HD=(--hd-retrieval)
$BIN/hygie-w2l render --face "$VIDEO" --audio "$AUDIO" --checkpoint "$OUT/run" \
  "${HD[@]}" --index "$OUT/retrieval" \
  --out "$OUT/output.mp4" --preview --stats "$OUT/render_stats.json"

echo "== 7. eval: the held-out split reconstructed from its own audio"
$BIN/hygie-w2l eval "$OUT/dataset" --checkpoint "$OUT/run" --index "$OUT/retrieval" \
  --out "$OUT/report"

echo "== 8. the numbers that matter"
$BIN/python - "$OUT/output.mp4" "$AUDIO" "$OUT/render_stats.json" "$OUT/report/metrics.json" <<'PY'
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
rows = json.loads(Path(sys.argv[4]).read_text())["variants"]
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
g, t = rows["generated"], rows["template"]
print(f"sync (held-out eval): opening r = {g['opening_r']:.2f} vs {t['opening_r']:.2f} for the "
      f"template mouth; LMD {g['lmd']:.4f} vs {t['lmd']:.4f} (lower is better)")
print(f"sharpness of the inner mouth / real video: {g['sharpness_rel']:.2f}"
      + (f" generated, {rows['generated+hd']['sharpness_rel']:.2f} with HD retrieval"
         if "generated+hd" in rows else "")
      + f"; flicker / real video: {g['flicker_rel']:.2f}")
print(f"render speed: {stats['frames_per_s']:.1f} frames/s end to end")
PY
echo
echo "output video:       $OUT/output.mp4"
echo "side-by-side:       $OUT/output.preview.mp4"
echo "render stats:       $OUT/render_stats.json"
echo "eval report:        $OUT/report/report.md (side by side: $OUT/report/side_by_side.mp4)"
echo "training log:       $OUT/run/log.csv"
echo "demo took $(( $(date +%s) - start )) s"
