#!/usr/bin/env bash
# Runs `python -m models.train <step>` under Keras' JAX backend on a GPU machine, from the bundle made
# by scripts/gpu_bundle.sh. Checkpoints go to $ANPR_TRAIN_WORK (default /tmp/radarcam-train); export
# them to TFLite with `python -m models.train ocr-export` back on a TensorFlow machine. Where $OUT is set
# (the lent device machine's folder that comes back), the checkpoints, log and timings are copied there.
set -euo pipefail
here=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl
mkdir -p /usr/share/fonts && tar -C /usr/share/fonts -xJf .gpu/fonts.tar.xz
export PYTHONPATH=/tmp/site:$here KERAS_BACKEND=jax LD_LIBRARY_PATH=$here/.gpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export ANPR_TRAIN_WORK=${ANPR_TRAIN_WORK:-/tmp/radarcam-train}
mkdir -p "$ANPR_TRAIN_WORK"
cp .gpu/*.keras .gpu/*.npz "$ANPR_TRAIN_WORK"/
python3 -c "import PIL.features as f, jax; print('raqm', f.check('raqm'), 'devices', jax.devices())"
rc=0
python3 -m models.train "$@" || rc=$?
if [ -n "${OUT:-}" ]; then
  cp "$ANPR_TRAIN_WORK"/ocr[0-9]*.keras "$ANPR_TRAIN_WORK"/train.log "$ANPR_TRAIN_WORK"/timing.json "$OUT"/ 2>/dev/null || true
fi
exit $rc
