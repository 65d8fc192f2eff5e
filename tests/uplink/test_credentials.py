"""The uplink never sends a private key as its MQTT password, wherever the file lies."""

from __future__ import annotations

import pytest

from device.config import UplinkConfig
from device.uplink.keys import generate_key
from device.uplink.mqtt import UplinkClient


def test_a_private_key_is_never_the_mqtt_password(tmp_path) -> None:
    """Config validation keeps uplink files out of the key directories; this is the check at the point of
    use, for a copy of the key elsewhere (no connection is attempted: it fails before the client exists)."""
    copy = tmp_path / "mqtt-password"
    generate_key(copy)
    cfg = UplinkConfig(host="127.0.0.1", port=1, username="cam-1", password_file=copy)
    up = UplinkClient(cfg, "cam-1", outbox=None)
    with pytest.raises(ValueError, match="holds a private key"):
        up.start()
    (tmp_path / "plain").write_text("s3cret\n")
    ok = UplinkClient(cfg.model_copy(update={"password_file": tmp_path / "plain"}), "cam-1", outbox=None)
    ok.start()  # a plain password builds a client (the broker on port 1 is never reached)
    ok.stop()
