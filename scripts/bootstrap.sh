#!/usr/bin/env bash
# Installs what `make test` / `make demo` need on a fresh Debian / Raspberry Pi OS machine:
# Debian packages (when missing and run as root), then a virtualenv with the project and its dev extras.
# Idempotent: cheap when everything is already there.
set -euo pipefail
# All of its output goes to stderr: stdout belongs to what make runs next (make demo DEMO_ARGS=--json).
exec 1>&2
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# python3-venv: Debian's python3 lacks ensurepip without it; fontconfig: the data bar finds its fonts with
# fc-match (chromium happens to pull it in on a desktop, a headless machine may lack it).
DEB_PKGS=(python3 python3-venv fontconfig mosquitto chromium fonts-dejavu-core fonts-noto-core fonts-noto-mono fonts-liberation fonts-kacst
          fonts-kacst-one fonts-arabeyes fonts-hosny-amiri fonts-sil-scheherazade fonts-freefont-ttf)
# More Arabic type faces for the OCR's training (models/train, stage 5): only `make models` needs them
# (BOOTSTRAP_TRAINING=1); every face of the other pools, held-out ones included, is in DEB_PKGS (tested).
TRAINING_DEB_PKGS=(fonts-hosny-thabit fonts-sil-lateef fonts-lemonada fonts-sil-alkalami fonts-sil-harmattan
                   fonts-farsiweb fonts-freefarsi fonts-unikurdweb fonts-ukij-uyghur fonts-noto-extra)
if [ "${BOOTSTRAP_TRAINING:-0}" = 1 ]; then
  DEB_PKGS+=("${TRAINING_DEB_PKGS[@]}")
fi

case "$(uname -m)" in
  x86_64|aarch64) ;;
  *) echo "bootstrap: $(uname -m) is not supported: the test and demo tools (jaxlib, playwright, ai-edge-litert)" \
          "have wheels for x86_64 and aarch64 only; on a Raspberry Pi use the 64-bit Raspberry Pi OS" >&2
     exit 1 ;;
esac

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
    # The package starts a system broker; the tests and the demo run their own. Only the service this
    # run installed is stopped: a broker the machine already had is left alone.
    if [[ " ${missing[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null; then
      systemctl disable --now mosquitto >/dev/null 2>&1 || true
    fi
  else
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    echo "bootstrap: (or run make as root, which installs them)" >&2
    exit 1
  fi
fi

# A venv without pip is what Debian's python3 -m venv leaves behind when python3-venv was missing:
# rebuild it rather than fail on the missing pip every time after.
if [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/pip" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv --clear "$VENV"
fi
stamp="$VENV/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[dev]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
