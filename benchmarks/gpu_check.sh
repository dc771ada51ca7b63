#!/bin/bash
# The GPU checks of one session (about 8 minutes on an H100): gsplat parity of the CPU rasterizer,
# then the GPU benchmark of the Blender scene at full resolution. Run on the device machine after
# benchmarks/gpu_prepare.sh here; results come back in $OUT.
set -o pipefail
source .gpu/gpu_env.sh || exit 1
OUT=${OUT:-/tmp/cocogs-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_rasterizer.py -k parity 2>&1 | tee "$OUT/parity.log"
python3 benchmarks/run.py .gpu/data/synthetic_defocus_dev --size gpu --steps "${STEPS:-3000}" --out "$OUT/bench" 2>&1 \
  | grep -v Warning | tail -n 40 | tee "$OUT/bench.log"
cp "$OUT"/bench/results.json "$OUT"/bench/results.md "$OUT"/bench/figure.png "$OUT"/ 2>/dev/null
rm -rf "$OUT/bench"  # only plain files two folders down come back
