#!/usr/bin/env bash
# The checks that need a GPU, as one prepared run for the `device` machine (one H200; under 10 minutes):
#   1. the fused optimizer kernel's tests on CUDA (tests/test_bayes.py -k fused: the by-hand kernel tests
#      run there when a GPU is present; Triton compiles each variant once);
#   2. the optimizer-step benchmark on CUDA against SGD(momentum, foreach) (benchmarks/bench_optimizer.py);
#   3. a CUDA training run of the ResNet-20 CIFAR-10 recipe with bf16 autocast and channels_last, on
#      50,000 synthetic images in the real CIFAR pickle format (the device machine has no datasets): images/s;
#   4. ONNX export of that CUDA-trained, pruned run, verified against PyTorch with onnxruntime;
#   5. the same training with the fused optimizer step (`method.fused=true`; channels_last conv weights are
#      fused in their memory order).
# Logs and the run's summary land in OUT (flat: the device tool returns at most 8 files, 2 folders deep).
#
# The machine's image has torch (2.11 there, not our pinned 2.14.1) but not all of our dependencies, so
# the missing ones travel as wheels in .whl/ (git-ignored). Fetch them here, once, for its Python 3.12:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
#     torch-pruning==1.6.1 textual==8.2.8 textual-plotext==1.0.1 plotext==5.3.2 mdit-py-plugins platformdirs
# then call the device tool with carry [".whl"] and command `bash benchmarks/gpu_check.sh "$OUT"`.
# `bash benchmarks/gpu_check.sh OUT cpu` runs the same flow on a CPU with tiny sizes (a dry run).
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [cuda|cpu]}
DEVICE=${2:-cuda}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d .whl ] && ! "$PY" -c "import pydantic, torch_pruning, textual" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "$DEVICE" = cpu ]; then n_train=600; epochs=2; steps=3; else n_train=50000; epochs=4; steps=20; fi
status=0
step() {  # name, seconds, command...: runs it with a time limit, logs to OUT/name.log, records failures
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log"
  echo "== $name: exit $rc after $((SECONDS - start))s" | tee -a "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || status=1
}

"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/summary.txt"
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"python {platform.python_version()}, torch {torch.__version__}, {gpu}")
EOF

step tests 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_bayes.py -k "fused or first_order"
step bench_optimizer 150 "$PY" benchmarks/bench_optimizer.py --device "$DEVICE" --repeats 11 --steps "$steps"

data=/tmp/gpu-check-cifar
"$PY" -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from conftest import write_cifar10; \
write_cifar10(Path('$data'), n_train=$n_train, n_test=2000)" || exit 1
rm -rf /tmp/gpu-check-runs
step train 200 "$PY" -m compressor train recipes/resnet20_cifar10.yaml --no-tui --device "$DEVICE" \
  --out /tmp/gpu-check-runs --set "data.root=$data" --set train.epochs=$epochs --set train.amp=true \
  --set train.channels_last=true --set method.warmup_epochs=1 --set method.cycles=1 \
  --set method.samples_per_cycle=1 --set prune.start_epoch=1 --set prune.target_epoch=$((epochs - 1))
run=$(ls -d /tmp/gpu-check-runs/*/ 2>/dev/null | head -n 1)
if [ -n "$run" ]; then
  cp "$run/summary.json" "$OUT/train_summary.json"
  step export 150 "$PY" -m compressor export "$run" --onnx --output /tmp/gpu-check-export/run.onnx
  cp /tmp/gpu-check-export/run.json "$OUT/export_report.json" 2>/dev/null
else
  echo "== export: skipped, no run directory" | tee -a "$OUT/summary.txt"
  status=1
fi
rm -rf /tmp/gpu-check-fused
step train_fused 200 "$PY" -m compressor train recipes/resnet20_cifar10.yaml --no-tui --device "$DEVICE" \
  --out /tmp/gpu-check-fused --set "data.root=$data" --set train.epochs=$epochs --set train.amp=true \
  --set train.channels_last=true --set method.fused=true --set method.warmup_epochs=1 --set method.cycles=1 \
  --set method.samples_per_cycle=1 --set prune.start_epoch=1 --set prune.target_epoch=$((epochs - 1))
exit "$status"
