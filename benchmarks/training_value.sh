#!/usr/bin/env bash
# Issue 15 figures: does fine-tuning help? Train on coco5k DEV only, report on TEST and on
# Flickr8k-1k (out of domain).
#
#   bash benchmarks/training_value.sh encoder    # hard-negative ablation: none / 50-70 / 10-30
#   bash benchmarks/training_value.sh dialog     # base vs fine-tuned encoder in the dialogue loop
#   bash benchmarks/training_value.sh rewriter   # zero-shot / T / M table and the loop
#   bash benchmarks/training_value.sh loop       # the loop alone (20 targets, 5 turns, vague start by default)
#
# Everything goes under runs/training/; finished steps are skipped on a re-run (a model folder
# or a run folder with its report), so a killed call continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
CONVIR="${CONVIR:-.venv/bin/convir}"
PY="${PY:-.venv/bin/python}"
COCO="${COCO:-../shared/data/coco5k}"
FLICKR="${FLICKR:-../shared/data/flickr8k-1k}"
LLM="${LLM:-llamacpp:gemma3-270m}"
DIALOG_LIMIT="${DIALOG_LIMIT:-200}"
LOOP_LIMIT="${LOOP_LIMIT:-20}"
LOOP_START="${LOOP_START:-vague:5}"  # the harder issue-14 setting (with --gallery all)
LOOP_TURNS="${LOOP_TURNS:-5}"
OUT=runs/training
export HF_HUB_OFFLINE=1
mkdir -p "$OUT/enc" "$OUT/eval" "$OUT/rw" "$OUT/dialog"

retrieval() {  # NAME ENCODER_SPEC: coco5k test and flickr8k-1k, once each
    local name=$1 spec=$2
    [ -f "$OUT/eval/coco-$name/report.json" ] || $CONVIR eval retrieval --dataset coco5k "$COCO" \
        --split test --encoder "$spec" --json --out "$OUT/eval/coco-$name" >"$OUT/eval/coco-$name.json"
    [ -f "$OUT/eval/flickr-$name/report.json" ] || $CONVIR eval retrieval --dataset flickr8k "$FLICKR" \
        --split all --encoder "$spec" --json --out "$OUT/eval/flickr-$name" >"$OUT/eval/flickr-$name.json"
}

encoder() {
    retrieval base caption:minilm
    for w in 50-70 none 10-30; do  # 50-70 is the default
        if [ ! -f "$OUT/enc/hn-$w/convir_train.json" ]; then
            /usr/bin/time -v $CONVIR train encoder --dataset coco5k-sim "$COCO" --split dev \
                --out "$OUT/enc/hn-$w" --hard-negatives "$w" 2>"$OUT/enc/hn-$w.time"
        fi
        retrieval "hn-$w" "caption:$OUT/enc/hn-$w"
    done
    for w in none 50-70 10-30; do
        echo "== hn-$w vs base: coco5k test"
        $PY benchmarks/paired_retrieval.py "$OUT/eval/coco-base" "$OUT/eval/coco-hn-$w"
        echo "== hn-$w vs base: flickr8k-1k"
        $PY benchmarks/paired_retrieval.py "$OUT/eval/flickr-base" "$OUT/eval/flickr-hn-$w"
    done
}

dialog() {  # the harder protocol of issue 14, LLM-free questioner, base vs fine-tuned encoder
    for enc in minilm hn-50-70; do
        spec=caption:minilm
        [ "$enc" = minilm ] || spec="caption:$OUT/enc/$enc"
        CONVIR_LLM_THREADS=1 $CONVIR eval dialog --dataset coco5k-sim "$COCO" --split test --gallery all \
            --start vague:5 --limit "$DIALOG_LIMIT" --turns 10 --strategy concat --questioner infogain-open \
            --answerer captions --llm "$LLM" --encoder "$spec" --out "$OUT/dialog/$enc" --json \
            >"$OUT/dialog/$enc.json" 2>"$OUT/dialog/$enc.log"
    done
    $PY benchmarks/summarize_runs.py --common --k 1,10 --baseline "$OUT/dialog/minilm" \
        "$OUT/dialog/minilm" "$OUT/dialog/hn-50-70"
}

rewriter() {
    if [ ! -f "$OUT/rw/RW/convir_train.json" ]; then
        /usr/bin/time -v $CONVIR train rewriter --dataset coco5k-sim "$COCO" --split dev \
            --base llamacpp:smollm2 --out "$OUT/rw/RW" 2>"$OUT/rw/RW.time"
    fi
    [ -d "$OUT/rw/RW_T" ] || $PY benchmarks/rewriter_table.py --make-t "$OUT/rw/RW" --out "$OUT/rw/RW_T"
    [ -d "$OUT/rw/BASE" ] || $PY benchmarks/rewriter_table.py --save-base llamacpp:smollm2 --out "$OUT/rw/BASE"
    $PY benchmarks/rewriter_table.py --limit 50 --rewriter zero-shot=llamacpp:smollm2 \
        --rewriter zero-shot-chat=hf:"$OUT/rw/BASE" --rewriter T=hf:"$OUT/rw/RW_T" \
        --rewriter M=hf:"$OUT/rw/RW" | tee "$OUT/rw/table.md"
    loop
}

loop() {  # the rewriter in the dialogue loop: zero-shot (the same base in chat mode) vs fine-tuned.
    # The questioner is LLM-free (infogain), so the rewrite is the LLM's main job; the simulated
    # user still answers with the same --llm (eval dialog has one). Both run side by side.
    for llm in "hf:$OUT/rw/BASE" "hf:$OUT/rw/RW"; do
        name=$(basename "${llm#hf:}")
        CONVIR_LLM_THREADS=1 $CONVIR eval dialog --dataset coco5k-sim "$COCO" --split test --limit "$LOOP_LIMIT" \
            --gallery all --start "$LOOP_START" --turns "$LOOP_TURNS" --strategy rewrite --questioner infogain \
            --answerer captions --llm "$llm" --out "$OUT/dialog/rewrite-$LOOP_START-$name" --json \
            >"$OUT/dialog/rewrite-$LOOP_START-$name.json" 2>"$OUT/dialog/rewrite-$LOOP_START-$name.log" &
    done
    wait
    $PY benchmarks/summarize_runs.py --common --k 1,10 --at 1,3,5 --baseline "$OUT/dialog/rewrite-$LOOP_START-BASE" \
        "$OUT/dialog/rewrite-$LOOP_START-BASE" "$OUT/dialog/rewrite-$LOOP_START-RW"
}

case "${1:-}" in
    encoder | dialog | rewriter | loop) "$1" ;;
    *) echo "usage: $0 encoder|dialog|rewriter|loop" >&2; exit 2 ;;
esac
