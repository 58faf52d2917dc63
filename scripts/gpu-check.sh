#!/usr/bin/env bash
# The GPU check: which devices and backends there are, the parity suites of every
# backend that runs here (CuPy, JAX and PyTorch on the GPU where there is one), the
# parity of captured steps (CUDA graphs) against eager ones (tests/test_capture.py), the
# torchvision comparison, `multinet parity` and `multinet bench` (eager and captured rows
# beside both native peers). It runs anywhere: on a machine without a GPU the CuPy and
# captured parts skip with their reason and JAX runs on the CPU, so CI runs it
# (`--quick`) on every submission and it cannot rot unnoticed.
#
#   bash scripts/gpu-check.sh [--quick]
#
# Results go to $OUT (else a new temporary folder, named at the start): device.txt,
# backends.txt, pytest.txt, parity.json, parity.txt, bench.json, bench.txt, summary.txt.
# The data come from $MULTINET_DATA or multinet's normal search order; without the full
# files, the committed sample (tests/data/mnist-sample) is used and the results say so.
# Exits non-zero if any step failed (a skip is not a failure). Reads the GPU's state and
# changes nothing. On an H200 the full check should take about 5 minutes; --quick took
# 3.6 on a 2-core CPU shared with other work (2026-12-06).
#
# Where multinet is not installed (the lent GPU machine), it is installed first into
# /tmp/multinet-site, with the wheels in .whl/ that scripts/gpu-prepare.sh fetched.
set -uo pipefail
quick=0
case "${1:-}" in
    --quick) quick=1 ;;
    "") ;;
    *) echo "usage: bash scripts/gpu-check.sh [--quick]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
echo "gpu-check: results in $OUT"
export PYTHONUNBUFFERED=1
# JAX would take 75% of the GPU's memory up front, leaving CuPy and PyTorch little.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY="${PYTHON:-python3}"
failed=()
step() {  # step NAME COMMAND...: run, keep going, remember failures
    local name="$1"; shift
    "$@"
    local rc=$?
    [ "$rc" -eq 0 ] || failed+=("$name (exit $rc)")
    return 0
}

if ! "$PY" -c "from multinet.registry import backend_names; assert backend_names()" \
        2>/dev/null; then
    site=/tmp/multinet-site
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" .whl/*.whl || exit 1
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
        --upgrade --target "$site" . || exit 1
fi

data_args=()
if ! "$PY" -m multinet data where >/dev/null 2>&1; then
    data_args=(--data-dir tests/data/mnist-sample --no-verify)
    echo "note: full MNIST not found; using the committed 2,560-image sample" \
        | tee "$OUT/data-note.txt"
fi

{
    date -u
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    else
        echo "no NVIDIA GPU here (nvidia-smi not found)"
    fi
    "$PY" - <<'PY'
import importlib, platform
print("python", platform.python_version(), platform.machine(), platform.processor())
for name, devices in (("cupy", lambda m: m.cuda.runtime.getDeviceCount()),
                      ("jax", lambda m: m.devices()),
                      ("torch", lambda m: m.cuda.get_device_name() if m.cuda.is_available()
                       else "no CUDA")):
    try:
        module = importlib.import_module(name)
        print(name, module.__version__, devices(module))
    except Exception as exc:  # report and go on: this is an inventory
        print(name, "unavailable:", type(exc).__name__, str(exc).splitlines()[0][:200])
PY
} 2>&1 | tee "$OUT/device.txt"

step backends "$PY" -m multinet backends | tee "$OUT/backends.txt"

if [ "$quick" -eq 1 ]; then
    tests=(tests/test_parity.py tests/test_capture.py
           -k "(test_one_update_step and float32) or test_capture")
    parity=(--samples 256 --steps 10)
    bench=(--repeats 1 --epoch-repeats 1 --samples 2048 --workload notebook-float32
           --workload inference)
    limit=240
else
    # On a GPU machine: every test on a GPU device, and the torchvision comparison (its
    # wheels need a CUDA build of PyTorch, so it runs only there); elsewhere the JAX and
    # PyTorch cases on the CPU.
    selection="jax or torch"
    command -v nvidia-smi >/dev/null && selection="gpu or torchvision"
    tests=(tests/test_parity.py tests/test_network.py tests/test_oracles.py
           tests/test_data.py tests/test_capture.py -k "$selection")
    parity=()
    bench=()
    limit="${PYTEST_LIMIT:-270}"
fi
peer=()
"$PY" -c "import torch" 2>/dev/null && peer=(--peer torch)
"$PY" -m multinet bench --help 2>/dev/null | grep -q -- "--peer {.*all" && peer=(--peer all)

step parity timeout 120 "$PY" -m multinet parity --json "${parity[@]}" "${data_args[@]}" \
    > "$OUT/parity.json" 2> "$OUT/parity.err"
step parity-table "$PY" - "$OUT/parity.json" > "$OUT/parity.txt" 2>&1 <<'PY'
import json, sys
from multinet.commands.parity import print_table
report = json.load(open(sys.argv[1]))
print_table(report["rows"], report["steps"])
PY
step bench timeout 240 "$PY" -m multinet bench --json "${peer[@]}" "${bench[@]}" \
    > "$OUT/bench.json" 2> "$OUT/bench.err"
step pytest timeout "$limit" "$PY" -m pytest -q -rs -p no:cacheprovider "${tests[@]}" \
    > "$OUT/pytest.txt" 2>&1
tail -n 25 "$OUT/pytest.txt"

{
    echo "== parity"; cat "$OUT/parity.txt"
    echo "== bench"
    "$PY" - "$OUT/bench.json" <<'PY'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except (OSError, ValueError) as exc:
    sys.exit(f"no bench report: {exc}")
for r in report["rows"]:
    if "median_seconds" in r:
        ratios = "  ".join(f"{k} {r[k]:.2f}" for k in r if k.startswith("x_"))
        print(f"{r['backend'][:16]:<16} {r['workload']:<17} {r['dtype']:<8} "
              f"{r['median_seconds'] * 1e3:9.3f} ms  {ratios}")
    else:
        print(f"{r['backend'][:16]:<16} {r['workload']:<17} skipped: {r.get('skipped')}")
print(*report.get("notes", []), sep="\n")
PY
    echo "== failed steps: ${failed[*]:-none}"
} 2>&1 | tee "$OUT/summary.txt"
[ "${#failed[@]}" -eq 0 ]
