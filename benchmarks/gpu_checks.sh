#!/usr/bin/env bash
# The measurement issue "tell better from worse" waits on a GPU for, as one short command for a lent
# GPU (the device tool: 15 minutes a task, a bare machine whose python3 has torch, numpy, pillow,
# scipy; no Ray, MLflow or pyiqa, which this needs none of). It decides `precision: auto` on CUDA:
# bench_precision on --images per kind, each kind in its own process, bf16 against fp32 by the rule.
#
#   here:    bash benchmarks/gpu_checks.sh pack [../shared/data]    # .gpu_data/: the images it reads (~20 MB)
#   device:  run(command="bash benchmarks/gpu_checks.sh run", carry=[".gpu_data"], timeout_s=540)
#   here:    cp <files_at>/bench_precision.jsonl benchmarks/results/ &&
#            PYTHONPATH=. python benchmarks/bench_precision.py summary   # then set model/config.py BF16_AUTO
#
# BENCH_ARGS adds bench_precision options (the default protocol: 128² crops, 600 steps, 100 passes).
# `run` starts from the committed pieces, so a second lease resumes; it stops its trainings at
# GPU_SECONDS (default 420) and still writes the summary, its pieces and its log under $OUT.
set -euo pipefail
images=${IMAGES:-16}
case "${1:-}" in
pack)
    data=${2:-../shared/data}
    rm -rf .gpu_data && mkdir -p .gpu_data/CBSD68/noisy25 .gpu_data/CBSD68/original_png .gpu_data/PolyU
    for index in $(seq 0 $((images - 1))); do
        name=$(printf "%04d.png" "$index")
        cp "$data/CBSD68/noisy25/$name" .gpu_data/CBSD68/noisy25/
        cp "$data/CBSD68/original_png/$name" .gpu_data/CBSD68/original_png/
    done
    cp -r "$data/PolyU/CroppedImages" .gpu_data/PolyU/
    du -sh .gpu_data
    ;;
run)
    out=${OUT:-/tmp/gpu_checks}
    mkdir -p "$out"
    cp benchmarks/results/bench_precision.jsonl "$out/"
    export PYTHONPATH=. PYTHONUNBUFFERED=1
    python3 -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" | tee "$out/log"
    for kind in cbsd68-25 polyu; do # one process per kind: small crops leave the GPU room for both
        timeout "${GPU_SECONDS:-420}" python3 benchmarks/bench_precision.py run --data-root .gpu_data \
            --kinds "$kind" --images "$images" --device "${DEVICE:-cuda}" --pieces "$out/bench_precision.jsonl" \
            --json "$out/bench_precision_$kind.json" ${BENCH_ARGS:-} >"$out/log_$kind" 2>&1 || echo "$kind: stopped ($?)" >>"$out/log" &
    done
    wait
    python3 benchmarks/bench_precision.py summary --pieces "$out/bench_precision.jsonl" \
        --json "$out/bench_precision.json" | tee -a "$out/log"
    rm -f "$out"/bench_precision_*.json
    ;;
*)
    echo "usage: bash benchmarks/gpu_checks.sh pack [DATA_ROOT] | run   (IMAGES, DEVICE, GPU_SECONDS, OUT, BENCH_ARGS)" >&2
    exit 2
    ;;
esac
