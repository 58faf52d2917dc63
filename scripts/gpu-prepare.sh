#!/usr/bin/env bash
# Run on a machine with network access to PyPI, before a GPU check on a machine without
# it. Fetches into .whl/ the pure-Python wheels the GPU machine's image lacks (for its
# Python 3.12), and copies the MNIST files that multinet finds (--data-dir order:
# $MULTINET_DATA, the per-user cache, system folders) into .gpudata/. Both folders are
# ignored by git. A repository session then launches the check through its device tool:
#   run(command="MULTINET_DATA=$PWD/.gpudata bash scripts/gpu-check.sh",
#       carry=[".whl", ".gpudata"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl .gpudata && mkdir -p .whl .gpudata
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d .whl array-api-compat array-api-strict pooch platformdirs \
    "setuptools>=77"
mnist="$(python3 -c 'from multinet.data import locate; print(locate()["train_images"].parent)')"
cp "$mnist"/*-ubyte* .gpudata/
ls .whl .gpudata
