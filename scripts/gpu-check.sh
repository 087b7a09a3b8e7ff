#!/usr/bin/env bash
# The GPU path end to end, in under 5 minutes on a machine with one or more NVIDIA GPUs:
#   a short mixed-precision pretext and fine-tune under MirroredStrategy (every visible GPU),
#   export (with its parity checks against Keras), `classify --device cuda`,
#   `bench --device cuda`, and `bench --device tensorrt` where TensorRT builds an engine.
# Prints one summary line of figures at the end; exits non-zero if a step fails.
#
#   scripts/gpu-check.sh          on the GPUs
#   scripts/gpu-check.sh --cpu    the same steps on the CPU (two logical devices, tiny sizes):
#                                 checks this script on a machine without a GPU
#
# Needs `pip install -e ".[train]"` (tensorflow with CUDA, e.g. `pip install tensorflow[and-cuda]`).
# Work files go to a temporary folder, removed at the end (kept with KEEP=1).
set -euo pipefail

mode=gpu
if [[ "${1:-}" == "--cpu" ]]; then
    mode=cpu
elif [[ $# -gt 0 ]]; then
    echo "usage: scripts/gpu-check.sh [--cpu]" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/edge-ssl-gpu-check.XXXXXX")
if [[ "${KEEP:-0}" != 1 ]]; then
    trap 'rm -rf "$work"' EXIT
fi
log="$work/log.txt"
start=$(date +%s)

step() {  # step NAME COMMAND...: run it, its output into the log; say which step failed
    local name=$1
    shift
    echo "== $name: $*" >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        echo "gpu-check: FAILED at $name; last lines of $log:" >&2
        tail -n 25 "$log" >&2
        KEEP=1
        trap - EXIT
        echo "(work files kept in $work)" >&2
        exit 1
    fi
}

if [[ $mode == gpu ]]; then
    gpus=$(python -c 'import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null)
    if [[ "$gpus" == 0 ]]; then
        echo "gpu-check: TensorFlow sees no GPU (install tensorflow[and-cuda], check nvidia-smi);" \
             "scripts/gpu-check.sh --cpu runs the same steps on the CPU" >&2
        exit 1
    fi
    device=cuda
    size=64 per_class=500 unlabeled=1000 pretext_epochs=3 finetune_epochs=3 extra=()
    trt_device=tensorrt
else
    gpus=0
    device=cpu
    size=32 per_class=40 unlabeled=0 pretext_epochs=1 finetune_epochs=1
    extra=(--cpu-replicas 2 --width 0.35)
    trt_device=
fi

step "demo data" edge-ssl demo-data "$work/data" --per-class "$per_class" \
    --unlabeled "$unlabeled" --image-size "$size"
step "new images" edge-ssl demo-data "$work/new" --per-class 50 --unlabeled 0 --seed 1 \
    --image-size "$size"
step train edge-ssl train --data "$work/data" --strategy mirrored ${extra[@]+"${extra[@]}"} \
    --mixed-precision --image-size "$size" --pretext-epochs "$pretext_epochs" \
    --finetune-epochs "$finetune_epochs" --runs-dir "$work/runs" --name check
run="$work/runs/check"
step export edge-ssl export "$run"
step classify edge-ssl classify --device "$device" --model "$run/exports/classifier.onnx" \
    --output "$work/classified.csv" "$work/new/duck" "$work/new/fish"
step bench edge-ssl bench --device "$device" --batch-sizes 1,32 --iterations 50 \
    --json "$work/bench.json" "$run/exports/classifier.onnx"
trt=unavailable
if [[ -n "$trt_device" ]]; then
    echo "== tensorrt (allowed to fail)" >>"$log"
    if edge-ssl bench --device "$trt_device" --batch-sizes 1,32 --iterations 50 \
        --json "$work/trt.json" "$run/exports/classifier.onnx" >>"$log" 2>&1; then
        trt=built
    fi
fi

python - "$run" "$work" "$gpus" "$device" "$trt" "$(( $(date +%s) - start ))" <<'EOF'
import csv
import json
import sys
from pathlib import Path

run, work, gpus, device, trt, seconds = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:]
report = json.loads((run / "report.json").read_text())
config = json.loads((run / "config.json").read_text())
exported = json.loads((run / "exports" / "export_report.json").read_text())
pretext = report["pretext"]
finetune = report["methods"]["ssl_finetune"]["test"]
parity = [c for f in exported["files"] if f["precision"] == "fp32" for c in f["checks"]
          if c["check"].startswith("parity")]
rebuilt = [f["float32_rebuild"] for f in exported["files"] if "float32_rebuild" in f]
with (work / "classified.csv").open() as f:
    rows = list(csv.DictReader(f))
correct = sum(Path(row["path"]).parent.name == row["label"] for row in rows)


def b32(path: Path) -> str:
    results = json.loads(path.read_text())["results"]
    best = max(results, key=lambda r: r["batch_size"])
    return (f"{best['images_per_s']:.0f} img/s b{best['batch_size']} "
            f"(p50 b1 {min(results, key=lambda r: r['batch_size'])['p50_ms']:.2f} ms, "
            f"{best['provider']})")


print(f"gpu-check [{device}]: {gpus} GPU(s), {pretext['distribution']['replicas']} replicas, "
      f"mixed_precision={config['mixed_precision']}; pretext held-out rotation "
      f"{pretext['heldout_rotation']['percent']:.1f}% (n={pretext['heldout_rotation']['n']}), "
      f"{pretext['images_per_second']:.0f} train img/s; fine-tune test "
      f"{finetune['percent']:.1f}% (n={finetune['n']}); export parity "
      f"{sum(c['passed'] for c in parity)}/{len(parity)} passed, max |dp| "
      f"{max(c['max_abs_diff'] for c in parity):.1e}, float32 rebuild vs mixed max |dp| "
      f"{max(r['max_abs_diff_vs_trained'] for r in rebuilt):.1e}; classify {len(rows)} new images, "
      f"{100 * correct / len(rows):.0f}% right; "
      f"bench {b32(work / 'bench.json')}; tensorrt "
      + (b32(work / "trt.json") if trt == "built" else "unavailable")
      + f"; {seconds} s")
EOF
