#!/usr/bin/env bash
# The learning-rate finder against a grid (docs/diagnosis.md): every run scored by evaluate.py
# on the held-out split (tools/seeds.py). Takes about 40 minutes on a 2-core CPU.
#   python data_set/split_data.py ../shared/data/flower_photos_224 --dest /tmp/flowers3 --test 0.1 --link
#   python -c "from alexnet import shapes; shapes.make_shapes('data_set/demo_shapes')"
#   bash tools/lr_study.sh runs/lr_study
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/lr_study}
FLOWERS=${FLOWERS:-/tmp/flowers3}
SHAPES=${SHAPES:-data_set/demo_shapes}
# 1. the same time for every learning rate (--budget; --lr auto's range test counts in it)
for lr in 1e-4 4e-4 1e-3 3e-3 1e-2 auto; do
    python tools/seeds.py --out "$OUT/grid-flowers/lr-$lr" --seeds 0 -- --data "$FLOWERS" --img-size 112 --budget 90s --lr "$lr"
done
for lr in 1e-4 4e-4 1e-3 3e-3 1e-2 auto; do
    python tools/seeds.py --out "$OUT/grid-shapes/lr-$lr" --seeds 0 -- --data "$SHAPES" --img-size 112 --budget 45s --lr "$lr"
done
# 2. --lr auto against the recipe's own learning rate, two seeds, AdamW (the default recipe) and SGD
for opt in adamw sgd; do
    for lr in recipe auto; do
        extra=(); [ "$lr" = auto ] && extra=(--lr auto)
        python tools/seeds.py --out "$OUT/$opt-$lr" --seeds 0 1 -- --data "$FLOWERS" --img-size 112 --opt "$opt" "${extra[@]}"
    done
done
