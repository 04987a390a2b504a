#!/usr/bin/env bash
# The C library of the PTX target on a GPU (docs/ptx.md, "The C library"): for each fixture
# folder, `hlstmc compile --target ptx --emit a,header`, tests/c/run_model.c linked to it,
# then the driver's --error-test, a whole sequence, and (where the model streams) one step at a
# time, against the reference outputs. bench/gpu/run.sh calls it; tests/compile_c.rs runs it on
# the stand-in driver (ptx-sim/fake-cuda, through LD_LIBRARY_PATH).
#
#   bench/gpu/clib_check.sh HLSTMC OUT FIXTURE_DIR...
#
# Needs cc and Python 3 with numpy. Writes OUT/clib.jsonl (one {"name", "status"} per fixture)
# and logs under OUT/clib/NAME/. Exit status: 0 when every fixture passes, 1 when one fails,
# 2 when a tool is missing.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-python3}"
GPUB="$ROOT/bench/gpu/gpu_bench.py"
[ $# -ge 3 ] || { echo "usage: $0 HLSTMC OUT FIXTURE_DIR..." >&2; exit 2; }
BIN="$1"; OUT="$2"; shift 2
command -v "${CC:-cc}" >/dev/null || { echo "clib: no C compiler (cc): skipped" >&2; exit 2; }
"$PY" -c "import numpy" 2>/dev/null || { echo "clib: no Python with numpy: skipped" >&2; exit 2; }
mkdir -p "$OUT/clib" || exit 2
: > "$OUT/clib.jsonl"
npass=0; nfail=0
for d in "$@"; do
    name=$(basename "$d")
    w="$OUT/clib/$name"
    rm -rf "$w"; mkdir -p "$w"
    st=pass
    check() {  # check STATUS-IF-FAILED COMMAND...: runs it with its output in the log
        [ "$st" = pass ] || return 0
        "${@:2}" >> "$w/log" 2>&1 || st="$1"
    }
    check compile timeout 120 "$BIN" compile "$d/model.onnx" --target ptx --emit a,header --name hm -o "$w"
    check cc "${CC:-cc}" -std=c11 -O1 -DMODEL=hm -I "$w" "$ROOT/tests/c/run_model.c" "$w/libhlstmc_hm.a" -ldl -lm -o "$w/run"
    check data "$PY" "$GPUB" pb2raw "$d/test_data_set_0" "$w"
    ins=("$w"/in_*.f32); wants=("$w"/want_*.f32)
    outs=(); for k in "${!wants[@]}"; do outs+=("$w/out_$k.f32"); done
    check error-test timeout 120 "$w/run" --error-test
    check run timeout 120 "$w/run" "${ins[@]}" "${outs[@]}"
    check mismatch "$PY" "$GPUB" compare-raw --got "${outs[@]}" --want "${wants[@]}"
    if [ "$st" = pass ] && grep -q "hm_step: supported" "$w/hm.h"; then
        rm -f "${outs[@]}"
        check stream timeout 120 "$w/run" --stream "${ins[@]}" "${outs[@]}"
        check stream-mismatch "$PY" "$GPUB" compare-raw --got "${outs[@]}" --want "${wants[@]}"
    fi
    if [ "$st" = pass ]; then
        npass=$((npass + 1))
    else
        nfail=$((nfail + 1))
        echo "  $name: $st: $(tail -n 3 "$w/log" | tr '\n' ' ')"
    fi
    printf '{"name": "%s", "status": "%s"}\n' "$name" "$st" >> "$OUT/clib.jsonl"
done
echo "clib: $npass pass, $nfail fail"
[ $nfail = 0 ]
