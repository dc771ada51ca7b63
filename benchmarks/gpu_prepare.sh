#!/bin/bash
# Prepare .gpu/ (ignored) for one GPU session: the kit from ../shared/gpu, stand-ins for xatlas and
# pymeshlab (imported by ns-export, absent there), the LPIPS weights, the plugin as a wheel, and the
# Blender scene without its depth maps (the device machine sees only
# this checkout; everything carried must stay under 64 MiB). Then, with the device tool:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
rm -rf .gpu && mkdir -p .gpu/torch_home/hub/checkpoints .gpu/data
cp -r "$SHARED"/gpu/. .gpu/
cp -r benchmarks/gpu_standins/. .gpu/  # import-only stand-ins for what nerfstudio's exporter imports
cp "$SHARED"/torch_home/hub/checkpoints/*.pth .gpu/torch_home/hub/checkpoints/
"${PYTHON:-python3}" -m pip wheel -q --no-deps -w .gpu/wheels .
mkdir -p .gpu/data/synthetic_defocus_dev
(cd "$SHARED"/data/synthetic_defocus_dev && tar cf - --exclude=depth .) | tar xf - -C .gpu/data/synthetic_defocus_dev
# for gpu_check.sh's stage 4: drinks at 390×260 (images_4 shrunk 4×: images_16) and the floor layout at 384×288
D=.gpu/data/real_defocus_drinks
mkdir -p "$D"/images_16 "$D"/sparse
cp "$SHARED"/data/real_defocus_drinks/poses_bounds.npy "$D"/
cp -r "$SHARED"/data/real_defocus_drinks/sparse/0 "$D"/sparse/
"${PYTHON:-python3}" - "$SHARED"/data/real_defocus_drinks/images_4 "$D"/images_16 <<'PY'
import sys
from pathlib import Path
from PIL import Image
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for p in sorted(src.iterdir()):
    im = Image.open(p).convert("RGB")
    im.resize((im.width // 4, im.height // 4), Image.BOX).save(dst / (p.stem + ".png"))
PY
"${PYTHON:-python3}" -m cocogs_nerfstudio.demo_scene .gpu/data/floor --layout floor --width 384 --height 288 --lens-samples 128
du -sh .gpu
