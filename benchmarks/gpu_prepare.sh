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
du -sh .gpu
