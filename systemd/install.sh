#!/usr/bin/env bash
# Installs radarcam on Raspberry Pi OS (Bookworm / Trixie) and enables it. Run from a source checkout:
#
#     sudo systemd/install.sh              # install or upgrade, then (re)start the services
#     systemd/install.sh --dry-run         # print every step, change nothing (no root needed)
#
# Idempotent: packages, users, files and the venv are only changed when they differ; the config file
# and the signing key are created once and never overwritten. See docs/operations.md.
#
# Options:
#   --dry-run             print what would be done, do nothing
#   --no-apt              skip Debian packages (already installed / offline)
#   --no-venv             skip the virtualenv and pip install (files, users and units only)
#   --no-start            enable the units but do not (re)start them
#   --without-chrony      do not install chrony (installed by default: with only systemd-timesyncd
#                         the kernel's error bound grows 0.5 ms a second between polls, so packets
#                         read "unsynchronised" most of the time; --with-chrony is still accepted)
#   --with-mqtt-tools     install mosquitto-clients (mosquitto_sub for broker troubleshooting)
#   --root DIR            install into an image mounted at DIR (offline: implies --no-start;
#                         needs --no-venv because a venv cannot be moved)
#   --prefix DIR          where the venv and docs go (default /opt/radarcam)
#   --radarcam-bin PATH   radarcam executable for config check / key creation
#                         (default: PREFIX/venv/bin/radarcam)
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/radarcam
ROOT=""
DRY_RUN=0
NO_APT=0
NO_VENV=0
NO_START=0
WITH_CHRONY=1
WITH_MQTT_TOOLS=0
RADARCAM_BIN=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --no-apt) NO_APT=1 ;;
    --no-venv) NO_VENV=1 ;;
    --no-start) NO_START=1 ;;
    --with-chrony) WITH_CHRONY=1 ;;
    --without-chrony) WITH_CHRONY=0 ;;
    --with-mqtt-tools) WITH_MQTT_TOOLS=1 ;;
    --root) ROOT=${2:?--root needs a directory}; shift ;;
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift ;;
    --radarcam-bin) RADARCAM_BIN=${2:?--radarcam-bin needs a path}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$ROOT" ]; then
  ROOT=$(cd "$ROOT" && pwd)
  NO_START=1
  if [ "$NO_VENV" = 0 ]; then
    echo "install.sh: --root needs --no-venv (a virtualenv cannot be relocated into an image)" >&2
    exit 2
  fi
fi
RADARCAM_BIN=${RADARCAM_BIN:-$PREFIX/venv/bin/radarcam}
ETC=/etc/radarcam
KEY=$ETC/keys/signing-key.pem
CONFIG=$ETC/radarcam.toml
SYSTEMCTL=(systemctl)
[ -n "$ROOT" ] && SYSTEMCTL=(systemctl "--root=$ROOT")

log() { echo "radarcam-install: $*"; }
warn() { echo "radarcam-install: WARNING: $*" >&2; }

# Every change goes through run(): in --dry-run it is printed instead of executed.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '[dry-run]'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

# Numeric ids from the target's own passwd/group (so --root works for users the host does not have).
uid_of() { awk -F: -v n="$1" '$1 == n { print $3; f = 1 } END { exit !f }' "$ROOT/etc/passwd"; }
gid_of() { awk -F: -v n="$1" '$1 == n { print $3; f = 1 } END { exit !f }' "$ROOT/etc/group"; }
owner() {  # owner USER GROUP -> "uid:gid" (names in dry-run when the users do not exist yet)
  local u g
  if u=$(uid_of "$1") && g=$(gid_of "$2"); then echo "$u:$g"; else echo "$1:$2"; fi
}

die() { echo "install.sh: $*" >&2; exit 1; }

