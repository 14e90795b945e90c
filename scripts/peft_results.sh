#!/bin/sh
# `make peft-results`: the PEFT results table (docs/PEFT-RESULTS.md) from one command.
#
# It trains the two base models if they are missing (a GPT on fortunes without songs-poems, a ViT
# on Fashion-MNIST classes 0-4), fine-tunes each with every method -- the GPT on songs-poems, the
# ViT on classes 5-9 with a new head -- and writes one row per run: trainable parameters, the
# metric before and after, time per step and the training memory (peak tensor bytes above what
# was alive when training started). Every method gets the same data, steps and batch size.
set -e
BUILD=${1:-build}
RUNS=${RUNS:-runs}
OUT=${OUT:-docs/PEFT-RESULTS.md}
# Every method of the PEFT method table (peft/methods.cpp), then full fine-tuning.
METHODS=${METHODS:-$("$BUILD/gpt" methods | tr '\n' ' ')}
GPT_STEPS=${GPT_STEPS:-200}
VIT_STEPS=${VIT_STEPS:-300}
CSV="$RUNS/peft-results.csv"
mkdir -p "$RUNS"

if [ -z "$TABLE_ONLY" ]; then  # TABLE_ONLY=1 rewrites the table from an existing CSV
rm -f "$CSV"

if [ ! -f "$RUNS/gpt/model.safetensors" ]; then
    echo "== training the base GPT (runs/gpt)"
    "$BUILD/gpt" train --out "$RUNS/gpt" --layers 4 --dim 128 --heads 4 --context 64 --batch 24 \
        --steps 1800 --lr 3e-3 --warmup 30 --eval-every 300
fi
if [ ! -f "$RUNS/vit-0-4/model.safetensors" ]; then
    echo "== training the base ViT on classes 0-4 (runs/vit-0-4)"
    "$BUILD/vit" train --out "$RUNS/vit-0-4" --classes 0-4 --layers 3 --dim 64 --heads 4 --patch 7 \
        --batch 128 --steps 1000 --lr 3e-3 --eval-every 500
fi

for m in $METHODS; do
    # VPT puts prompts among image patches, which a GPT does not have.
    if [ "$m" = vpt ]; then echo "== gpt: vpt does not apply"; else
    echo "== gpt finetune --method $m"
    "$BUILD/gpt" finetune --base "$RUNS/gpt" --out "$RUNS/gpt-$m" --method "$m" --steps "$GPT_STEPS" --results "$CSV"
    fi
    # Prompt tuning puts virtual tokens before token embeddings, which ViT does not have.
    if [ "$m" = prompt_tuning ]; then echo "== vit: prompt_tuning does not apply"; continue; fi
    echo "== vit finetune --method $m"
    "$BUILD/vit" finetune --base "$RUNS/vit-0-4" --out "$RUNS/vit-$m" --method "$m" --steps "$VIT_STEPS" --results "$CSV"
done
fi

{
    echo "# PEFT results"
    echo
    echo "Produced by \`make peft-results\` on $(date -u +%Y-%m-%d) ($(nproc) CPU threads, $(uname -m))."
    echo "GPT: byte-level, 4 layers x 128, trained on fortunes without songs-poems, fine-tuned"
    echo "$GPT_STEPS steps on songs-poems (metric: validation loss, nats/byte, lower is better)."
    echo "ViT: 3 layers x 64, trained on Fashion-MNIST classes 0-4, fine-tuned $VIT_STEPS steps on"
    echo "classes 5-9 with a new head trained in full (metric: test accuracy, higher is better)."
    echo "Training memory: peak tensor bytes above those alive when training began (weights of"
    echo "the frozen base and the dataset are not counted; gradients, optimizer state and"
    echo "activations are)."
    echo
    echo "| task | method | trainable params | all params | metric | before | after | ms/step | training memory (MB) |"
    echo "|---|---|---:|---:|---|---:|---:|---:|---:|"
    tail -n +2 "$CSV" | awk -F, '
        function commas(n,   s) { s = sprintf("%d", n); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); return s }
        { printf "| %s | %s | %s | %s | %s | %.4f | %.4f | %.1f | %.1f |\n", $1, $2, commas($3), commas($4), $6, $7, $8, $9, $10 }'
    echo
    # LoRA against full fine-tuning, per task.
    tail -n +2 "$CSV" | awk -F, '
        $2 == "full" { full_ms[$1] = $9; full_mb[$1] = $10 }
        $2 == "lora" { lora_ms[$1] = $9; lora_mb[$1] = $10 }
        END { for (t in lora_ms) if (t in full_ms)
            printf "%s: a LoRA step takes %.2fx the time of a full fine-tuning step and %.2fx its training memory.\n",
                   t, lora_ms[t] / full_ms[t], lora_mb[t] / full_mb[t] }'
} > "$OUT"
echo "== wrote $OUT"
cat "$OUT"
