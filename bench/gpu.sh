#!/usr/bin/env bash
# The whole GPU measurement in one call, for a bare, offline GPU machine with its own Python, torch, h5py, OpenCV,
# click, tqdm and TensorBoard (docs/PERFORMANCE.md, "GPU"): install the wheels carried in .whl/ (webdataset,
# braceexpand, pyyaml, zstandard) into a temporary site folder, run bench/bench_gpu.py with the options given here,
# and copy its JSON (and the printed log) to $OUT when that is set. Run it from anywhere; it works in the repository.
#
#   bench/gpu.sh                      # the paper's sizes on the GPU -> bench/out/bench_gpu.json (and $OUT/)
#   bench/gpu.sh --parts stream       # any bench_gpu.py option but --out (see BENCH_JSON)
#   bench/gpu.sh --tiny               # the CPU dry run (what tests/test_bench_gpu.py runs)
#
# Environment: PYTHON (default python3), WHEELS (default .whl), SITE_DIR (default /tmp/i2vda-site), BENCH_JSON (the
# report, default bench/out/bench_gpu.json), OUT (a folder that receives the report and bench_gpu.log).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
SITE_DIR="${SITE_DIR:-/tmp/i2vda-site}"
JSON="${BENCH_JSON:-bench/out/bench_gpu.json}"

shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if ((${#wheels[@]})); then
    mkdir -p "$SITE_DIR"
    if "$PYTHON" -m pip --version >/dev/null 2>&1; then
        "$PYTHON" -m pip install -q --no-index --no-deps --upgrade --target "$SITE_DIR" "${wheels[@]}"
    else # no pip: a wheel is a zip archive of importable files
        for wheel in "${wheels[@]}"; do "$PYTHON" -m zipfile -e "$wheel" "$SITE_DIR"; done
    fi
    echo "gpu.sh: ${#wheels[@]} wheel(s) from $WHEELS installed into $SITE_DIR"
    export PYTHONPATH="$SITE_DIR${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" # the repository's pipeline/ and trainer/, uninstalled

copy_json() {
    if [[ -n "${OUT:-}" && -f "$JSON" ]]; then cp "$JSON" "$OUT/"; fi
}
rm -f "$JSON" # never hand on the file of an earlier run
trap copy_json EXIT
if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    "$PYTHON" bench/bench_gpu.py --out "$JSON" "$@" 2>&1 | tee "$OUT/bench_gpu.log"
else
    "$PYTHON" bench/bench_gpu.py --out "$JSON" "$@"
fi