# not_a_link PATH f|d: refuses (exit 1) a symlink, or something that is not a regular file (f) or a
# directory (d). /etc/radarcam is writable by the console's group (it replaces radarcam.toml there): a
# compromised console could swap a path root is about to chown/chmod for a symlink to /etc/shadow.
not_a_link() {
  local p=$1 kind=$2
  [ -L "$p" ] && die "$p is a symbolic link: refusing to change it as root (remove it and check who made it)"
  if [ -e "$p" ]; then
    case "$kind" in
      f) [ -f "$p" ] || die "$p is not a regular file: refusing to change it as root" ;;
      d) [ -d "$p" ] || die "$p is not a directory: refusing to change it as root" ;;
    esac
  fi
  return 0
}

# set_owner_mode PATH OWNER MODE f|d: chown + chmod through ONE descriptor opened with O_NOFOLLOW and
# checked with fstat, so a path swapped for a symlink after not_a_link is refused, never followed
# (chown -h alone would still leave chmod following it). python3 -I: nothing from the working directory
# or the environment is imported as root.
set_owner_mode() {
  local p=$1 own=$2 mode=$3 kind=$4
  if [ "$DRY_RUN" = 1 ]; then
    printf '[dry-run]'; printf ' %q' chown -h "$own" "$p"; printf '\n'
    printf '[dry-run]'; printf ' %q' chmod "$mode" "$p"; printf '\n'
    return 0
  fi
  python3 -I - "$p" "$own" "$mode" "$kind" <<'PY'
import grp, os, pwd, stat, sys

path, own, mode, kind = sys.argv[1], sys.argv[2], int(sys.argv[3], 8), sys.argv[4]
user, _, group = own.partition(":")
uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
what = "a directory" if kind == "d" else "a regular file"
flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
if kind == "d":
    flags |= os.O_DIRECTORY
try:
    fd = os.open(path, flags)
except OSError as exc:
    sys.exit(f"install.sh: {path}: {exc.strerror}: refusing to change it as root (a symbolic link, or not {what})")
try:
    st = os.fstat(fd)
    if not (stat.S_ISDIR(st.st_mode) if kind == "d" else stat.S_ISREG(st.st_mode)):
        sys.exit(f"install.sh: {path} is not {what}: refusing to change it as root")
    os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)
finally:
    os.close(fd)
PY
}

# install_file SRC DEST MODE USER GROUP: copies only when the content differs, then fixes owner/mode.
# The destinations are root's folders; a symlink there (systemctl link) is replaced by the file, as
# install(1) does, never written through.
install_file() {
  local src=$1 dest=$ROOT$2 mode=$3 own
  own=$(owner "$4" "$5")
  if [ ! -L "$dest" ] && [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    log "unchanged $2"
  else
    log "installing $2"
    run install -D -m "$mode" "$src" "$dest"
  fi
  set_owner_mode "$dest" "$own" "$mode" f
}

# ensure_dir PATH MODE USER GROUP: never through a symlink (see not_a_link).
ensure_dir() {
  local dest=$ROOT$1 own
  own=$(owner "$3" "$4")
  not_a_link "$dest" d
  [ -d "$dest" ] || run mkdir -p "$dest"
  set_owner_mode "$dest" "$own" "$2" d
}

# ---------------------------------------------------------------------------------------- preflight
if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or with --dry-run to see what it would do" >&2
  exit 1
fi
codename=$(. "$ROOT/etc/os-release" 2>/dev/null && echo "${VERSION_CODENAME:-unknown}" || echo unknown)
case "$codename" in
  bookworm|trixie) log "target: $codename" ;;
  *) warn "untested OS release '$codename' (Raspberry Pi OS Bookworm or Trixie expected); continuing" ;;
esac
[ -n "$ROOT" ] && log "installing into image root $ROOT (offline)"
[ "$DRY_RUN" = 1 ] && log "dry run: nothing will be changed"

# ---------------------------------------------------------------------------------------- 1. packages
# picamera2 and libcamera come from apt (they match the kernel's camera stack); the venv sees them
# through --system-site-packages. --no-install-recommends keeps the desktop preview stack (Qt, OpenGL)
# off a headless unit.
APT_PKGS=(python3 python3-venv python3-picamera2 python3-lgpio fontconfig fonts-dejavu-core fonts-noto-core
          fonts-kacst fonts-hosny-amiri)
