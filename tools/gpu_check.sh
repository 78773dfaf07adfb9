#!/usr/bin/env bash
# The GPU measurements of device_data.py (training batches built on the GPU), in one run
# on a CUDA machine. Here first:  mkdir -p .gpu_data && cp -r ../shared/data/flower_photos_224 .gpu_data/
# (41 MiB; .gpu_data/ is ignored by git), then on the GPU machine, carrying .gpu_data:
#     OUT=/some/folder bash tools/gpu_check.sh
# It writes to $OUT: bench at batch 32 and 256 (tutorial path, the default with device
# batches, the same with --device-batches off, the model step alone, batch building alone),
# nvidia-smi utilisation sampled during the benches, and 10-epoch runs on the flowers with
# device batches on and off, seeds 0 and 1 (best top-1 in each log's last line), and
# nvjpeg.txt: TorchCodec's batched JPEG decoding on the GPU (decode_jpeg(list, device="cuda"))
# against one-at-a-time CPU decoding, bit-exactness included: the measurement behind
# decoding straight into device_data's resident images (the next step for the GPU path).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
FLOWERS=/tmp/gpu_check_flowers
rm -rf "$FLOWERS"
$PY data_set/split_data.py .gpu_data/flower_photos_224 --dest "$FLOWERS" --link > "$OUT/split.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
nvidia-smi dmon -s u -d 1 > "$OUT/dmon.txt" 2>&1 &
DMON=$!
for batch in 256 32; do
    $PY tools/bench.py --device cuda --data "$FLOWERS" --batch-size "$batch" --repeats 3 > "$OUT/bench_$batch.txt" 2>&1
    echo "bench $batch done at $(date +%s)" >> "$OUT/dmon_marks.txt"
done
kill $DMON || true
for seed in 0 1; do
    for mode in on off; do
        $PY train.py --data "$FLOWERS" --seed "$seed" --device-batches "$mode" --quiet \
            --output-dir "/tmp/gpu_check_runs/${mode}_$seed" --overwrite > "$OUT/train_${mode}_$seed.txt" 2>&1
    done
done
$PY - "$FLOWERS" > "$OUT/nvjpeg.txt" 2>&1 <<'PYEOF' || true
import statistics, sys, time
from pathlib import Path
import torch
from torchcodec.decoders import decode_jpeg
files = sorted(Path(sys.argv[1], "train").rglob("*.jpg"))[:512]
blobs = [f.read_bytes() for f in files]
cpu = [decode_jpeg(b, mode="RGB") for b in blobs]
for batch in (32, 128, 512):
    walls = {"cpu": [], "cuda": []}
    for _ in range(4):
        t0 = time.perf_counter(); [decode_jpeg(b, mode="RGB") for b in blobs[:batch]]; walls["cpu"].append(time.perf_counter() - t0)
        torch.cuda.synchronize(); t0 = time.perf_counter()
        gpu = decode_jpeg(blobs[:batch], mode="RGB", device="cuda"); torch.cuda.synchronize()
        walls["cuda"].append(time.perf_counter() - t0)
    worst = max((g.cpu().int() - c.int()).abs().max().item() for g, c in zip(gpu, cpu))
    print(f"batch {batch}: cpu {batch / statistics.median(walls['cpu'][1:]):.0f} img/s, cuda nvjpeg "
          f"{batch / statistics.median(walls['cuda'][1:]):.0f} img/s, largest pixel difference {worst}")
PYEOF
tail -n 3 "$OUT"/train_*.txt "$OUT"/bench_*.txt "$OUT"/nvjpeg.txt
