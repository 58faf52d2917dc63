#!/usr/bin/env bash
# Run HERE (the CPU machine) before calling the device tool: fetches the pure-Python
# wheels the GPU machine lacks into .whl/ and copies MNIST into .gpudata/ (both ignored
# by git; name both in the device call's `carry`).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl .gpudata && mkdir -p .whl .gpudata
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d .whl array-api-compat array-api-strict pooch platformdirs
cp ../shared/data/mnist/*.gz .gpudata/
ls .whl .gpudata