[ "$WITH_CHRONY" = 1 ] && APT_PKGS+=(chrony)
[ "$WITH_MQTT_TOOLS" = 1 ] && APT_PKGS+=(mosquitto-clients)
if [ "$NO_APT" = 1 ]; then
  log "skipping Debian packages (--no-apt)"
else
  missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" && continue
    if ! apt-cache show "$p" >/dev/null 2>&1; then
      case "$p" in
        python3-picamera2|python3-lgpio)
          warn "$p is not in this machine's apt sources (it comes from Raspberry Pi OS);" \
               "apt-get will fail on it: on other machines install with --no-apt" ;;
      esac
    fi
    missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages: all present"
  else
    log "Debian packages to install: ${missing[*]}"
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
fi

# ---------------------------------------------------------------------------------------- 2. users
install_file "$SRC/systemd/radarcam.sysusers" /etc/sysusers.d/radarcam.conf 0644 root root
if [ -n "$ROOT" ]; then
  run systemd-sysusers "--root=$ROOT" "$ROOT/etc/sysusers.d/radarcam.conf"
else
  run systemd-sysusers /etc/sysusers.d/radarcam.conf
fi

# ---------------------------------------------------------------------------------------- 3. directories
# /etc/radarcam: the console (group radarcam-console) replaces radarcam.toml atomically (temp + rename),
# so it may create files here; the sticky bit stops it renaming or deleting what it does not own
# (keys/, tls/). setgid keeps new files in group radarcam-console, which the daemon is a member of.
ensure_dir "$ETC" 3770 root radarcam-console
ensure_dir "$ETC/keys" 00700 radarcam radarcam
ensure_dir "$ETC/tls" 00750 root radarcam
# MQTT password and TLS files: the only folder the console may name files in (console.allowed_file_dirs).
# Root's, so the console can neither plant files nor symlinks there; readable by the daemon's group only.
ensure_dir "$ETC/mqtt" 00750 root radarcam
ensure_dir /var/lib/radarcam 0700 radarcam radarcam
ensure_dir /var/lib/radarcam-console 0700 radarcam-console radarcam-console

# ---------------------------------------------------------------------------------------- 4. units, udev, tmpfiles
# The units name /opt/radarcam's radarcam; with --prefix they must name that prefix's (else 203/EXEC).
UNITS_TMP=$(mktemp -d)
trap 'rm -rf "$UNITS_TMP"' EXIT
for unit in radarcam.service radarcam-console.service; do
  sed "s#/opt/radarcam/#${PREFIX%/}/#g" "$SRC/systemd/$unit" > "$UNITS_TMP/$unit"
  install_file "$UNITS_TMP/$unit" "/etc/systemd/system/$unit" 0644 root root
done
install_file "$SRC/systemd/99-radarcam.rules" /etc/udev/rules.d/99-radarcam.rules 0644 root root
install_file "$SRC/systemd/radarcam.tmpfiles" /etc/tmpfiles.d/radarcam.conf 0644 root root
if [ -n "$ROOT" ]; then
  run systemd-tmpfiles --create "--root=$ROOT" "$ROOT/etc/tmpfiles.d/radarcam.conf"
else
  run systemd-tmpfiles --create /etc/tmpfiles.d/radarcam.conf
