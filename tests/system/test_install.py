"""systemd/install.sh: --dry-run changes nothing and shows every step; an offline install into an
image root (--root) creates users, files and the key with the right owners, and is idempotent."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "systemd" / "install.sh"
RADARCAM = Path(sys.executable).with_name("radarcam")
needs_systemd_tools = pytest.mark.skipif(
    not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles") and shutil.which("systemctl")),
    reason="systemd-sysusers / systemd-tmpfiles / systemctl not installed",
)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def test_script_syntax():
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)
    assert os.access(INSTALL, os.X_OK)


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path):
    prefix = tmp_path / "opt" / "radarcam"
    watched = [Path(p) for p in ("/etc/radarcam", "/etc/systemd/system/radarcam.service", "/etc/sysusers.d")]
    before = {p: p.exists() and p.stat().st_mtime_ns for p in watched}
    out = sh("--dry-run", "--prefix", str(prefix)).stdout
    assert {p: p.exists() and p.stat().st_mtime_ns for p in watched} == before
    assert not prefix.exists() and not (tmp_path / "opt").exists()
    # Packages: only missing ones are listed, so look for the install command and the flag.
    for step in (
        "systemd-sysusers /etc/sysusers.d/radarcam.conf",
        "/etc/systemd/system/radarcam.service",
        "/etc/systemd/system/radarcam-console.service",
        "/etc/udev/rules.d/99-radarcam.rules",
        "systemd-tmpfiles --create /etc/tmpfiles.d/radarcam.conf",
        f"python3 -m venv --system-site-packages {prefix}/venv",
        f"{prefix}/venv/bin/pip install",
        f"runuser -u radarcam -- {prefix}/venv/bin/radarcam keys init --path /etc/radarcam/keys/signing-key.pem",
        "chmod 0600 /etc/radarcam/keys/signing-key.pem",
        "systemctl enable radarcam.service radarcam-console.service",
        "udevadm control --reload-rules",
    ):
        assert f"{step}" in out, step
    assert "/usr/share/radarcam/models/anpr_ocr.tflite" in out
    apt_lines = [ln for ln in out.splitlines() if "apt-get install" in ln]
    assert all("--no-install-recommends" in ln for ln in apt_lines)
    assert apt_lines or "Debian packages: all present" in out
    # chrony by default (with timesyncd alone packets read "unsynchronised" most of the time)
    installed = subprocess.run(["dpkg", "-s", "chrony"], capture_output=True).returncode == 0
    assert installed or any(" chrony" in ln for ln in apt_lines)
    without = sh("--dry-run", "--prefix", str(prefix), "--without-chrony").stdout
    assert not any(" chrony" in ln for ln in without.splitlines() if "apt-get install" in ln)
    for line in out.splitlines():
        assert line.startswith(("[dry-run] ", "radarcam-install: ", "  ")), line
    assert "setup code" in out  # the console hint


def test_bad_options_are_refused(tmp_path):
    res = sh("--frobnicate", check=False)
    assert res.returncode == 2 and "unknown option --frobnicate" in res.stderr
    res = sh("--root", str(tmp_path), check=False)
    assert res.returncode == 2 and "--no-venv" in res.stderr


def tree_digest(root: Path) -> dict[str, tuple[str, int, int, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
        out[str(p.relative_to(root))] = (data, st.st_mode, st.st_uid, st.st_gid)
    return out


def ids(root: Path, name: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == name:
            return int(f[2]), int(f[3])
    raise AssertionError(f"{name} not in image passwd")


@needs_systemd_tools
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to the image's users needs root")
def test_offline_install_into_image_is_complete_and_idempotent(tmp_path):
    root = tmp_path / "img"
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "os-release"):
        if Path("/etc", f).exists():
            shutil.copy(Path("/etc", f), root / "etc" / f)
    args = ("--root", str(root), "--no-apt", "--no-venv", "--radarcam-bin", str(RADARCAM))
    first = sh(*args).stdout
    assert "creating the signing key" in first

    daemon_uid, daemon_gid = ids(root, "radarcam")
    console_uid, console_gid = ids(root, "radarcam-console")
    assert daemon_uid != console_uid
    key = root / "etc/radarcam/keys/signing-key.pem"
    st = key.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, daemon_uid)
    keys_dir = key.parent.stat()
    assert (keys_dir.st_mode & 0o7777, keys_dir.st_uid) == (0o700, daemon_uid)
    etc = (root / "etc/radarcam").stat()
    assert (etc.st_mode & 0o7777, etc.st_gid) == (0o3770, console_gid)
    mqtt = (root / "etc/radarcam/mqtt").stat()  # console.allowed_file_dirs: root's, the daemon reads
    assert (mqtt.st_mode & 0o7777, mqtt.st_uid, mqtt.st_gid) == (0o750, 0, daemon_gid)
    cfg = (root / "etc/radarcam/radarcam.toml").stat()
    assert (cfg.st_mode & 0o777, cfg.st_uid) == (0o640, console_uid)
    for unit in ("radarcam.service", "radarcam-console.service"):
        assert (root / "etc/systemd/system" / unit).read_bytes() == (REPO / "systemd" / unit).read_bytes()
        assert (root / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink()
    assert (root / "etc/udev/rules.d/99-radarcam.rules").exists()
    for model in (REPO / "models").glob("*.tflite"):
        assert (root / "usr/share/radarcam/models" / model.name).read_bytes() == model.read_bytes()
    run_dir = (root / "run/radarcam").stat()
    assert (run_dir.st_mode & 0o777, run_dir.st_uid) == (0o711, daemon_uid)
    groups = (root / "etc/group").read_text()
    for g in ("dialout", "video", "gpio", "radarcam-console"):
        line = next(ln for ln in groups.splitlines() if ln.startswith(g + ":"))
        assert "radarcam" in line.split(":")[3].split(","), line

    # The console user cannot read the key; the daemon user can (real permission checks, as each user
    # with its image groups, resolving from the image's /etc so the temp dir's own modes do not matter).
    def groups_of(user: str) -> list[int]:
        return [int(f[2]) for f in (ln.split(":") for ln in groups.splitlines()) if user in f[3].split(",")]

    etc_fd = os.open(root / "etc", os.O_RDONLY | os.O_DIRECTORY)

    def can_read(uid: int, gid: int, user: str) -> bool:
        code = (
            f"import os; os.setgroups({groups_of(user)}); os.setgid({gid}); os.setuid({uid}); "
            f"os.read(os.open('radarcam/keys/signing-key.pem', os.O_RDONLY, dir_fd={etc_fd}), 10)"
        )
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, pass_fds=(etc_fd,))
        return res.returncode == 0

    try:
        assert can_read(daemon_uid, daemon_gid, "radarcam")
        assert not can_read(console_uid, console_gid, "radarcam-console")
    finally:
        os.close(etc_fd)

    # Second run: nothing changes; a technician's config edit and the key survive.
    cfg_path = root / "etc/radarcam/radarcam.toml"
    cfg_path.write_text(cfg_path.read_text().replace('id = "RC-0001"', 'id = "RC-0042"'))
    snapshot = tree_digest(root)
    second = sh(*args).stdout
    assert "kept existing /etc/radarcam/radarcam.toml" in second
    assert "kept existing signing key" in second
    assert "radarcam-install: installing /" not in second
    assert tree_digest(root) == snapshot


def test_example_config_is_valid_and_every_file_names_the_same_key():
    from device import config as cfgmod

    cfg = cfgmod.load(REPO / "systemd" / "radarcam.toml.example")
    key = "/etc/radarcam/keys/signing-key.pem"
    assert str(cfg.device.key_path) == key
    assert (
        f"KEY=$ETC/keys/{Path(key).name}" in INSTALL.read_text()
        and "ETC=/etc/radarcam" in INSTALL.read_text()
    )
    assert f"LoadCredential=signing-key:{key}" in (REPO / "systemd" / "radarcam.service").read_text()
    assert cfg.device.state_dir == Path("/var/lib/radarcam") and cfg.radar.port == "/dev/radar"


@needs_systemd_tools
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to the image's users needs root")
def test_prefix_reaches_the_installed_units(tmp_path):
    """With --prefix the venv lives there, so the units must start that radarcam (they named
    /opt/radarcam's whatever the prefix: 203/EXEC on the first start)."""
    root = tmp_path / "img"
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "os-release"):
        if Path("/etc", f).exists():
            shutil.copy(Path("/etc", f), root / "etc" / f)
    sh("--root", str(root), "--no-apt", "--no-venv", "--radarcam-bin", str(RADARCAM), "--prefix", "/srv/rc")
    for unit, cmd in (("radarcam.service", "run"), ("radarcam-console.service", "console")):
        text = (root / "etc/systemd/system" / unit).read_text()
        assert f"ExecStart=/srv/rc/venv/bin/radarcam {cmd} " in text and "/opt/radarcam" not in text
        assert "file:///srv/rc/docs/operations.md" in text


