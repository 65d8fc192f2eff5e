"""The uplink never sends a private key as its MQTT password, wherever the file lies."""

from __future__ import annotations

from device.config import UplinkConfig
from device.uplink.keys import generate_key
from device.uplink.mqtt import UplinkClient


def refusal(up: UplinkClient) -> str:
    """Why the uplink would not set itself up: it says so and stays down (retried), it does not raise
    (that stopped the daemon), and no MQTT client exists, so nothing was sent."""
    up.start()
    try:
        h = up.health()
        assert h["state"] == "fault" and not h["connected"] and up._client is None
        return h["setup_error"]
    finally:
        up.stop()


def test_a_private_key_is_never_the_mqtt_password(tmp_path) -> None:
    """Config validation keeps uplink files out of the key directories; this is the check at the point of
    use, for a copy of the key elsewhere (no connection is attempted: it fails before the client exists)."""
    copy = tmp_path / "mqtt-password"
    generate_key(copy)
    cfg = UplinkConfig(host="127.0.0.1", port=1, username="cam-1", password_file=copy)
    assert "holds a private key" in refusal(UplinkClient(cfg, "cam-1", outbox=None))
    (tmp_path / "plain").write_text("s3cret\n")
    ok = UplinkClient(cfg.model_copy(update={"password_file": tmp_path / "plain"}), "cam-1", outbox=None)
    ok.start()  # a plain password builds a client (the broker on port 1 is never reached)
    assert "state" not in ok.health() and ok._client is not None
    ok.stop()


def test_the_uplink_refuses_a_symlink_or_a_link_to_the_signing_key(tmp_path) -> None:
    """The file is opened without following a link and checked by inode against the unit's key, so a
    console that swaps the password file for a link after the config check gains nothing."""
    from device.config import DeviceConfig

    device = DeviceConfig(id="cam-1", state_dir=tmp_path / "state")
    key = device.state_dir / "keys" / "signing-key.pem"
    generate_key(key)
    (tmp_path / "plain").write_text("s3cret\n")
    link = tmp_path / "mqtt-password"
    link.symlink_to(tmp_path / "plain")
    cfg = UplinkConfig(host="127.0.0.1", port=1, username="cam-1", password_file=link)
    assert "symbolic link" in refusal(UplinkClient(cfg, "cam-1", outbox=None, device=device))
    hard = tmp_path / "hard-password"
    hard.hardlink_to(key)
    why = refusal(
        UplinkClient(cfg.model_copy(update={"password_file": hard}), "cam-1", outbox=None, device=device)
    )
    assert "signing key" in why or "private key" in why
