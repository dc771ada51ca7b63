#!/bin/bash
# A GPU session's checks, one command (planned for at most 8 minutes on one H100/H200, gsplat's
# kernel build included; each stage has a time limit, and all of them end by DEADLINE seconds
# (default 540, under the device tool's 600 s), so what ran comes back either way):
#   1. parity of the PyTorch rasterizer with gsplat's CUDA kernels (tests/test_rasterizer.py -k parity);
#   2. the real command lines on the Blender dev scene (400×300): ns-train cocogaussian (short, CoC
#      from step 50), ns-eval, cocogs-export, cocogs-refocus, a resume with --load-dir
#      (benchmarks/cli_check.py);
#   3. the GPU benchmark: baseline, cocogaussian, upper bound; step-time ratio on warm kernels, sharp
#      and defocus-preview fps at 1920 px wide, peak GPU memory, torch.profiler tables of a CoC step
#      and a preview appended to bench.log (benchmarks/run.py --size gpu --profile).
#   4. (only with STAGES containing 4) more scenes at a visible size: drinks (390×260) with and
#      without background_points, the floor layout of cocogs-demo-scene (384×288), --size gpu.
# STAGES picks stages (default "1 2 3"; once 1 and 2 have passed on a commit, "3 4" fits the time).
# BENCH_SET="key=value ..." passes CoCoGaussian settings to stage 3's benchmark (run.py --set), e.g.
# STAGES=3 BENCH_SET="num_coc_sets=2" for the step-time ratio of an option.
# Here: bash benchmarks/gpu_prepare.sh; then with the device tool:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=600)
# On a CPU (the test suite runs it so that it cannot rot), with small settings:
#   SCENE=path STEPS=20 CLI_STEPS=6 bash benchmarks/gpu_check.sh --cpu
# Files (at most 8, for the device tool) in $OUT: gpu.txt parity.log cli.log cli_check.json
# bench.log results.json results.md figure.png; stage 4 adds scenes.md figure_drinks.png figure_floor.png
# (run it without stages 1 and 2 to stay within 8). Exit status: 1 when a stage failed.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cocogs-gpu}
WORK=${WORK:-/tmp/cocogs-gpu-work}
mkdir -p "$OUT" "$WORK"
if [ "${1:-}" = "--cpu" ]; then
  PY=${PYTHON:-python3}
  SCENE=${SCENE:?SCENE= names the scene on the CPU}
  METHOD=${METHOD:-cocogaussian-small}
  BENCH_ARGS=(--allow-cpu --preview-width "${PREVIEW_WIDTH:-144}")
  # the time limits are the device's budget: on a CPU (a busy CI machine) only a hang should stop a stage
  : "${DEADLINE:=7200}" "${PARITY_TIMEOUT:=3600}" "${CLI_TIMEOUT:=3600}" "${BENCH_TIMEOUT:=3600}" "${SCENE_TIMEOUT:=3600}"
  echo "CPU run of the GPU checks ($(nproc) cores)" | tee "$OUT/gpu.txt"
else
  source .gpu/gpu_env.sh || exit 1
  PY=python3
  SCENE=${SCENE:-.gpu/data/synthetic_defocus_dev}
  METHOD=${METHOD:-cocogaussian}
  BENCH_ARGS=()
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
git rev-parse --short HEAD 2>/dev/null | sed 's/^/commit /' | tee -a "$OUT/gpu.txt"
status=0
STAGES=" ${STAGES:-1 2 3} "
DEADLINE=${DEADLINE:-540}
stage() { echo "=== $1 ($((SECONDS))s so far)"; }
limit() {  # a stage's time limit: its own, or what is left before DEADLINE (at least 10 s)
  local rest=$((DEADLINE - SECONDS))
  if [ "$rest" -lt "$1" ]; then echo $((rest > 10 ? rest : 10)); else echo "$1"; fi
}

