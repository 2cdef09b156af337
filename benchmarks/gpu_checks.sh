#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one go (a few minutes on one GPU):
#   1. tests/test_cuda.py: training, fused training (fp32, bf16) and IMP on the GPU;
#   2. an experiment end to end on the GPU with fused groups (smoke scale);
#   3. benchmarks/fused_throughput.py: K fused members vs K runs one after another, K = 1..16
#      (goals: >= 4x total images/s at K = 16 for cifar_resnet_20 at batch 128, >= 8x for mlp_2;
#      ViTs train in the stacked layout, their members' forwards under vmap);
#   4. benchmarks/ddp_scaling.py: one GPU with NCCL DDP against no DDP.
# Each part's output goes to $OUT (default ./gpu-checks); a failing part does not stop the others.
# Needs python3 with a CUDA build of torch and elth's dependencies; run it from the repository root.
# Wheels of missing pure-Python dependencies (e.g. submitit, on a machine without network) found in
# ./.whl are installed to a temporary folder first:
#   pip download --no-deps --only-binary=:all: -d .whl submitit==1.5.4
set -uo pipefail
out=${OUT:-gpu-checks}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl && export PYTHONPATH="$PYTHONPATH:$site"
fi
status=0
part() {  # part NAME COMMAND...: run, keep the output in $out/NAME.txt
    local name=$1; shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.txt" || status=1
}
part device python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
part tests python3 -m pytest -q -p no:cacheprovider -rA tests/test_cuda.py
work=$(mktemp -d)
part experiment python3 -m elth experiment smoke --scale smoke --device cuda --fuse 4 --root "$work/runs" \
    --out "$work/smoke" --no-progress
part fused python3 benchmarks/fused_throughput.py --device cuda --clock wall --steps 20 --rounds 3 \
    --models mlp_2,cifar_resnet_20_8,cifar_resnet_20 --ks 1,2,4,8,16
part fused_bf16 python3 benchmarks/fused_throughput.py --device cuda --clock wall --steps 20 --rounds 3 \
    --precision bf16 --models cifar_resnet_20 --ks 1,16
part fused_vit python3 benchmarks/fused_throughput.py --device cuda --clock wall --steps 20 --rounds 3 \
    --models vit_2,vit_6 --ks 1,4,16
part fused_dpf python3 benchmarks/fused_throughput.py --device cuda --clock wall --steps 32 --rounds 3 \
    --dst dpf --models cifar_resnet_20_8 --ks 1,4,16
part fused_rigl python3 benchmarks/fused_throughput.py --device cuda --clock wall --steps 32 --rounds 3 \
    --dst rigl --models cifar_resnet_20_8 --ks 1,4,16
part ddp python3 benchmarks/ddp_scaling.py --device cuda --models cifar_resnet_20 --steps 20 --rounds 3
exit $status
