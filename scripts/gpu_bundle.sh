#!/usr/bin/env bash
# Packs what an OCR training stage needs on a GPU machine that has Python, JAX and OpenCV but not this
# project's virtualenv, Debian fonts or network: the wheels Keras and the synthesiser need, the training
# fonts (paths kept relative to /usr/share/fonts, so the font pools resolve unchanged), libfribidi (the
# Arabic layout engine Pillow loads at run time), the checkpoint to resume from and the held-out
# selection crops. Output: .gpu/ (git-ignored), about 34 MB. Run from the repository root, after
# `make models` (or `python -m models.train ocr-recover`) has produced the checkpoint named by $1
# (default ocr10.keras: the deployed stage, what a new stage starts from).
set -euo pipefail
resume=${1:-ocr10.keras}
work=models/train/work
py=.venv/bin/python
mkdir -p .gpu
rm -f .gpu/*
for p in keras namex optree pillow pydantic pydantic_core annotated-types typing-inspection; do
  v=$($py -m pip show "$p" | sed -n 's/^Version: //p')
  $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu "$p==$v"
done
cp "$(ldconfig -p | sed -n 's/.*libfribidi.so.0 .*=> //p' | head -1)" .gpu/libfribidi.so.0
$py - >/tmp/radarcam-gpu-fonts <<'PY'
from device.anpr.synth import fonts as F

paths = set(F.pool("arabic", "train_wide")) | set(F.pool("latin", "train_wide"))
print("\n".join(sorted(p.removeprefix(str(F.ROOT) + "/") for p in paths)))
PY
tar -C /usr/share/fonts -cJf .gpu/fonts.tar.xz -T /tmp/radarcam-gpu-fonts
cp "$work/$resume" .gpu/
$py -c "import numpy as np, sys; np.savez_compressed(sys.argv[2], **np.load(sys.argv[1]))" \
  "$work/ocr_lines_data_2000_2_heldout.npz" .gpu/ocr_lines_data_2000_2_heldout.npz
du -sh .gpu
