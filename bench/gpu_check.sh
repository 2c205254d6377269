#!/usr/bin/env bash
# The GPU check in one command on a CUDA machine that has no network: install the carried wheels, then run
# bench/gpu_check.py (device-marked tests on CUDA, then the timings) and write DIR/gpu_check.md.
#
#   bash bench/gpu_check.sh --download      # here, with network: fetch the wheels into .whl/ (git-ignored)
#   bash bench/gpu_check.sh DIR [ARGS...]    # on the GPU machine (DIR = $OUT there); ARGS go to gpu_check.py
#
# The wheels are the pack's dependencies that the device image lacks (Python 3.12, x86-64); the image already
# has torch, torchvision, numpy, safetensors, regex, timm, huggingface-hub, tqdm, scikit-image and pytest.
set -u
cd "$(dirname "$0")/.."
WHEELS="open_clip_torch==3.3.0 madgrad==1.2 kornia==0.9.0 kornia_rs==0.2.0 ftfy==6.3.1 wcwidth==0.7.0"

if [ "${1:-}" = "--download" ]; then
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS
fi

OUTDIR="${1:-${OUT:-gpu_check_out}}"
shift || true
mkdir -p "$OUTDIR"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/t2l_site \
        .whl/*.whl || { echo "installing the carried wheels failed" | tee "$OUTDIR/gpu_check.md"; exit 1; }
    export PYTHONPATH="/tmp/t2l_site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no wheels in .whl/ (run 'bash bench/gpu_check.sh --download' here first and carry .whl): using what is installed"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUTDIR/nvidia_smi.csv" 2>&1 || true
python3 bench/gpu_check.py --out "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
