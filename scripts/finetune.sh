#!/usr/bin/env bash
# scripts/finetune.sh person.mp4 [NAME] [--audio speech.wav]
# prepare -> index (the person's HD mouth library) -> lips (audio -> lip shape, seconds)
# -> [expert + image generator] -> eval, into runs/NAME/ and retrieval/NAME.
# The image generator is trained when the official Wav2Lip weights are in checkpoints/
# (or GENERATOR=wav2lip|film-unet asks for one): on a CPU without them the lips path is
# the one that follows the audio on real footage (README: "The lips path").
# Stops at the first failing step and names it; re-running resumes what is done.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/finetune.sh person.mp4 [NAME] [--audio speech.wav]" >&2
  exit 2
fi
VIDEO=$1; shift
NAME=${1:-$(basename "${VIDEO%.*}")}; [ $# -gt 0 ] && shift
AUDIO_ARGS=("$@")
BIN=${HYGIE_BIN:-.venv/bin/hygie-w2l}
PRESET=${PRESET:-quick}
GENERATOR=${GENERATOR:-}
[ -z "$GENERATOR" ] && [ -f checkpoints/wav2lip.pth ] && GENERATOR=wav2lip
RUN=runs/$NAME
LIB=retrieval/$NAME
mkdir -p "$RUN"

step() {  # step NAME COMMAND...: run it, or stop naming the step
  local name=$1; shift
  echo "== $name: $*"
  "$@"
  local code=$?
  if [ $code -ne 0 ]; then
    echo "finetune.sh: step '$name' failed (exit $code); fix it and run the script again." >&2
    exit $code
  fi
}

resume_flag() { [ -f "$1/last.pt" ] && echo --resume; }

step prepare "$BIN" prepare "$VIDEO" "${AUDIO_ARGS[@]}" --out "$RUN/dataset"
step index "$BIN" index "$RUN/dataset" --out "$LIB"
step lips "$BIN" train "$RUN/dataset" --arch lips --out "$RUN/lips" --preset "$PRESET" \
  $(resume_flag "$RUN/lips")
step eval-lips "$BIN" eval "$RUN/dataset" --checkpoint "$RUN/lips" --index "$LIB" \
  --out "$RUN/report"
BEST="$RUN/lips"
if [ -n "$GENERATOR" ]; then
  EXPERT_ARGS=()
  if [ "$GENERATOR" = wav2lip ]; then
    step train-sync "$BIN" train-sync "$RUN/dataset" --out "$RUN/expert" --preset "$PRESET" \
      $(resume_flag "$RUN/expert")
    EXPERT_ARGS=(--expert "$RUN/expert")
  fi
  step train "$BIN" train "$RUN/dataset" --arch "$GENERATOR" --out "$RUN/generator" \
    --preset "$PRESET" "${EXPERT_ARGS[@]}" $(resume_flag "$RUN/generator")
  step eval-generator "$BIN" eval "$RUN/dataset" --checkpoint "$RUN/generator" --index "$LIB" \
    --out "$RUN/report_generator"
  BEST="$RUN/generator"
fi
echo
echo "done. Render new speech with:"
if [ "$BEST" = "$RUN/lips" ]; then
  echo "  $BIN render --face $VIDEO --audio speech.wav --checkpoint $BEST --out out.mp4"
else
  echo "  $BIN render --face $VIDEO --audio speech.wav --checkpoint $BEST --out out.mp4 \\"
  echo "      --hd-retrieval --index $LIB"
fi
echo "evaluation report: $RUN/report/report.md"
exit 0
