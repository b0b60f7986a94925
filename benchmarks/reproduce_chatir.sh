#!/usr/bin/env bash
# Reproduce the published ChatIR numbers with one command (a GPU machine with the COCO images).
#
#   COCO_ROOT=/data/coco CHATIR_CKPT=/w/chatir_weights.ckpt bash benchmarks/reproduce_chatir.sh
#
# 1. embeds the 50k search space (Search_Space_val_50k.json) with CLIP ViT-B/32 zero-shot, BLIP
#    zero-shot and, when CHATIR_CKPT is given, ChatIR's released BLIP retriever
#    (`convir embed corpus`, resumable: rerun after an interruption);
# 2. runs `convir eval chatir --split all` (the official 2,064 dialogues, truncation as the
#    official baselines) on all five dialogue files for each model;
# 3. runs the DAR variant (generated images fused into the query) for DAR_ENCODERS on DAR_FILES;
# 4. prints Hits@10 at turns 0/5/10 next to the published numbers (benchmarks/chatir_table.py).
#
# Settings (environment):
#   COCO_ROOT          folder containing unlabeled2017/ (required)
#   CHATIR_DATA        dialogue files + Search_Space_val_50k.json (default ../shared/data/chatir)
#   CHATIR_CKPT        ChatIR's chatir_weights.ckpt (download link in the ChatIR README); unset: skipped
#   CLIP_ENCODER       default open_clip:ViT-B-32/openai (OpenAI weights, QuickGELU, 77-token truncation)
#   BLIP_ZS_ENCODER    default blip:Salesforce/blip-itm-base-coco (PlugIR uses ...-large-coco)
#   BLIP_CHATIR_BASE   architecture/tokenizer of the checkpoint (default Salesforce/blip-itm-base-coco)
#   BLIP_CHATIR_SIZE   image size for the checkpoint (default 224: ChatIR's eval builds blip_itm(image_size=224))
#   DEVICE DTYPE BATCH default cuda, float32 (the official code runs float32), 256
#   OUT                default runs/reproduce-chatir
#   DIALOGUE_FILES     default: the five published files
#   EVAL_ARGS          extra `eval chatir` options for every run (e.g. "--limit 100" for a quick look)
#   DAR                1 (default) or 0; DAR_ENCODERS (default "clip blip-chatir"), DAR_FILES (default
#                      VisDial_v1.0_queries_val), DAR_GENERATOR (default diffusers:stabilityai/sd-turbo),
#                      DAR_GENERATOR_OPTIONS (space-separated KEY=VALUE, default device=$DEVICE),
#                      DAR_LLM (LLM writing the prompts; default none = template prompts), DAR_ARGS
#   CONVIR             the convir command (default: convir on PATH, else python -m convir.cli)
#   PYTHON             python for the table (default python3)
# DAR generates 3 images per turn: 2,064 dialogues x 11 turns x 3 = 68k images per model; images are
# cached on disk, so a second model (or a rerun) reuses them.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${COCO_ROOT:?set COCO_ROOT to the folder that contains unlabeled2017/}"
CHATIR_DATA=${CHATIR_DATA:-$REPO/../shared/data/chatir}
CHATIR_CKPT=${CHATIR_CKPT:-}
CLIP_ENCODER=${CLIP_ENCODER:-open_clip:ViT-B-32/openai}
BLIP_ZS_ENCODER=${BLIP_ZS_ENCODER:-blip:Salesforce/blip-itm-base-coco}
BLIP_CHATIR_BASE=${BLIP_CHATIR_BASE:-Salesforce/blip-itm-base-coco}
BLIP_CHATIR_SIZE=${BLIP_CHATIR_SIZE:-224}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-float32}
BATCH=${BATCH:-256}
OUT=${OUT:-$REPO/runs/reproduce-chatir}
DIALOGUE_FILES=${DIALOGUE_FILES:-VisDial_v1.0_queries_val ChatGPT_BLIP2 Human_BLIP2 FLAN_ALPACA_XXL_BLIP2 Unanswered_ChatGPT_BLIP2}
EVAL_ARGS=${EVAL_ARGS:-}
DAR=${DAR:-1}
DAR_ENCODERS=${DAR_ENCODERS:-clip blip-chatir}
DAR_FILES=${DAR_FILES:-VisDial_v1.0_queries_val}
DAR_GENERATOR=${DAR_GENERATOR:-diffusers:stabilityai/sd-turbo}
DAR_GENERATOR_OPTIONS=${DAR_GENERATOR_OPTIONS:-device=$DEVICE}
DAR_LLM=${DAR_LLM:-}
DAR_ARGS=${DAR_ARGS:-}
PYTHON=${PYTHON:-python3}
if [[ -n "${CONVIR:-}" ]]; then
    read -r -a CONVIR_CMD <<<"$CONVIR"
