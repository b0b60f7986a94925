#!/usr/bin/env bash
# Issue 14 figures: does each dialogue turn carry information? coco5k-sim TEST, all 5,000 items
# as the gallery, the captions simulator (gemma3-270m answering from held-out captions), for
# concat+plain (the papers' baseline), rewrite+candidates, infogain and choice, each with the
# answer-aware update (--answers aware, the default) and the papers' text-only handling
# (--answers text). Then per-turn tables and paired sign tests against concat+plain (text).
#
#   bash benchmarks/dialogue_value.sh                 # START=vague:5 LIMIT=100 TURNS=10 JOBS=2
#   START=full SETTINGS="concat:plain:text@30 infogain:aware" bash benchmarks/dialogue_value.sh
#
# A setting is strategy:questioner:answers (or questioner:answers with concat), optionally
# @N for its own target count (the LLM questioners cost minutes per target on 2 cores).
#
# Runs go to runs/dialogue-value/<start>/<setting>; finished targets are kept, so a killed run
# continues where it stopped. JOBS runs go side by side, one llama.cpp thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
START="${START:-vague:5}"
LIMIT="${LIMIT:-100}"
TURNS="${TURNS:-10}"
JOBS="${JOBS:-2}"
LLM="${LLM:-llamacpp:gemma3-270m}"
DATA="${DATA:-../shared/data/coco5k}"
SETTINGS="${SETTINGS:-concat:plain:text concat:plain:aware infogain:aware infogain:text choice:aware choice:text rewrite:candidates:aware}"
OUT="runs/dialogue-value/${START/:/}"
CONVIR="${CONVIR:-.venv/bin/convir}"
export HF_HUB_OFFLINE=1 CONVIR_LLM_THREADS=1
mkdir -p "$OUT"

run_one() {  # SETTING: strategy:questioner:answers[@N], or questioner:answers[@N]
    setting="${1%@*}" limit="$LIMIT"
    [ "$setting" != "$1" ] && limit="${1##*@}"
    IFS=: read -r a b c <<<"$setting"
    if [ -z "$c" ]; then strategy=concat questioner=$a answers=$b; else strategy=$a questioner=$b answers=$c; fi
    name="$strategy-$questioner-$answers"
    $CONVIR eval dialog --dataset coco5k-sim "$DATA" --split test --gallery all --start "$START" \
        --limit "$limit" --turns "$TURNS" --strategy "$strategy" --questioner "$questioner" \
        --answers "$answers" --answerer captions --llm "$LLM" --out "$OUT/$name" --json \
        >"$OUT/$name.json" 2>"$OUT/$name.log" && echo "done $name" || echo "FAILED $name (see $OUT/$name.log)"
}
export -f run_one
export START LIMIT TURNS LLM DATA OUT CONVIR
printf '%s\n' $SETTINGS | xargs -P "$JOBS" -I{} bash -c 'run_one {}'
runs=()
for s in $SETTINGS; do
    IFS=: read -r a b c <<<"${s%@*}"
    if [ -z "$c" ]; then runs+=("$OUT/concat-$a-$b"); else runs+=("$OUT/$a-$b-$c"); fi
done
.venv/bin/python benchmarks/summarize_runs.py --common --k 1,10 --baseline "$OUT/concat-plain-text" "${runs[@]}"
