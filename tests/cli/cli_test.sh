#!/usr/bin/env bash
# The example programs (build/gpt, build/vit) tried as a careful user would: bad flags, bad
# files, kills, two runs on one folder and a full disk. Each case runs one command and asserts
# its exit status and a piece of its message. Run by `make test`; takes a few seconds.
#
#   tests/cli/cli_test.sh [BUILD]      (BUILD: the folder holding gpt and vit; default build)
#
# The disk-full cases mount a 200 KB tmpfs, which needs root; elsewhere they are skipped (and
# say so). Data: a text file and a fortunes-like folder made here, and a tiny IDX image set.
set -u
BUILD=$(cd "${1:-build}" && pwd)
GPT="$BUILD/gpt" VIT="$BUILD/vit"
WORK=$(mktemp -d)
MNT="$WORK/full"
cleanup() {
    [ -n "${BG:-}" ] && kill -9 "$BG" 2>/dev/null
    mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK" || exit 1
passed=0 failed=0 skipped=0

# expect NAME STATUS TEXT command...: runs the command, then checks its exit status (a number, or
# "nonzero") and that its output (stdout and stderr) contains TEXT.
expect() {
    local name=$1 want=$2 text=$3
    shift 3
    "$@" > out.txt 2>&1
    local rc=$?
    local ok=1
    if [ "$want" = nonzero ]; then [ $rc -ne 0 ] || ok=0; else [ $rc -eq "$want" ] || ok=0; fi
    grep -qF -- "$text" out.txt || ok=0
    if [ $ok = 1 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL $name: wanted status $want and '$text'; got status $rc and:"
        sed 's/^/    /' out.txt | tail -8
    fi
}
# check NAME CONDITION...: a shell test that must hold.
check() {
    local name=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL $name: $*"; fi
}

# ---- data ----
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog."; done > text.txt
mkdir fortunes
for c in alpha beta; do
    for i in $(seq 1 60); do printf '%s fortune %d, short and sweet.\n%%\n' "$c" "$i"; done > fortunes/$c
done
be32() { printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"; }
# idx_set DIR PREFIX N [LAST_LABEL]: N 8x8 images, labels 0..9 in turn (the last one LAST_LABEL).
idx_set() {
    local dir=$1 prefix=$2 n=$3 last=${4:-}
    mkdir -p "$dir"
    { printf '\x00\x00\x08\x03'; be32 "$n"; be32 8; be32 8; head -c $((n * 64)) /dev/urandom; } > "$dir/$prefix-images-idx3-ubyte"
    {
        printf '\x00\x00\x08\x01'; be32 "$n"
        for i in $(seq 0 $((n - 2))); do printf "\\x$(printf %02x $((i % 10)))"; done
        printf "\\x$(printf %02x "${last:-$(((n - 1) % 10))}")"
    } > "$dir/$prefix-labels-idx1-ubyte"
}
idx_set images train 60
idx_set images t10k 20
idx_set bad_labels train 60 255
idx_set bad_labels t10k 20

SMALL="--device cpu --threads 1 --layers 1 --dim 16 --heads 2 --context 16 --batch 2 --eval-batches 1 --eval-every 0"
VSMALL="--device cpu --threads 1 --layers 1 --dim 8 --heads 2 --patch 4 --batch 4 --eval-every 0"
expect "train a small GPT" 0 "saved run/model.safetensors after step 3" "$GPT" train --data text.txt --out run --steps 3 $SMALL
expect "finetune with LoRA" 0 "adapter saved in ft/adapter" "$GPT" finetune --base run --data fortunes --domain beta --out ft --steps 2 --batch 2 --eval-batches 1 --device cpu
check "adapter_config.json: lora_alpha an integer, as peft writes it" grep -q '"lora_alpha": 16,' ft/adapter/adapter_config.json
check "adapter_config.json: inference_mode true, as peft writes it" grep -q '"inference_mode": true' ft/adapter/adapter_config.json
expect "finetune LoRA over a bf16 base" 0 "bf16 base: 4 Linears and the head in bf16" "$GPT" finetune --base run --data fortunes --domain beta --out ftb --steps 2 --batch 2 --eval-batches 1 --device cpu --base-dtype bf16
expect "finetune --base-dtype bf16 --method full" 1 "--base-dtype bf16 freezes every weight in bf16, and --method full trains them" "$GPT" finetune --base run --data fortunes --domain beta --out z --base-dtype bf16 --method full --device cpu
expect "finetune --method qlora trains with paged AdamW, as qlora.py" 0 "optimizer: PagedAdamW" "$GPT" finetune --base run --data fortunes --domain beta --out ftq --method qlora --steps 2 --batch 2 --eval-batches 1 --device cpu
expect "finetune --optim paged_adamw_8bit" 0 "PagedAdamW8bit state: " "$GPT" finetune --base run --data fortunes --domain beta --out ft8 --optim paged_adamw_8bit --steps 2 --batch 2 --eval-batches 1 --device cpu
expect "finetune --optim unknown" 1 "--optim: unknown optimizer 'adam8'; use adamw, paged_adamw_32bit, adamw_8bit or paged_adamw_8bit" "$GPT" finetune --base run --data fortunes --domain beta --out z --optim adam8 --device cpu
expect "finetune --base-dtype f16" 1 "--base-dtype f16 is not f32 or bf16" "$GPT" finetune --base run --data fortunes --domain beta --out z --base-dtype f16 --device cpu
expect "finetune --method qlora on a bf16 base" 1 "--method qlora quantizes the f32 Linears to 4 bits, and --base-dtype bf16 leaves none" "$GPT" finetune --base run --data fortunes --domain beta --out z --base-dtype bf16 --method qlora --device cpu
expect "finetune bf16 base with a method that trains the embedding" 1 "now trains and the copy would not follow it" "$GPT" finetune --base run --data fortunes --domain beta --out ftz --base-dtype bf16 --method longlora --steps 1 --batch 2 --eval-batches 1 --device cpu
expect "train a small ViT" 0 "saved vrun/model.safetensors after step 2" "$VIT" train --data images --out vrun --steps 2 $VSMALL
expect "vit finetune --optim adamw_8bit" 0 "optimizer: AdamW8bit" "$VIT" finetune --base vrun --data images --out vft8 --classes 0-9 --steps 1 --batch 4 --device cpu --optim adamw_8bit
expect "gpt train --precision bf16" 0 "precision: bf16 products, f32 weights and optimizer" "$GPT" train --data text.txt --out runb --steps 2 $SMALL --precision bf16
expect "gpt train --precision f16" 1 "--precision f16 is not f32 or bf16" "$GPT" train --data text.txt --out z --steps 2 $SMALL --precision f16
expect "gpt finetune --method full --precision bf16" 0 "precision: bf16 products" "$GPT" finetune --base run --data fortunes --domain beta --out ftfb --method full --steps 2 --batch 2 --eval-batches 1 --device cpu --precision bf16
expect "vit train --precision bf16" 0 "saved vrunb/model.safetensors after step 2" "$VIT" train --data images --out vrunb --steps 2 $VSMALL --precision bf16
expect "vit finetune LoRA over a bf16 base" 0 "bf16 base: 6 Linears in bf16" "$VIT" finetune --base vrun --data images --out vftb --classes 0-9 --steps 1 --batch 4 --device cpu --base-dtype bf16

# ---- zeros: no SIGFPE ----
expect "--heads 0" 1 "--heads must be positive, not 0" "$GPT" train --data text.txt --out z --steps 1 $SMALL --heads 0
expect "vit --patch 0" 1 "--patch must be positive, not 0" "$VIT" train --data images --out z --steps 1 $VSMALL --patch 0
expect "vit --patch 3 (28 % 3)" 1 "image size 8 is not a multiple of the patch size 3" "$VIT" train --data images --out z --steps 1 $VSMALL --patch 3
cp -r run cfg
sed -i 's/"n_head": 2/"n_head": 0/' cfg/config.json
expect "n_head 0 in config.json" 1 "heads (n_head) must be positive, not 0" "$GPT" eval --data text.txt --out cfg --device cpu
cp -r vrun vcfg
sed -i 's/"patch_size": 4/"patch_size": 0/' vcfg/config.json
expect "patch_size 0 in config.json" 1 "patch (patch_size) must be positive, not 0" "$VIT" eval --data images --out vcfg --device cpu
cp vrun/config.json vcfg/config.json && sed -i 's/"num_attention_heads": 2/"num_attention_heads": 0/' vcfg/config.json
expect "num_attention_heads 0 in config.json" 1 "num_attention_heads) must be positive" "$VIT" eval --data images --out vcfg --device cpu
check "no folder made by refused runs" test ! -e z

# ---- sizes the machine cannot hold ----
expect "--layers 1000000000" 1 "GB; the machine has" "$GPT" train --data text.txt --out z --steps 1 $SMALL --layers 1000000000
expect "--batch 1000000000" 1 "Use a smaller --batch" "$GPT" train --data text.txt --out z --steps 1 $SMALL --batch 1000000000
cp run/config.json cfg/config.json && sed -i 's/"n_layer": 1/"n_layer": 1000000000/' cfg/config.json
expect "n_layer 1000000000 in config.json" 1 "GB; the machine has" "$GPT" eval --data text.txt --out cfg --device cpu
expect "vit --batch 1000000000" 1 "Use a smaller --batch" "$VIT" train --data images --out z --steps 1 $VSMALL --batch 1000000000

# ---- nonsense that used to succeed ----
expect "--batch 0" 1 "--batch must be positive, not 0" "$GPT" train --data text.txt --out z --steps 1 $SMALL --batch 0
expect "eval --batch 0" 1 "--batch must be positive, not 0" "$GPT" eval --data text.txt --out run --device cpu --batch 0
expect "--lr nan" 1 "--lr cannot be 'nan'" "$GPT" train --data text.txt --out z --steps 1 $SMALL --lr nan
expect "finetune --lr nan" 1 "--lr cannot be 'nan'" "$GPT" finetune --base run --data fortunes --domain beta --out z --lr nan
expect "--temperature -1" 1 "--temperature must be at least 0, not -1" "$GPT" sample --out run --device cpu --temperature -1
expect "--temperature nan" 1 "--temperature cannot be 'nan'" "$GPT" sample --out run --device cpu --temperature nan
expect "--top-p nan" 1 "--top-p cannot be 'nan'" "$GPT" sample --out run --device cpu --top-p nan
expect "--top-p 0" 1 "--top-p must be in (0, 1], not 0" "$GPT" sample --out run --device cpu --top-p 0
expect "--top-k -5" 1 "--top-k must be at least 0, not -5" "$GPT" sample --out run --device cpu --top-k -5
expect "--tokens -1" 1 "--tokens must be positive, not -1" "$GPT" sample --out run --device cpu --tokens -1
expect "IDX label 255" 1 "run up to 255 but 245 classes below it never occur" "$VIT" train --data bad_labels --out z --steps 1 $VSMALL
expect "--classes 0-20 on 10 classes" 1 "--classes 0-20, but the data's classes are 0-9" "$VIT" train --data images --out z --steps 1 $VSMALL --classes 0-20
expect "--classes x-y" 1 "--classes must be 'all' or a range lo-hi" "$VIT" train --data images --out z --steps 1 $VSMALL --classes x-y
cp run/config.json cfg/config.json && sed -i 's/"layer_norm_epsilon": [0-9.e-]*/"layer_norm_epsilon": -1/' cfg/config.json
expect "negative layer_norm_epsilon" 1 "the norm epsilon must be a positive number, not -1" "$GPT" eval --data text.txt --out cfg --device cpu
cp run/config.json cfg/config.json && sed -i 's/"gelu_new"/"relu"/' cfg/config.json
expect "unknown activation_function" 1 "\"activation_function\" \"relu\" is not supported" "$GPT" eval --data text.txt --out cfg --device cpu
expect "a loss that turns NaN" 1 "at step 2 is" "$GPT" train --data text.txt --out nan --steps 4 $SMALL --lr 1e30 --warmup 0
check "a NaN run saves no model" test ! -e nan/model.safetensors -a ! -e nan/checkpoint.safetensors
check "z was never created" test ! -e z

# ---- metrics.csv ----
"$GPT" train --data text.txt --out long --steps 100000 --save-every 0 $SMALL > /dev/null 2>&1 &
BG=$!
sleep 1.5
expect "a second run on the same --out" 1 "is in use by another run (pid $BG)" "$GPT" train --data text.txt --out long --steps 3 $SMALL --resume
kill -9 $BG; wait $BG 2>/dev/null; BG=
check "metrics.csv survives kill -9" test "$(grep -c train_loss long/metrics.csv)" -gt 2
cp run/metrics.csv before.csv
expect "a fresh run into a finished folder" 1 "already holds a run (checkpoint.safetensors); pass --resume" "$GPT" train --data text.txt --out run --steps 3 $SMALL
check "the refused run left metrics.csv as it was" cmp -s before.csv run/metrics.csv
expect "a failed start (bad flag value)" 1 "--dim must be positive" "$GPT" train --data text.txt --out run --steps 3 $SMALL --dim -4 --resume
check "the failed start left metrics.csv as it was" cmp -s before.csv run/metrics.csv
"$GPT" train --data text.txt --out res --steps 6 --save-every 2 --stop-at 4 $SMALL > /dev/null 2>&1
printf '5,train_loss,9\n5,lr,1\n' >> res/metrics.csv  # rows logged after the last checkpoint (step 4)
expect "--resume" 0 "resumed from step 4" "$GPT" train --data text.txt --out res --steps 6 $SMALL --resume
check "resumed metrics.csv holds each step once" test "$(grep train_loss res/metrics.csv | cut -d, -f1 | tr '\n' ' ')" = "1 2 3 4 5 6 "
check "resumed metrics.csv keeps one header" test "$(grep -c '^step,metric,value$' res/metrics.csv)" = 1
"$GPT" train --data text.txt --out res8 --steps 6 --save-every 2 --stop-at 4 $SMALL --optim adamw_8bit > /dev/null 2>&1
expect "--resume with another --optim" 1 "the same --optim" "$GPT" train --data text.txt --out res8 --steps 6 $SMALL --resume
expect "--resume with the same --optim adamw_8bit" 0 "resumed from step 4" "$GPT" train --data text.txt --out res8 --steps 6 $SMALL --resume --optim adamw_8bit

# ---- temporaries, --resume and finished folders ----
sleep 0 & DEAD=$!; wait $DEAD
head -c 5000 /dev/zero > run/checkpoint.safetensors.tmp.$DEAD
expect "stale temporaries removed" 0 "removed run/checkpoint.safetensors.tmp.$DEAD" "$GPT" train --data text.txt --out run --steps 4 $SMALL --resume
check "the stale temporary is gone" test ! -e run/checkpoint.safetensors.tmp.$DEAD
expect "--resume without a checkpoint" 0 "holds no checkpoint.safetensors: starting from step 1" "$GPT" train --data text.txt --out fresh --steps 2 $SMALL --resume
expect "--overwrite a finished folder" 0 "--overwrite: starting over in run" "$GPT" train --data text.txt --out run --steps 2 $SMALL --overwrite
check "--overwrite restarted metrics.csv" test "$(grep -c train_loss run/metrics.csv)" = 2

# ---- messages ----
expect "unknown subcommand" 2 "unknown command 'trian'; the commands are train, eval, sample, finetune and methods" "$GPT" trian
expect "vit unknown subcommand" 2 "unknown command 'evl'" "$VIT" evl
echo '{"model_type": "gpt2", "n_embd": ' > cfg/config.json
expect "invalid JSON names the file" 1 "cfg/config.json: GPTConfig::from_hf_json: not valid JSON" "$GPT" eval --data text.txt --out cfg --device cpu
cp run/config.json cfg/config.json && sed -i 's/"n_head": 2/"n_head": "2"/' cfg/config.json
expect "a key of the wrong type" 1 "cfg/config.json: GPTConfig::from_hf_json: \"n_head\" must be an integer, not \"2\"" "$GPT" eval --data text.txt --out cfg --device cpu
mkdir huge && cp images/t10k-* huge/ && { printf '\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff'; } > huge/train-images-idx3-ubyte && cp images/train-labels-idx1-ubyte huge/
expect "IDX dims 0xFFFFFFFF" 1 "promises 4294967295 x 4294967295 x 4294967295 values" "$VIT" train --data huge --out z --steps 1 $VSMALL
expect "missing fortunes category" 1 "--holdout gamma: read_fortunes: no category 'gamma' in fortunes; it has: alpha, beta" "$GPT" train --data fortunes --holdout gamma --out z --steps 1 $SMALL

# ---- a full disk ----
if mkdir -p "$MNT" && mount -t tmpfs -o size=200k tmpfs "$MNT" 2>/dev/null; then
    expect "train into a 200 KB disk" 0 "saved $MNT/g/model.safetensors" "$GPT" train --data text.txt --out "$MNT/g" --steps 2 $SMALL
    cp "$MNT/g/checkpoint.safetensors" ck.before && cp "$MNT/g/config.json" cfg.before
    # Fill the disk, then free 40 KB: room for the lock and metrics.csv, not for a checkpoint.
    dd if=/dev/zero of="$MNT/fill" bs=1k count=400 > /dev/null 2>&1
    truncate -s -40K "$MNT/fill"
    expect "disk full at the checkpoint" 1 "cannot write $MNT/g/checkpoint.safetensors: write to $MNT/g/checkpoint.safetensors.tmp." "$GPT" train --data text.txt --out "$MNT/g" --steps 4 $SMALL --resume
    check "the previous checkpoint is intact" cmp -s ck.before "$MNT/g/checkpoint.safetensors"
    check "the previous config.json is intact" cmp -s cfg.before "$MNT/g/config.json"
    check "no 0-byte file left" test -z "$(find "$MNT/g" -type f -size 0)"
    check "no temporary left" test -z "$(find "$MNT/g" -name '*.tmp*')"
    check "the message says why" grep -qF "No space left on device" out.txt
    rm -f "$MNT/fill" && dd if=/dev/zero of="$MNT/fill" bs=1k count=400 > /dev/null 2>&1
    truncate -s -40K "$MNT/fill"
    # Rank 256: a 64 KB adapter.
    expect "disk full at the adapter" 1 "cannot write $MNT/a/adapter/adapter_model.safetensors" "$GPT" finetune --base run --data fortunes --domain beta --out "$MNT/a" --rank 256 --steps 1 --batch 2 --eval-batches 1 --device cpu
    check "the message says why" grep -qF "No space left on device" out.txt
    check "no 0-byte adapter file" test -z "$(find "$MNT/a" -type f -size 0)"
    check "no adapter temporary left" test -z "$(find "$MNT/a" -name '*.tmp*')"
    rm -f "$MNT/fill"
    umount "$MNT"
else
    skipped=$((skipped + 1))
    echo "SKIP the disk-full cases: cannot mount a tmpfs here (they need root)"
fi

echo "cli tests: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
