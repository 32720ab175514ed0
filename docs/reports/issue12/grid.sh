#!/usr/bin/env bash
# Issue 12 grid: MLP vs ResNet-MLP (all 115 summary columns, or SelectKBest K of them) vs CNN (MFCC
# frames; no SelectKBest variant), on the EmoBox folds (speech only) and the speech + song random split.
# Run from the repo root, one run at a time:
#   bash docs/reports/issue12/grid.sh [FAMILY:K ...]      e.g. mlp:0 resnet_mlp:20 cnn   (K 0 = all columns)
# Same settings for every model: 60-epoch cap, early stopping on validation accuracy (patience 15),
# seed 42, no augmented copies, no calibration, no embedding. Features come from ./cache when present.
set -euo pipefail
SPEECH=${SPEECH:-../shared/datasets/ravdess-speech-16k}
SONG=${SONG:-../shared/datasets/ravdess-song-16k}
OUT=docs/reports/issue12
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(mlp:0 resnet_mlp:0 cnn mlp:20 resnet_mlp:20 mlp:40 resnet_mlp:40 mlp:80 resnet_mlp:80)
COMMON=(--epochs 60 --seed 42 --no-g711)
run() {  # report folder, extra args...
    local name=$1; shift
    echo "== $name: $*"
    /usr/bin/time -f "$name: %U s user + %S s sys, %e s wall" nice -n 10 \
        .venv/bin/python -m emostream.train evaluate "${COMMON[@]}" "$@" --out "$OUT/$name" 2>&1 \
        | grep --line-buffered -v -e '━' -e 'oneDNN' -e 'absl::InitializeLog' -e 'fully_quantize' -e 'retracing' || true
}
for item in "${RUNS[@]}"; do
    family=${item%%:*}
    k=${item#*:}; [ "$k" = "$item" ] && k=0
    if [ "$family" = cnn ]; then name=cnn; select=(); else
        name=${family}_$([ "$k" = 0 ] && echo all || echo "k$k"); select=(--select-k "$k"); fi
    run "$name" --data "$SPEECH" --song '' --model "$family" "${select[@]}" --protocol emobox
    run "$name" --data "$SPEECH" --song "$SONG" --model "$family" "${select[@]}" --protocol random_speech_song
done