fi
install_file "$SRC/docs/operations.md" "$PREFIX/docs/operations.md" 0644 root root
# ANPR models and their cards: device/anpr/reader.py looks in /usr/share/radarcam/models when not
# running from a checkout. Read-only for everyone; the sha256 of each goes into every packet.
models=0
for f in "$SRC"/models/*.tflite "$SRC"/models/*.json; do
  [ -f "$f" ] || continue
  install_file "$f" "/usr/share/radarcam/models/$(basename "$f")" 0644 root root
  models=$((models + 1))
done
[ "$models" -gt 0 ] || warn "no models/*.tflite in $SRC: ANPR will not start (anpr.enabled = false to run without)"

# ---------------------------------------------------------------------------------------- 5. venv
if [ "$NO_VENV" = 1 ]; then
  log "skipping the virtualenv (--no-venv)"
else
  if [ -x "$PREFIX/venv/bin/python" ]; then
    log "virtualenv $PREFIX/venv exists"
  else
    run python3 -m venv --system-site-packages "$PREFIX/venv"
  fi
  # Bookworm's apt numpy is 1.x and picamera2's compiled helpers (simplejpeg) are built against it:
  # a numpy 2 wheel in the venv would shadow it and break them. Keep the venv on the same major.
  constraints=()
  sysnp=$(python3 -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
  if [ "${sysnp%%.*}" = 1 ]; then
    cfile=$PREFIX/numpy-constraint.txt
    if [ "$DRY_RUN" = 0 ]; then echo "numpy<2" >"$cfile"; fi
    constraints=(--constraint "$cfile")
    log "system numpy $sysnp: constraining the venv to numpy<2"
  fi
  run "$PREFIX/venv/bin/pip" install --disable-pip-version-check --upgrade "${constraints[@]}" "$SRC"
fi

# ---------------------------------------------------------------------------------------- 6. config
# The console owns this file and can replace it at any time: never follow it (see set_owner_mode).
not_a_link "$ROOT$CONFIG" f
if [ -f "$ROOT$CONFIG" ]; then
  log "kept existing $CONFIG"
else
  log "creating $CONFIG from the example: edit device.id, site, uplink before going live"
  run install -m 0640 "$SRC/systemd/radarcam.toml.example" "$ROOT$CONFIG"
fi
set_owner_mode "$ROOT$CONFIG" "$(owner radarcam-console radarcam-console)" 0640 f
if [ -x "$RADARCAM_BIN" ] || [ "$DRY_RUN" = 1 ]; then
  run "$RADARCAM_BIN" config check "$ROOT$CONFIG"
else
  warn "$RADARCAM_BIN not found: config not checked"
fi

# ---------------------------------------------------------------------------------------- 7. signing key
# Created once, by the radarcam user, 0600. Never replaced here: a new key means a new key id at the
# registry (see docs/operations.md, "Replacing the signing key").
not_a_link "$ROOT$KEY" f
if [ -f "$ROOT$KEY" ]; then
  log "kept existing signing key $KEY"
elif [ -x "$RADARCAM_BIN" ] || [ "$DRY_RUN" = 1 ]; then
  log "creating the signing key $KEY"
  if [ -n "$ROOT" ]; then
    run "$RADARCAM_BIN" keys init --path "$ROOT$KEY"
  else
    run runuser -u radarcam -- "$RADARCAM_BIN" keys init --path "$KEY"
  fi
else
  warn "$RADARCAM_BIN not found: no signing key created; run later: radarcam keys init --path $KEY"
fi
if [ -f "$ROOT$KEY" ] || [ "$DRY_RUN" = 1 ]; then
  set_owner_mode "$ROOT$KEY" "$(owner radarcam radarcam)" 0600 f
fi

# ---------------------------------------------------------------------------------------- 8. enable
if [ -z "$ROOT" ]; then
  run systemctl daemon-reload
  run udevadm control --reload-rules
  run udevadm trigger --action=add --subsystem-match=tty
fi
run "${SYSTEMCTL[@]}" enable radarcam.service radarcam-console.service
if [ "$NO_START" = 1 ]; then
  log "not starting the services (--no-start / --root)"
else
  run systemctl restart radarcam.service radarcam-console.service
fi

# ---------------------------------------------------------------------------------------- 9. next steps
host=$(hostname -I 2>/dev/null | awk '{print $1}')
cat <<EOF
radarcam-install: done.
  Check the unit:     sudo $RADARCAM_BIN selftest --config $CONFIG
  Daemon log:         journalctl -u radarcam -f
  Console:            https://${host:-<unit-ip>}:8443/  (self-signed certificate on first start)
  First login:        the one-time setup code is in the console log:
                      journalctl -u radarcam-console -b | grep -i "setup code"
  Key fingerprint:    register it at the registry before the first packet is accepted:
                      sudo -u radarcam $RADARCAM_BIN keys show --path $KEY
EOF
