#!/usr/bin/env bash
# Set up a virtual environment, render the demo scene, train CoCoGaussian on it (CPU is fine) and
# evaluate the sharp test views. Re-running reuses the environment and the scene.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-600}
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
if ! python -c "import cocogs_nerfstudio, nerfstudio" 2>/dev/null; then
  python -m pip install -q --upgrade pip
  python -m pip install -q -e ".[test]"
fi
# LPIPS needs torchvision's AlexNet weights; use the offline copy when it is there
if [ -z "${TORCH_HOME:-}" ] && [ -d ../shared/torch_home ]; then export TORCH_HOME=$(cd ../shared/torch_home && pwd); fi
[ -f demo/scene/transforms.json ] || cocogs-demo-scene demo/scene
ns-train cocogaussian-small --data demo/scene --output-dir demo/outputs --experiment-name scene \
  --timestamp cocogaussian --max-num-iterations "$STEPS" --viewer.quit-on-train-completion True \
  --vis "${VIS:-viewer}"
ns-eval --load-config demo/outputs/scene/cocogaussian-small/cocogaussian/config.yml \
  --output-path demo/outputs/eval_cocogaussian.json --render-output-path demo/outputs/renders
python - <<'PY'
import json
r = json.load(open("demo/outputs/eval_cocogaussian.json"))["results"]
print("sharp test views:", {k: round(v, 4) for k, v in r.items() if k in ("psnr", "ssim", "lpips")})
PY
