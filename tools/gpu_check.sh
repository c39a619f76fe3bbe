#!/usr/bin/env bash
# GPU paths, proved on a machine with CUDA: the GPU tests, then bench_train, bench_predict and bench_scale on the
# first GPU. Prints one JSON line per figure (samples/s, voxels/s, the F3-size cube's end-to-end seconds, GPU memory
# peak), and one line saying so when there is no GPU (exit 0: nothing to prove here).
#
#   tools/gpu_check.sh            # GPU tests, the three benches at their default sizes (a few minutes)
#   tools/gpu_check.sh --long     # bench_scale --long: up to F3's size (651 x 951 x 462), its end-to-end seconds
#
# PYTHON names the interpreter (default: .venv/bin/python if there is one, else python3). Each bench's full JSON line
# is kept in $SEISD_GPU_CHECK_OUT (default: a temp folder, named in the last line). GPU memory peak: the highest
# memory.used of the GPU that nvidia-smi reported (every 200 ms) while the bench ran, minus what was used before.
# The exit status is 1 when a test or a bench failed (its JSON line says which), else 0.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
LONG=""
[ "${1:-}" = "--long" ] && LONG="--long"

# one JSON line of KEY VALUE pairs; a VALUE that parses as JSON (a number, true, null, a list) is taken as such
json() { "$PY" - "$@" <<'PYEOF'
import json, sys
def value(v):
    try:
        return json.loads(v)
    except ValueError:
        return v
print(json.dumps({k: value(v) for k, v in zip(sys.argv[1::2], sys.argv[2::2])}))
PYEOF
}

why=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
    why="nvidia-smi not found"
elif ! nvidia-smi -L >/dev/null 2>&1; then
    why="nvidia-smi lists no GPU: $(nvidia-smi -L 2>&1 | head -1)"
fi
cuda=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)
if [ -z "$why" ] && [ "$cuda" = "0" ]; then
    why="torch sees no CUDA device (torch.cuda.is_available() is False)"
fi
if [ -n "$why" ]; then
    json check gpu gpu false reason "no GPU is present: $why"
    exit 0
fi
name=$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 | head -1)
OUT=${SEISD_GPU_CHECK_OUT:-$(mktemp -d -t seisd-gpu-check-XXXX)}
mkdir -p "$OUT"
json check gpu gpu true devices "$cuda" name "$name"
status=0

# memory.used of GPU 0 every 200 ms while "$@" runs; sets PEAK_MB to the rise over the reading before
with_gpu_peak() {
    local base smi
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 200 > "$OUT/smi.txt" 2>/dev/null &
    smi=$!
    "$@"
    local rc=$?
    kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
    PEAK_MB=$(sort -n "$OUT/smi.txt" | tail -1)
    PEAK_MB=$(( ${PEAK_MB:-$base} - base ))
    return $rc
}

# a figure out of a bench's JSON line: figure NAME BENCH FILE PYTHON-EXPRESSION-OVER-d
figure() {
    local v
    v=$("$PY" -c "import json, sys; d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(json.dumps($4))" "$3" 2>/dev/null) || v=null
    json check "$2" figure "$1" value "$v" device "cuda:0 $name"
}

# 1. the GPU tests (each skips itself without CUDA; here they must run)
tests=(tests/daemon/test_distributed_gpu.py tests/daemon/test_apply.py::test_gpu_gives_the_cpu_answer
       tests/daemon/test_training.py::test_mixed_precision_channels_last_on_cuda
       tests/workers/test_ring.py::test_cuda_staging_copies_and_frees_the_slot)
"$PY" -m pytest -q -rs -p no:cacheprovider "${tests[@]}" > "$OUT/tests.txt" 2>&1
rc=$?
summary=$(tail -1 "$OUT/tests.txt")
json check gpu_tests rc "$rc" summary "$summary" log "$OUT/tests.txt"
[ $rc -eq 0 ] || status=1

# 2. training: samples/s of a U-Net train job on the GPU (and the bare PyTorch loop beside it)
if with_gpu_peak "$PY" tools/bench_train.py --model unet --device cuda $LONG > "$OUT/bench_train.json" 2> "$OUT/bench_train.err"; then
    figure samples_per_s bench_train "$OUT/bench_train.json" 'd["seisd_samples_per_s"]'
    figure bare_samples_per_s bench_train "$OUT/bench_train.json" 'd["bare_samples_per_s"]'
    json check bench_train figure gpu_memory_peak_mb value "$PEAK_MB"
else
    json check bench_train failed true log "$OUT/bench_train.err"; status=1
fi

# 3. prediction: voxels/s of the U-Net end to end and crops/s of the patch model, in one process on the GPU
if with_gpu_peak "$PY" tools/bench_predict.py --device cuda --skip-stream $LONG > "$OUT/bench_predict.json" 2> "$OUT/bench_predict.err"; then
    figure unet_voxels_per_s bench_predict "$OUT/bench_predict.json" 'd["unet"]["end_to_end_vps"]'
    figure patch_crops_per_s bench_predict "$OUT/bench_predict.json" 'd["patchcnn"]["end_to_end_crops_per_s"]'
    json check bench_predict figure gpu_memory_peak_mb value "$PEAK_MB"
else
    json check bench_predict failed true log "$OUT/bench_predict.err"; status=1
fi

# 4. survey size: each cube through the daemon with the jobs on the GPU; with --long, F3's size
if with_gpu_peak "$PY" tools/bench_scale.py --device cuda $LONG > "$OUT/bench_scale.json" 2> "$OUT/bench_scale.err"; then
    last='[s for s in d["sizes"] if "skipped" not in s][-1]'
    figure largest_shape bench_scale "$OUT/bench_scale.json" "$last[\"shape\"]"
    figure unet_voxels_per_s bench_scale "$OUT/bench_scale.json" "round($last[\"voxels\"] / $last[\"predict_unet\"][\"apply_s\"])"
    figure end_to_end_s bench_scale "$OUT/bench_scale.json" "$last[\"end_to_end_unet_s\"]"
    figure patch_stride1_voxels_per_s bench_scale "$OUT/bench_scale.json" "round(1e9 / $last[\"predict_patch_stride1\"][\"ns_per_voxel\"])"
    figure train_samples_per_s bench_scale "$OUT/bench_scale.json" "$last[\"train\"][\"samples_per_s\"]"
    figure executor_rss_anon_mb bench_scale "$OUT/bench_scale.json" "$last[\"rss_anon_mb\"][\"executor\"]"
    json check bench_scale figure gpu_memory_peak_mb value "$PEAK_MB"
else
    json check bench_scale failed true log "$OUT/bench_scale.err"; status=1
fi
json check done status "$status" out "$OUT"
exit $status