elif command -v convir >/dev/null 2>&1; then
    CONVIR_CMD=(convir)
else
    CONVIR_CMD=("$PYTHON" -m convir.cli)
fi
read -r -a EVAL_EXTRA <<<"$EVAL_ARGS"
read -r -a DAR_EXTRA <<<"$DAR_ARGS"

SPACE="$CHATIR_DATA/Search_Space_val_50k.json"
[[ -f "$SPACE" ]] || { echo "error: $SPACE not found (set CHATIR_DATA)" >&2; exit 2; }
needed="$DIALOGUE_FILES"
[[ "$DAR" == 1 ]] && needed="$needed $DAR_FILES"
for f in $needed; do
    [[ -f "$CHATIR_DATA/$f.json" ]] || { echo "error: $CHATIR_DATA/$f.json not found" >&2; exit 2; }
done

# model folder name -> encoder spec (folder names are the rows' "model" in the table)
declare -A SPEC=([clip]="$CLIP_ENCODER" [blip-zs]="$BLIP_ZS_ENCODER")
MODELS=(clip blip-zs)
if [[ -n "$CHATIR_CKPT" ]]; then
    SPEC[blip-chatir]="blip:$CHATIR_CKPT?base=$BLIP_CHATIR_BASE&image_size=$BLIP_CHATIR_SIZE"
    MODELS+=(blip-chatir)
else
    echo "note: CHATIR_CKPT not set: ChatIR's fine-tuned BLIP is skipped" >&2
fi
mkdir -p "$OUT/corpus" "$OUT/runs"

dialogue_args() {  # --dialogues FILE for each name given
    local name
    for name in "$@"; do printf -- '--dialogues\0%s\0' "$CHATIR_DATA/$name.json"; done
}

for model in "${MODELS[@]}"; do
    spec=${SPEC[$model]}
    corpus="$OUT/corpus/$model.npy"
    echo "== $model: embedding the search space with $spec" >&2
    "${CONVIR_CMD[@]}" embed corpus "$COCO_ROOT" --search-space "$SPACE" --encoder "$spec" \
        --out "$corpus" --device "$DEVICE" --dtype "$DTYPE" --batch-size "$BATCH"
    echo "== $model: eval chatir on $DIALOGUE_FILES" >&2
    mapfile -d '' dargs < <(dialogue_args $DIALOGUE_FILES)
    "${CONVIR_CMD[@]}" eval chatir "${dargs[@]}" --corpus-embeddings "$corpus" --text-encoder "$spec" \
        --split all --device "$DEVICE" --out "$OUT/runs/$model" "${EVAL_EXTRA[@]}"
done

if [[ "$DAR" == 1 ]]; then
    gen_opts=()
    for o in $DAR_GENERATOR_OPTIONS; do gen_opts+=(--generator-option "$o"); done
    llm_opts=()
    [[ -n "$DAR_LLM" ]] && llm_opts=(--llm "$DAR_LLM")
    for model in $DAR_ENCODERS; do
        [[ -n "${SPEC[$model]:-}" ]] || { echo "note: DAR for $model skipped (model not run)" >&2; continue; }
        echo "== $model + DAR ($DAR_GENERATOR) on $DAR_FILES" >&2
        mapfile -d '' dargs < <(dialogue_args $DAR_FILES)
        "${CONVIR_CMD[@]}" eval chatir "${dargs[@]}" --corpus-embeddings "$OUT/corpus/$model.npy" \
            --text-encoder "${SPEC[$model]}" --split all --device "$DEVICE" --imagine dar \
            --generator "$DAR_GENERATOR" "${gen_opts[@]}" "${llm_opts[@]}" --out "$OUT/runs/$model-dar" \
            "${EVAL_EXTRA[@]}" "${DAR_EXTRA[@]}"
    done
fi

echo
"$PYTHON" "$REPO/benchmarks/chatir_table.py" "$OUT/runs"
