#!/usr/bin/env bash
# Train detectors on a lent GPU machine from the kit `make gpu-kit` built here (.gpu/: a face pack, the UltraFace
# trunk, the onnx2torch wheel); run it there from the repository's root with OUT set (the device tool's $OUT):
#
#   bash train/gpu_train.sh [--swap-blend 0.5 ...]     # any further `dfstream train detector` options
#
# SEEDS (default "0 1 2") runs one after the other, each for MINUTES (default 2.5) of wall time at most, STEPS
# (default 20000) at most. Each seed's last checkpoint and config come back as $OUT/s<seed>.pt and .json, with
# the log: export and score them here (`dfstream export`, `dfstream lofo score`; README "Training on a lent GPU").
# RECON_STEPS=N first trains the reconstruction autoencoder on the pack's faces (returned as $OUT/recon.pt) and
# gives it to every seed as --recon-fakes: the recipes that redraw faces (--recon-share, --recon-paste).
# TEMPORAL_STEPS=N then trains a temporal head (CNN features -> LSTM, `dfstream train temporal`) on each seed's
# backbone from the pack's real videos at every 10th frame, as `lofo score --temporal` reads them: $OUT/t<seed>.pt.
set -euo pipefail
kit=${KIT:-.gpu}
device=${DEVICE:-cuda}  # cpu: a dry run of this script on a machine without one
out=${OUT:?set OUT to the folder whose files come back}
[ -f "$kit/real_train.npz" ] || { echo "no $kit/real_train.npz: run 'make gpu-kit' here first and carry $kit" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$kit"/whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" DFSTREAM_MODELS="$PWD/$kit/models" PYTHONUNBUFFERED=1
log="$out/gpu_train.log"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' || true
  # the TensorRT path needs torch-tensorrt, which this image lacks and which does not fit the carry: these skip
  python3 -m pytest -q -p no:cacheprovider tests/test_engines_tensorrt.py -rs || true
} 2>&1 | tee "$log"
recon=()
if [ -n "${RECON_STEPS:-}" ]; then
  python3 -m dfstream train recon --pack "$kit/real_train.npz" --device "$device" --steps "$RECON_STEPS" \
      --cache-dir /tmp/dfstream-faces -o "$out/recon.pt" --no-progress 2>&1 | tee -a "$log"
  recon=(--recon-fakes "$out/recon.pt")
fi
for seed in ${SEEDS:-0 1 2}; do
  run="/tmp/dfstream-runs/s$seed"
  rm -rf "$run"
  python3 -m dfstream train detector --pack "$kit/real_train.npz" --device "$device" --seed "$seed" --run-dir "$run" \
      --steps "${STEPS:-20000}" --time-limit "${MINUTES:-2.5}" --workers "${WORKERS:-12}" --threads 4 --no-progress \
      --cache-dir /tmp/dfstream-faces "${recon[@]}" "$@" 2>&1 | tee -a "$log"
  cp "$run/checkpoints/last.pt" "$out/s$seed.pt"
  cp "$run/config.json" "$out/s$seed.json"
  if [ -n "${TEMPORAL_STEPS:-}" ]; then
    rm -rf "$run-temporal"
    python3 -m dfstream train temporal --detector "$out/s$seed.pt" --pack "$kit/real_train.npz" --every-n-frames 10 \
        --steps "$TEMPORAL_STEPS" --batch-size 16 --seed "$seed" --threads 8 --cache-dir /tmp/dfstream-faces \
        --run-dir "$run-temporal" --no-progress 2>&1 | tee -a "$log"
    cp "$run-temporal/checkpoints/last.pt" "$out/t$seed.pt"
  fi
done
