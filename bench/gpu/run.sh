#!/usr/bin/env bash
# Every GPU check of the PTX target (docs/ptx.md), in one run of under ten minutes, on a machine
# with an NVIDIA GPU and driver, Python 3 with numpy and PyTorch built with CUDA, and a PREBUILT
# x86-64 hlstmc binary. No Rust toolchain, no network, no package download is needed there.
#
#   bench/gpu/run.sh [--dry-run] [--models DIR] [--out DIR] [--runs N] [HLSTMC]
#
#   HLSTMC        the hlstmc binary (else $HLSTMC, else target/release/hlstmc)
#   --models DIR  the benchmark models, as `gen_bench_models DIR` writes them (else
#                 $HLSTMC_BENCH_MODELS, else target/bench-models); make them beforehand where
#                 cargo is: `cargo run --release -p hlstm-bench --bin gen_bench_models -- DIR`
#   --out DIR     where the results go (default target/gpu-results): fixtures.jsonl,
#                 bench.jsonl, env.json, logs/, and results.md, the section to paste into
#                 BENCHMARKS.md ("## GPU (PTX)")
#   --runs N      timed calls per model for hlstmc cuda and PyTorch (default 100); the CPU JIT
#                 makes $JIT_RUNS (default 20: its numbers are in BENCHMARKS.md already, and the
#                 dense 800-wide H-LSTM takes about 0.2 s a call)
#   --dry-run     check the inputs and print every command instead of running it (needs no GPU)
#
# TORCH_DEVICE=cpu runs the PyTorch side on the CPU, for testing the script without a GPU
# (with a stand-in for hlstmc that runs `--engine jit` where asked for cuda; see docs/ptx.md).
#
# What it runs:
#  1. every fixture (tests/fixtures/models/*, tests/fixtures/extra/*, and the recurrent ONNX node
#     tests of tests/fixtures/onnx-node-manifest.txt) through
#     `hlstmc run --engine cuda MODEL --test-data DIR/test_data_set_0` against the reference
#     outputs;
#  1b. the C library of `hlstmc compile --target ptx` (bench/gpu/clib_check.sh, needs cc): the
#     fixture models (models/ and extra/) linked into tests/c/run_model.c, whole sequences,
#     streams and error codes against the reference outputs;
#  2. for every benchmark model (hlstm_X*_H*_T*_{dense,sp90,sp97}.onnx, lstm_...), batch 1:
#     `hlstmc bench --engine cuda --json`, `hlstmc bench --engine jit --json` (the CPU JIT, one
#     thread), and bench/gpu/gpu_bench.py's PyTorch model on cuda with the same weights
#     (torch.nn.LSTM, i.e. cuDNN, for the LSTMs; an H-LSTM module for the H-LSTMs; the weights
#     read from the ONNX file by a small protobuf reader, so the onnx package is not needed);
#     and `hlstmc run --engine cuda` against PyTorch's output on one random input (max |dY|);
#  3. the report: results.md.
# Exit status: 0 when every fixture passes and every benchmark
# ran; 1 otherwise (the results are written either way).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-python3}"
GPUB="$ROOT/bench/gpu/gpu_bench.py"
TDEV="${TORCH_DEVICE:-cuda}"

DRY=0
MODELS="${HLSTMC_BENCH_MODELS:-$ROOT/target/bench-models}"
OUT="$ROOT/target/gpu-results"
RUNS=100
JIT_RUNS="${JIT_RUNS:-20}"
# Benchmarks still to start after this many seconds are skipped (and reported), so that the
# whole run stays under ten minutes.
BUDGET_S="${BUDGET_S:-540}"
BIN="${HLSTMC:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --models) MODELS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --runs) RUNS="$2"; shift ;;
        -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) BIN="$1" ;;
    esac
    shift
done
[ -n "$BIN" ] || BIN="$ROOT/target/release/hlstmc"

