#!/bin/bash
# One device-tool command: GPU tests, then the GPU benchmark parts (issue 4).
# Usage (on the GPU machine, repo root): bash benchmarks/gpu_session.sh [quick|layout|confirm|full|chr1]
# Environment: NO_TESTS=1 skips the GPU tests, TEST_TIMEOUT (300 s) bounds them; chr1: DEADLINE, THREADS.
# Logs and JSON go to $OUT (or ./out).
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then   # benchmark-only installs (flash-semicrf), never vendored
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
mode=${1:-quick}
if [ -z "${NO_TESTS:-}" ]; then
  timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -m gpu tests/test_gpu_device.py -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -15
fi
if [ "$mode" = layout ]; then
  timeout 200 python3 benchmarks/bench_gpu.py --parts a --scale 0.02 --ks 64,512 --cs 8 --batches 1 --warps 0,4 --json "$OUT/a.json" 2>&1 | tee "$OUT/a.log"
  timeout 200 python3 benchmarks/bench_gpu.py --parts a --scale 0.02 --ks 256 --cs 16,32 --batches 1,24 --json "$OUT/a2.json" 2>&1 | tee "$OUT/a2.log"
  timeout 120 python3 benchmarks/bench_gpu.py --parts b --scale 0.002 --json "$OUT/b.json" 2>&1 | tee "$OUT/b.log"
elif [ "$mode" = confirm ]; then
  timeout 120 python3 benchmarks/bench_gpu.py --parts b --scale 0.004 --json "$OUT/b.json" 2>&1 | tee "$OUT/b.log"
  timeout 120 python3 benchmarks/bench_gpu.py --parts a --ks 256,512 --cs 8,16 --batches 1,24 --scale 0.2 --json "$OUT/a.json" 2>&1 | tee "$OUT/a.log"
  timeout 150 python3 benchmarks/bench_gpu.py --parts d --json "$OUT/d.json" 2>&1 | tee "$OUT/d.log"
elif [ "$mode" = chr1 ]; then
  # Issue 20: part (e) at 10% of chr1 (profiled: the steps' seconds, py-spy's view of
  # who holds the GIL, GPU load per second), then the whole contig only if the 10% run
  # extrapolates to <= 6 min and that fits before DEADLINE seconds after this script's start.
  DEADLINE=${DEADLINE:-545}
  THREADS=${THREADS:-128}
  nvidia-smi dmon -s um -d 1 -o T > "$OUT/dmon.log" 2>&1 & dmon=$!
  spy() {  # py-spy on a running process (never blocks it); no-op when py-spy is missing
    local bin; bin=$(command -v py-spy || echo /tmp/site/bin/py-spy)
    [ -x "$bin" ] || { echo "py-spy: not found" >> "$OUT/pyspy.log"; return 0; }
    "$bin" record --pid "$1" --nonblocking --gil -r 20 -f raw -o "$OUT/pyspy-gil-$2.txt" >> "$OUT/pyspy.log" 2>&1 &
  }
  timeout 200 python3 benchmarks/bench_gpu.py --parts e --scale 0.1 --piece-threads "$THREADS" \
    --check-bins 500000 --json "$OUT/e10.json" > "$OUT/e10.log" 2>&1 & pid=$!
  sleep 1; spy $pid e10; wait $pid; cat "$OUT/e10.log"
  predicted=$(python3 -c "import json; r=json.load(open('$OUT/e10.json'))['results'][0]; print(int(10 * (r['viterbi_seconds'] + r['posterior_seconds'])))" 2>/dev/null || echo 99999)
  left=$((DEADLINE - SECONDS))
  echo "whole contig predicted ${predicted} s (+ about 60 s of start and check); ${left} s left before the deadline"
  if [ "$predicted" -le 360 ] && [ $((predicted * 115 / 100 + 60)) -le "$left" ]; then
    timeout $((left - 5)) python3 benchmarks/bench_gpu.py --parts e --piece-threads "$THREADS" \
      --check-bins 500000 --json "$OUT/e.json" > "$OUT/e.log" 2>&1 & pid=$!
    sleep 1; spy $pid full; wait $pid; cat "$OUT/e.log"
  else
    echo "whole contig skipped"
  fi
  kill $dmon 2>/dev/null
elif [ "$mode" = quick ]; then
  timeout 200 python3 benchmarks/bench_gpu.py --parts a --scale 0.02 --ks 64,256,512 --cs 8,16 --batches 1 --warps 0,4,16 --json "$OUT/a.json" 2>&1 | tee "$OUT/a.log"
  timeout 60 python3 benchmarks/bench_gpu.py --parts a --scale 0.02 --ks 256 --cs 16 --batches 24 --json "$OUT/a24.json" 2>&1 | tee "$OUT/a24.log"
  timeout 120 python3 benchmarks/bench_gpu.py --parts b --scale 0.002 --json "$OUT/b.json" 2>&1 | tee "$OUT/b.log"
  timeout 150 python3 benchmarks/bench_gpu.py --parts c --batches 1,24 --peer-t 2e4 --json "$OUT/c.json" 2>&1 | tee "$OUT/c.log"
  timeout 150 python3 benchmarks/bench_gpu.py --parts e --scale 0.02 --piece-threads 64 --json "$OUT/e.json" 2>&1 | tee "$OUT/e.log"
else   # full: the shapes; (b) at 1/250 of chr1 (the whole contig does not fit one command yet)
  timeout 120 python3 benchmarks/bench_gpu.py --parts b --scale 0.004 --json "$OUT/b.json" 2>&1 | tee "$OUT/b.log"
  timeout 100 python3 benchmarks/bench_gpu.py --parts c --batches 1,24 --peer-t 2e4 --json "$OUT/c.json" 2>&1 | tee "$OUT/c.log"
  timeout 150 python3 benchmarks/bench_gpu.py --parts d --json "$OUT/d.json" 2>&1 | tee "$OUT/d.log"
  timeout 300 python3 benchmarks/bench_gpu.py --parts a --json "$OUT/a.json" 2>&1 | tee "$OUT/a.log"
fi
