#!/usr/bin/env bash
# Builds .venv-arcgis: ESRI's arcgis.learn with CPU-run torch, fastai 1.0.x and GDAL's bindings.
# Usage: tests/arcgis/setup_venv.sh [VENV_DIR]   (run from the repository root; needs root for apt)
set -euo pipefail
VENV=${1:-.venv-arcgis}
PYTHON=${PYTHON:-python3}
# The versions this harness was verified with; override to try others.
TORCH=${TORCH:-torch==2.14.1}
TORCHVISION=${TORCHVISION:-torchvision==0.29.1}
ARCGIS=${ARCGIS:-arcgis==2.4.4}
FASTAI=${FASTAI:-fastai==1.0.61}

if ! command -v gdal-config >/dev/null; then
    apt-get update && apt-get install -y libgdal-dev
fi
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip "setuptools<80" wheel
# torch first and alone: a later unpinned requirement must not pull another build.
$PIP install "$TORCH" "$TORCHVISION"
# arcgis 2.4 needs numpy >= 2.3; it goes in before GDAL so that gdal_array builds against it.
$PIP install "numpy>=2.3,<3"
# GDAL's bindings must match the system library; no build isolation, so they see that numpy.
$PIP install --no-build-isolation "GDAL==$(gdal-config --version)"
$PIP install "$ARCGIS" "$FASTAI" "$TORCH" "$TORCHVISION" six ipython \
    opencv-python-headless timm scikit-learn matplotlib spacy
"$VENV/bin/python" -c "import arcgis, fastai, torch, torchvision; from osgeo import gdal; \
print('arcgis', arcgis.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__, \
'fastai', fastai.__version__, 'gdal', gdal.__version__)"
touch "$VENV/.installed"