def _image(tmp_path: Path) -> Path:
    root = tmp_path / "img"
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "os-release"):
        if Path("/etc", f).exists():
            shutil.copy(Path("/etc", f), root / "etc" / f)
    return root


@needs_systemd_tools
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to the image's users needs root")
@pytest.mark.parametrize("swapped", ["etc/radarcam/radarcam.toml", "etc/radarcam/mqtt"])
def test_a_symlink_in_the_console_writable_folder_is_refused_not_followed(tmp_path, swapped):
    """/etc/radarcam is writable by the console's group: a compromised console can replace radarcam.toml
    (its own file) or create mqtt/ before an upgrade makes it, as a symlink to /etc/shadow. Run as root,
    install.sh must stop with an error naming the path, and leave the link's target as it was."""
    root = _image(tmp_path)
    args = ("--root", str(root), "--no-apt", "--no-venv", "--radarcam-bin", str(RADARCAM))
    sh(*args)
    link = root / swapped
    if link.is_dir():  # mqtt/: a link to a folder is what `[ -d ] || mkdir; chown; chmod` followed
        link.rmdir()
        shadow = root / "etc" / "ssh-canary"
        shadow.mkdir(mode=0o755)
    else:
        link.unlink()
        shadow = root / "etc" / "shadow-canary"
        shadow.write_text("root:$6$secret:19000:0:99999:7:::\n")
        shadow.chmod(0o600)
    before = shadow.stat()
    link.symlink_to(shadow)
    res = sh(*args, check=False)
    assert res.returncode != 0
    assert f"{link} is a symbolic link" in res.stderr and "refusing" in res.stderr, res.stderr
    after = shadow.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert link.is_symlink()  # reported, not silently "repaired" either
    # a dry run reports it too (it is a check, not a change)
    dry = sh("--dry-run", "--root", str(root), "--no-apt", "--no-venv", check=False)
    assert dry.returncode != 0 and "is a symbolic link" in dry.stderr


