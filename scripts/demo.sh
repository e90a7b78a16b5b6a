#!/usr/bin/env bash
# The main job. With a display: napari with the plugin docked and a sample open.
# Without one (a server, CI): the command-line tool segments the samples and scores them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$(uname)" = Darwin ]; then
  exec .venv/bin/python scripts/demo_gui.py
fi
echo "No display: segmenting the samples with the command-line tool instead of opening napari."
out=demo_output
.venv/bin/napari-unet segment sample_data/nuclei_2d.tif sample_data/nuclei_3d.tif \
  sample_data/nuclei_timelapse.tif -o "$out" --overwrite
for name in nuclei_2d nuclei_3d nuclei_timelapse; do
  .venv/bin/python scripts/score.py "sample_data/${name}_truth.tif" "$out/${name}_labels.tif"
done
