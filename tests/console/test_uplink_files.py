"""The uplink page's file settings over real HTTPS: a path already in the file survives a re-submitted
form even outside ``console.allowed_file_dirs`` (a hand edit, an older wider default), any other path
must be in an allowed folder."""

from __future__ import annotations


def _post(c, **fields: str):
    _, _, html = c.get("/uplink")
    form = {"csrf": c.token(html), "_base_version": c.token(html, "_base_version"), **fields}
    return c.post("/uplink", form)


def test_an_unchanged_path_outside_the_allowed_folder_stays(env) -> None:
    legacy = env.tmp / "legacy" / "mqtt-password"
    text = env.config_path.read_text()
    env.config_path.write_text(text + f'\n[uplink]\nusername = "cam-1"\npassword_file = "{legacy}"\n')
    c = env.setup()
    status, _, _ = _post(c, **{"uplink.password_file": str(legacy), "uplink.host": "broker.example.org"})
    assert status == 303
    cfg = env.config()
    assert cfg.uplink.host == "broker.example.org" and cfg.uplink.password_file == legacy
    # another path outside the allowed folder is refused, on that field, and nothing is written
    before = env.config_path.read_bytes()
    other = env.tmp / "legacy" / "other"
    status, _, body = _post(c, **{"uplink.password_file": str(other), "uplink.host": "evil.example.org"})
    assert status == 422 and 'data-field="uplink.password_file"' in body and "must be under" in body
    assert env.config_path.read_bytes() == before
    # and a new one inside it is fine
    inside = env.etc / "mqtt-password"
    status, _, _ = _post(c, **{"uplink.password_file": str(inside)})
    assert status == 303 and env.config().uplink.password_file == inside


def test_the_allowed_folder_itself_and_zone_ids_are_refused(env) -> None:
    """Before, the folder itself passed as a password file (and a host with an IPv6 zone id carried any
    control or bidi character into the config, the audit and the sealed event)."""
    c = env.setup()
    before = env.config_path.read_bytes()
    for value in (str(env.etc), str(env.etc) + "/"):
        status, _, body = _post(c, **{"uplink.username": "cam-1", "uplink.password_file": value})
        assert status == 422 and 'data-field="uplink.password_file"' in body and "a file in it" in body
    status, _, body = _post(c, **{"uplink.host": "fe80::1%\u202e\nINFO forged line"})
    assert status == 422 and 'data-field="uplink.host"' in body
    assert env.config_path.read_bytes() == before
    status, _, _ = _post(c, **{"uplink.host": "fe80::1"})
    assert status == 303 and env.config().uplink.host == "fe80::1"