fail() { echo "error: $*" >&2; exit 2; }
[ -x "$BIN" ] || fail "no hlstmc binary at $BIN (give its path, or set HLSTMC)"
"$BIN" --version >/dev/null 2>&1 || "$BIN" --help >/dev/null 2>&1 || fail "$BIN does not run here"
[ -d "$MODELS" ] || fail "no benchmark models in $MODELS (--models DIR; gen_bench_models writes them)"
command -v "$PY" >/dev/null || fail "no $PY"
mapfile -t BENCH < <(ls "$MODELS" | grep -E '^(hlstm|lstm)_X[0-9]+_H[0-9]+_T[0-9]+_(dense|sp90|sp97)\.onnx$' | sort -t_ -k1,1 -k3,3V)
[ ${#BENCH[@]} -gt 0 ] || fail "$MODELS holds no hlstm_X*_H*_T*_*.onnx or lstm_... model"

# The fixtures: folders with model.onnx and test_data_set_0.
FIXTURES=()
for d in "$ROOT"/tests/fixtures/models/* "$ROOT"/tests/fixtures/extra/*; do
    [ -f "$d/model.onnx" ] && [ -d "$d/test_data_set_0" ] && FIXTURES+=("$d")
done
if [ -f "$ROOT/tests/fixtures/onnx-node-manifest.txt" ]; then
    while read -r l; do
        case "$l" in
            *" "*|"") ;;
            test_lstm*|test_gru*|test_rnn*|test_simple_rnn*|test_scan*)
                d="$ROOT/tests/fixtures/onnx-node/$l"
                [ -f "$d/model.onnx" ] && FIXTURES+=("$d") ;;
        esac
    done < "$ROOT/tests/fixtures/onnx-node-manifest.txt"
fi
# The C library's check: the fixture models (not the node tests: their weights are inputs,
# which the library's run-time path shares with the fixtures above).
CLIB=()
for d in "${FIXTURES[@]}"; do
    case "$d" in
        */onnx-node/*) ;;
        *) CLIB+=("$d") ;;
    esac
done

echo "hlstmc:    $BIN"
echo "models:    $MODELS (${#BENCH[@]})"
echo "fixtures:  ${#FIXTURES[@]}"
echo "results:   $OUT"

if [ $DRY = 1 ]; then
    for d in "${FIXTURES[@]}"; do
        echo "$BIN run --engine cuda $d/model.onnx --test-data $d/test_data_set_0"
    done
    echo "$ROOT/bench/gpu/clib_check.sh $BIN $OUT (${#CLIB[@]} fixtures)"
    for m in "${BENCH[@]}"; do
        echo "$BIN bench --engine cuda --json --warmup 10 --runs $RUNS $MODELS/$m"
        echo "$BIN bench --engine jit --json --warmup 3 --runs $JIT_RUNS $MODELS/$m"
        echo "$PY $GPUB torch $MODELS/$m --device $TDEV --runs $RUNS"
        echo "$BIN run --engine cuda $MODELS/$m -i X=x.npy -o OUT; $PY $GPUB torch ... --x x.npy --y-out y.npy; compare"
    done
    echo "$PY $GPUB report $OUT $OUT/results.md"
    # The Python side parses and its reader reads one model.
    "$PY" -c "import ast,sys; ast.parse(open(sys.argv[1]).read())" "$GPUB" || exit 1
    echo "dry run: ok"
    exit 0
fi

mkdir -p "$OUT/logs" || fail "cannot create $OUT"
: > "$OUT/fixtures.jsonl"
: > "$OUT/bench.jsonl"
START=$(date +%s)
STATUS=0

# The machine.
CHECK=$("$PY" "$GPUB" check) || [ "$TDEV" != cuda ] || { echo "$CHECK"; fail "PyTorch has no CUDA device here"; }
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1)
"$PY" - "$CHECK" "$GPU" "$DRIVER" "$OUT/env.json" "bench/gpu/run.sh $*" <<'EOF'
import json, sys, platform, datetime
c = json.loads(sys.argv[1])
env = {"gpu": sys.argv[2] or c.get("device"), "driver": sys.argv[3] or "?",
       "torch": c.get("torch"), "cudnn": c.get("cudnn"), "python": c.get("python"),
       "host": platform.processor() or platform.machine(),
       "date": datetime.date.today().isoformat(), "command": sys.argv[5].strip()}
json.dump(env, open(sys.argv[4], "w"))
print("env:", json.dumps(env))
EOF

# 1. Fixtures.
npass=0; nfail=0
for d in "${FIXTURES[@]}"; do
    name=$(basename "$d")
    log="$OUT/logs/fixture_$name.log"
    timeout 120 "$BIN" run --engine cuda "$d/model.onnx" --test-data "$d/test_data_set_0" > "$log" 2>&1
    rc=$?
    if [ $rc = 0 ] && grep -q '^PASS' "$log"; then
        st=pass; npass=$((npass + 1))
    else
        if grep -q '^FAIL' "$log"; then st=mismatch; elif [ $rc = 124 ]; then st=timeout; else st="error rc=$rc"; fi
        nfail=$((nfail + 1)); STATUS=1
        echo "  $name: $st: $(tail -n 3 "$log" | tr '\n' ' ')"
    fi
    printf '{"name": "%s", "status": "%s"}\n' "$name" "$st" >> "$OUT/fixtures.jsonl"
done
echo "fixtures: $npass pass, $nfail fail ($(( $(date +%s) - START )) s)"

# 1b. The C library.
"$ROOT/bench/gpu/clib_check.sh" "$BIN" "$OUT" "${CLIB[@]}"
case $? in
    0) ;;
    2) echo "clib: not checked (a tool is missing)" ;;
    *) STATUS=1 ;;
esac
echo "clib done ($(( $(date +%s) - START )) s)"

# 2. Benchmarks.
last() { grep '^{' "$1" | tail -n 1; }
for m in "${BENCH[@]}"; do
    p="$MODELS/$m"
    base="${m%.onnx}"
    errs=()
    if [ $(( $(date +%s) - START )) -gt "$BUDGET_S" ]; then
        echo "$base: skipped (over ${BUDGET_S} s)"
        printf '{"model": "%s", "errors": ["skipped: the run passed %s s"]}\n' "$base" "$BUDGET_S" >> "$OUT/bench.jsonl"
        STATUS=1
        continue
    fi
    timeout 300 "$BIN" bench --engine cuda --json --warmup 10 --runs "$RUNS" "$p" > "$OUT/logs/$base.cuda.log" 2>&1 \
        || { errs+=("hlstmc cuda: $(tail -n 1 "$OUT/logs/$base.cuda.log")"); STATUS=1; }
    timeout 300 "$BIN" bench --engine jit --json --warmup 3 --runs "$JIT_RUNS" "$p" > "$OUT/logs/$base.jit.log" 2>&1 \
        || { errs+=("hlstmc jit: $(tail -n 1 "$OUT/logs/$base.jit.log")"); STATUS=1; }
    timeout 300 "$PY" "$GPUB" torch "$p" --device "$TDEV" --runs "$RUNS" > "$OUT/logs/$base.torch.log" 2>&1 \
        || { errs+=("torch: $(tail -n 1 "$OUT/logs/$base.torch.log")"); STATUS=1; }
    # The same input through hlstmc cuda and PyTorch: the largest output difference.
    tmp="$OUT/logs/$base.io"; mkdir -p "$tmp"
    dy=""
    if "$PY" - "$m" "$tmp/x.npy" <<'EOF'
import re, sys, numpy as np
t, x = int(re.search(r"_T(\d+)_", sys.argv[1]).group(1)), int(re.search(r"_X(\d+)_", sys.argv[1]).group(1))
np.save(sys.argv[2], np.random.default_rng(7).uniform(-1, 1, (t, 1, x)).astype(np.float32))
EOF
    then
        if timeout 120 "$BIN" run --engine cuda "$p" -i "X=$tmp/x.npy" -o "$tmp/cuda" > "$OUT/logs/$base.run.log" 2>&1 \
            && timeout 120 "$PY" "$GPUB" torch "$p" --device "$TDEV" --runs 1 --warmup 0 --x "$tmp/x.npy" --y-out "$tmp/y_torch.npy" > /dev/null 2>&1; then
            dy=$("$PY" "$GPUB" compare "$tmp/cuda/Y.npy" "$tmp/y_torch.npy" 2>&1) || { errs+=("compare: $dy"); dy=""; STATUS=1; }
        else
            errs+=("cuda vs torch on one input: $(tail -n 1 "$OUT/logs/$base.run.log")"); STATUS=1
        fi
    fi
    "$PY" - "$base" "$OUT/bench.jsonl" "$dy" "$(last "$OUT/logs/$base.cuda.log")" "$(last "$OUT/logs/$base.jit.log")" "$(last "$OUT/logs/$base.torch.log")" "${errs[@]}" <<'EOF'
import json, sys
base, out, dy, cuda, jit, torch = sys.argv[1:7]
def med(s):
    try:
        return json.loads(s)["median_us"]
    except Exception:
        return None
row = {"model": base, "cuda_us": med(cuda), "jit_us": med(jit), "torch_us": med(torch),
       "max_abs_dy": float(dy) if dy else None, "errors": sys.argv[7:],
       "cuda": json.loads(cuda) if cuda else None, "torch": json.loads(torch) if torch else None}
open(out, "a").write(json.dumps(row) + "\n")
print("%-32s cuda %s us  jit %s us  torch %s us  max|dY| %s" % (base, row["cuda_us"], row["jit_us"], row["torch_us"], dy or "n/a"))
for e in sys.argv[7:]:
    print("   ", e)
EOF
done

# 3. The report.
"$PY" "$GPUB" report "$OUT" "$OUT/results.md" > /dev/null
echo "wrote $OUT/results.md ($(( $(date +%s) - START )) s)"
exit $STATUS
