#!/usr/bin/env bash
# scripts/finetune.sh person.mp4 [NAME] [--audio speech.wav]
# prepare -> train-sync -> train -> (index, eval: when those commands exist) into runs/NAME/.
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
RUN=runs/$NAME
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
step train-sync "$BIN" train-sync "$RUN/dataset" --out "$RUN/expert" --preset "$PRESET" \
  $(resume_flag "$RUN/expert")
step train "$BIN" train "$RUN/dataset" --out "$RUN/generator" --preset "$PRESET" \
  --expert "$RUN/expert" $(resume_flag "$RUN/generator")
if "$BIN" --help | grep -q " index "; then
  step index "$BIN" index "$RUN/dataset" --out "retrieval/$NAME"
fi
if "$BIN" --help | grep -q " eval "; then
  step eval "$BIN" eval "$RUN/dataset" --checkpoint "$RUN/generator" --out "$RUN/report"
fi
echo
echo "done. Render new speech with:"
echo "  $BIN render --face $VIDEO --audio speech.wav --checkpoint $RUN/generator --out out.mp4 \\"
echo "      --hd-retrieval --index retrieval/$NAME"
[ -f "$RUN/report/report.md" ] && echo "evaluation report: $RUN/report/report.md"
exit 0
