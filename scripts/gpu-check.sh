#!/usr/bin/env bash
# Run ON THE LENT GPU MACHINE (device tool), after scripts/gpu-prepare.sh here:
#   run(command="bash scripts/gpu-check.sh", carry=[".whl", ".gpudata"], timeout_s=540)
# Installs multinet and its missing pure-Python dependencies, then runs the parity suite
# on CuPy and JAX-on-GPU, `multinet parity` and `multinet bench --peer torch`; results go
# to $OUT (the tables are also printed last). Reads the GPU's state, changes nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
export PYTHONUNBUFFERED=1
# JAX would take 75% of the GPU's memory up front, leaving CuPy little in one process.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
site=/tmp/multinet-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
    --target "$site" . || exit 1
export PYTHONPATH="$site"
export MULTINET_DATA="$PWD/.gpudata"

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv; python3 -c "import cupy, jax; print('cupy', cupy.__version__, 'jax',
jax.__version__, jax.devices())"; } 2>&1 | tee "$OUT/device.txt"
python3 -m multinet backends | tee "$OUT/backends.txt"

timeout 240 python3 -m pytest -q -rs -p no:cacheprovider tests/test_parity.py \
    tests/test_network.py tests/test_oracles.py -k "cupy or jax" 2>&1 | tail -n 30 \
    | tee "$OUT/pytest.txt"
timeout 120 python3 -m multinet parity --json > "$OUT/parity.json" 2> "$OUT/parity.err"
timeout 120 python3 -m multinet parity 2>&1 | tee "$OUT/parity.txt"
timeout 200 python3 -m multinet bench --backend cupy --backend jax --backend numpy \
    --peer torch --json > "$OUT/bench.json" 2> "$OUT/bench.err"
python3 - "$OUT/bench.json" <<'PY' | tee "$OUT/bench.txt"
import json, sys
report = json.load(open(sys.argv[1]))
for r in report["rows"]:
    if "median_seconds" in r:
        print(f"{r['backend'][:12]:<12} {r['workload']:<17} {r['dtype']:<8} "
              f"{r['median_seconds'] * 1e3:9.3f} ms  x floor {r.get('x_floor', 0):7.2f}  "
              f"x torch {r.get('x_peer', 0):5.2f}  first {r['first_seconds'] * 1e3:8.1f} ms")
print(*report["notes"], sep="\n")
PY
