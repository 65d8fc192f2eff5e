#!/usr/bin/env bash
# Installs what `make test` / `make demo` need on a fresh Debian / Raspberry Pi OS machine:
# Debian packages (when missing and run as root), then a virtualenv with the project and its dev extras.
# Idempotent: cheap when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DEB_PKGS=(mosquitto chromium fonts-dejavu-core fonts-noto-core fonts-noto-mono fonts-liberation fonts-kacst
          fonts-kacst-one fonts-arabeyes fonts-hosny-amiri fonts-sil-scheherazade fonts-freefont-ttf)
# More Arabic type faces for the OCR's training (models/train, stage 5): only `make models` needs them
# (BOOTSTRAP_TRAINING=1); every face of the other pools, held-out ones included, is in DEB_PKGS (tested).
TRAINING_DEB_PKGS=(fonts-hosny-thabit fonts-sil-lateef fonts-lemonada fonts-sil-alkalami fonts-sil-harmattan
                   fonts-farsiweb fonts-freefarsi fonts-unikurdweb fonts-ukij-uyghur fonts-noto-extra)
if [ "${BOOTSTRAP_TRAINING:-0}" = 1 ]; then
  DEB_PKGS+=("${TRAINING_DEB_PKGS[@]}")
fi

missing=()
for p in "${DEB_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: WARNING missing Debian packages (run as root or install them): ${missing[*]}" >&2
  fi
fi
# The test suite starts its own mosquitto instances; the packaged system service is not needed.
if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
  systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[dev]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