if [[ $STAGES == *" 1 "* ]]; then
stage "1 rasterizer parity with gsplat"
# plain pytest: not pyproject's addopts (-n auto: the device may lack pytest-xdist)
timeout "$(limit "${PARITY_TIMEOUT:-200}")" "$PY" -m pytest -q -o addopts= -p no:xdist -p no:dash -p no:cacheprovider \
  tests/test_rasterizer.py -k parity 2>&1 \
  | tail -n 30 | tee "$OUT/parity.log" || status=1
fi

if [[ $STAGES == *" 2 "* ]]; then
stage "2 command lines: ns-train, ns-eval, cocogs-export, cocogs-refocus, resume"
rm -rf "$WORK/cli"
timeout "$(limit "${CLI_TIMEOUT:-180}")" "$PY" benchmarks/cli_check.py "$SCENE" --method "$METHOD" --steps "${CLI_STEPS:-200}" \
  --coc-start "${CLI_COC_START:-50}" --out "$WORK/cli" 2>&1 | tee "$OUT/cli.log" || status=1
cp "$WORK/cli/cli_check.json" "$OUT/" 2>/dev/null
fi

if [[ $STAGES == *" 3 "* ]]; then
stage "3 benchmark: baseline, cocogaussian, upper bound"
rm -rf "$WORK/bench"
timeout "$(limit "${BENCH_TIMEOUT:-420}")" "$PY" benchmarks/run.py "$SCENE" --size gpu --steps "${STEPS:-1500}" --out "$WORK/bench" \
  --profile "${BENCH_ARGS[@]}" $(for kv in ${BENCH_SET:-}; do printf -- '--set %s ' "$kv"; done) > "$WORK/bench.log" 2>&1 || status=1
grep -v -i warning "$WORK/bench.log" | tail -n 40 > "$OUT/bench.log"
cat "$WORK"/bench/profile_cocogaussian-seed*.txt >> "$OUT/bench.log" 2>/dev/null  # torch.profiler tables
cp "$WORK"/bench/results.json "$WORK"/bench/results.md "$WORK"/bench/figure.png "$OUT"/ 2>/dev/null  # partial too
fi

if [[ $STAGES == *" 4 "* ]]; then
stage "4 more scenes: drinks with and without background points, the floor layout"
DATA=${DATA4:-.gpu/data}
bench4() {  # name, scene, extra run.py arguments
  local name=$1 scene=$2
  shift 2
  rm -rf "$WORK/s4_$name"
  timeout "$(limit "${SCENE_TIMEOUT:-200}")" "$PY" benchmarks/run.py "$scene" --size gpu --steps "${STEPS4:-3000}" \
    --out "$WORK/s4_$name" "${BENCH_ARGS[@]}" "$@" > "$WORK/s4_$name.log" 2>&1 || status=1
  { echo "## $name: $scene $*"; cat "$WORK/s4_$name/results.md" 2>/dev/null || grep -v -i warning "$WORK/s4_$name.log" | tail -n 8; } >> "$OUT/scenes.md"
}
bench4 drinks_background "$DATA/real_defocus_drinks" --downscale "${DRINKS_DOWNSCALE:-16}" --variants baseline,cocogaussian \
  --data-set background_points=4000
cp "$WORK/s4_drinks_background/figure.png" "$OUT/figure_drinks.png" 2>/dev/null
bench4 drinks_sfm_only "$DATA/real_defocus_drinks" --downscale "${DRINKS_DOWNSCALE:-16}" --variants cocogaussian
bench4 floor "$DATA/floor"
cp "$WORK/s4_floor/figure.png" "$OUT/figure_floor.png" 2>/dev/null
fi

stage "summary"
grep -E "passed|failed|skipped|error" "$OUT/parity.log" 2>/dev/null | tail -n 1
grep -E "^(ok|FAIL)|^cli_check" "$OUT/cli.log" 2>/dev/null
cat "$OUT/results.md" 2>/dev/null || tail -n 15 "$OUT/bench.log" 2>/dev/null
grep -E "^## |PSNR|psnr" "$OUT/scenes.md" 2>/dev/null | head -n 30
echo "gpu_check: $([ $status = 0 ] && echo all stages passed || echo a stage FAILED) in ${SECONDS}s"
exit $status