@needs_systemd_tools
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to the image's users needs root")
def test_the_config_must_be_a_regular_file(tmp_path):
    """Not only symlinks: a FIFO in place of radarcam.toml (which root's chmod would also follow) is
    refused without blocking on it."""
    root = _image(tmp_path)
    cfg = root / "etc/radarcam/radarcam.toml"
    cfg.parent.mkdir(parents=True)
    os.mkfifo(cfg)
    res = sh("--root", str(root), "--no-apt", "--no-venv", "--radarcam-bin", str(RADARCAM), check=False)
    assert res.returncode != 0 and f"{cfg} is not a regular file" in res.stderr, res.stderr


@needs_systemd_tools
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to the image's users needs root")
def test_a_symlinked_unit_file_is_replaced_never_written_through(tmp_path):
    """Root's own folders may hold links (``systemctl link``): the installed file replaces the link, as
    install(1) does, and the link's target keeps its content, owner and mode."""
    root = _image(tmp_path)
    args = ("--root", str(root), "--no-apt", "--no-venv", "--radarcam-bin", str(RADARCAM))
    sh(*args)
    unit = root / "etc/systemd/system/radarcam.service"
    target = root / "srv-canary.service"
    target.write_text("[Unit]\nDescription=not radarcam\n")
    target.chmod(0o600)
    before = target.stat()
    unit.unlink()
    unit.symlink_to(target)
    sh(*args)
    assert not unit.is_symlink() and unit.read_bytes() == (REPO / "systemd/radarcam.service").read_bytes()
    after = target.stat()
    assert target.read_text() == "[Unit]\nDescription=not radarcam\n"
    assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)
