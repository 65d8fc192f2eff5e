"""``radarcam keys|packet|registry`` sub-commands."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _key_path(args: argparse.Namespace) -> Path:
    if getattr(args, "path", None):
        return Path(args.path)
    from device import config as cfgmod

    cfg = cfgmod.load(args.config) if getattr(args, "config", None) else cfgmod.Config()
    if cfg.device.key_path:
        return cfg.device.key_path
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / "signing-key").exists():
        return Path(creds) / "signing-key"
    return cfg.device.state_dir / "keys" / "signing-key.pem"


def _keys_init(args: argparse.Namespace) -> int:
    from device.uplink.keys import KeyFileError, generate_key

    path = _key_path(args)
    try:
        key = generate_key(path, force=args.force)
    except KeyFileError as exc:
        print(f"radarcam: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"path": str(path), "key_id": key.key_id, "fingerprint": key.fingerprint}, indent=2))
    return 0


def _keys_show(args: argparse.Namespace) -> int:
    from device.uplink.keys import KeyFileError, load_signing_key, public_pem

    try:
        key = load_signing_key(_key_path(args))
    except KeyFileError as exc:
        print(f"radarcam: {exc}", file=sys.stderr)
        return 1
    if args.pem:
        sys.stdout.write(public_pem(key))
        return 0
    info = {"path": str(key.path), "key_id": key.key_id, "fingerprint": key.fingerprint}
    info["public_key_pem"] = public_pem(key)
    print(json.dumps(info, indent=2))
    return 0


def summarise(obj: Any) -> Any:
    """JSON-safe view of a payload: JPEG bytes become size + sha256, other bytes hex."""
    import hashlib

    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "jpeg" and isinstance(v, bytes):
                out[k] = {"bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()}
            else:
                out[k] = summarise(v)
        return out
    if isinstance(obj, list | tuple):
        return [summarise(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    return obj


def _packet_verify(args: argparse.Namespace) -> int:
    from device.uplink.keys import KeyFileError, load_public_key
    from device.uplink.packet import PacketError, image_problems, verify

    try:
        pub = load_public_key(args.pubkey)
    except KeyFileError as exc:
        print(f"radarcam: {exc}", file=sys.stderr)
        return 1
    rc = 0
    results = []
    chain: dict[int, tuple[str, str, str]] = {}  # seq -> (sha256 of the file, its prev_hash, file)
    for f in args.files:
        try:
            data = Path(f).read_bytes()
            payload = verify(data, pub)
        except OSError as exc:
            print(f"{f}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            rc = 1
            continue
        except PacketError as exc:
            print(f"{f}: INVALID: {exc}", file=sys.stderr)
            rc = 1
            continue
        problems = image_problems(payload)
        if problems:
            print(f"{f}: INVALID: {'; '.join(problems)}", file=sys.stderr)
            rc = 1
            continue
        chain[int(payload["seq"])] = (hashlib.sha256(data).hexdigest(), str(payload.get("prev_hash")), f)
        results.append({"file": f, "valid": True, "packet": summarise(payload)})
    # Consecutive seqs among the files given must link: each names its predecessor's sha256.
    broken = [s for s in sorted(chain) if s - 1 in chain and chain[s][1] != chain[s - 1][0]]
    for s in broken:
        print(f"{chain[s][2]}: BROKEN CHAIN: prev_hash is not the sha256 of seq {s - 1} ({chain[s - 1][2]})",
              file=sys.stderr)  # fmt: skip
        rc = 1
    for r in results:
        print(json.dumps(r, indent=2, ensure_ascii=False))
    links = sum(1 for s in chain if s - 1 in chain)
    if len(chain) > 1:
        print(json.dumps({"chain": {"links_checked": links, "broken": broken}}), file=sys.stderr)
    return rc


def _parse_device_keys(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        device, sep, pem = item.partition("=")
        if not sep or not device or not pem:
            raise SystemExit(f"radarcam: --device-key wants DEVICE=PEM, got {item!r}")
        out[device] = pem
    return out


def _registry_run(args: argparse.Namespace) -> int:
    from device.config import TlsConfig
    from device.uplink.keys import KeyFileError
    from device.uplink.registry import Registry, load_keys

    host, _, port = args.broker.rpartition(":")
    try:
        keys: dict[str, Any] = dict(load_keys(args.keys_dir)) if args.keys_dir else {}
        keys.update(load_keys(_parse_device_keys(args.device_key)))
    except KeyFileError as exc:
        print(f"radarcam: {exc}", file=sys.stderr)
        return 1
    if not keys:
        print("radarcam: no device keys (--device-key DEVICE=PEM or --keys-dir)", file=sys.stderr)
        return 2
    tls = None
    if (args.cert or args.key) and not args.ca:  # they were ignored: plain text, certificate unused
        print("radarcam: --cert/--key need --ca (TLS); without it the registry would connect in plain text",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.ca:
        tls = TlsConfig(enabled=True, ca_file=args.ca, cert_file=args.cert, key_file=args.key)
    password = None
    if args.password_file:  # a file, not an argument: argv is visible to every user in ps
        password = Path(args.password_file).read_text(encoding="utf-8").strip()
    reg = Registry(
        args.db, host=host or "127.0.0.1", port=int(port), tls=tls, group=args.group, keys=keys,
        topic_prefix=args.prefix, username=args.username, password=password,
    )  # fmt: skip
    reg.start(timeout=args.connect_timeout)
    print(f"registry {reg.instance}: subscribed on {args.broker} for {sorted(keys)}", file=sys.stderr)
    try:
        while True:
            time.sleep(args.stats_every)
            print(json.dumps(reg.stats(), sort_keys=True), file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        reg.close()
    return 0


def _registry_export(args: argparse.Namespace) -> int:
    from device.uplink.keys import public_pem
    from device.uplink.registry import Registry, load_keys

    given = load_keys(_parse_device_keys(args.device_key))
    reg = Registry(args.db, keys={})  # read-only: an export never changes which key the registry holds
    try:
        n = reg.export(args.out)
    finally:
        reg.close()
    for device, key in given.items():  # keys for databases that predate stored keys
        pem = Path(args.out) / f"{device}.pub.pem"
        if not pem.exists():
            pem.write_text(public_pem(key))
    print(f"exported {n} packets to {args.out}")
    return 0


def _registry_revoke_key(args: argparse.Namespace) -> int:
    from device.uplink.registry import Registry

    reg = Registry(args.db, keys={})
    try:
        try:
            stored = reg.revoke_key(args.device, args.key_id, args.reason)
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
        doubts = reg.chain(args.device)["revoked_key_seqs"]
    finally:
        reg.close()
    print(json.dumps({"device_id": args.device, "key_id": args.key_id, "stored_packets": stored,
                      "stored_seqs": doubts}))  # fmt: skip
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="device signing key (Ed25519)")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    ki = ksub.add_parser("init", help="create the device key (0600); refuses to overwrite without --force")
    ki.add_argument("--path", help="key file (default: config device.key_path or state_dir/keys)")
    ki.add_argument("--config", help="config file to take device.key_path / state_dir from")
    ki.add_argument("--force", action="store_true", help="replace an existing key (old packets stay valid)")
    ki.set_defaults(func=_keys_init)
    ks = ksub.add_parser("show", help="key id, fingerprint and public key")
    ks.add_argument("--path")
    ks.add_argument("--config")
    ks.add_argument("--pem", action="store_true", help="print only the public key PEM")
    ks.set_defaults(func=_keys_show)

    p = sub.add_parser("packet", help="evidence packets")
    psub = p.add_subparsers(dest="packet_cmd", required=True)
    pv = psub.add_parser(
        "verify", help="verify COSE_Sign1 packets and print them as JSON (images summarised)"
    )
    pv.add_argument("files", nargs="+", metavar="FILE")
    pv.add_argument("--pubkey", required=True, help="device public key (PEM)")
    pv.set_defaults(func=_packet_verify)

    r = sub.add_parser("registry", help="reference registry (receiving end)")
    rsub = r.add_subparsers(dest="registry_cmd", required=True)
    rr = rsub.add_parser("run", help="subscribe, verify, store, ack")
    rr.add_argument("--db", required=True, help="SQLite path or postgresql:// URL")
    rr.add_argument("--broker", default="127.0.0.1:1883", help="host:port")
    rr.add_argument("--device-key", action="append", default=[], metavar="DEVICE=PEM")
    rr.add_argument("--keys-dir", help="directory of <device>.pub.pem files")
    rr.add_argument("--group", default="registry", help="shared-subscription group")
    rr.add_argument("--prefix", default="radarcam/v1", help="topic prefix")
    rr.add_argument("--ca", help="CA file (enables TLS)")
    rr.add_argument("--cert", help="client certificate (mutual TLS)")
    rr.add_argument("--key", help="client key (mutual TLS)")
    rr.add_argument("--username", help="broker login (the ACL in docs/packet.md gives 'registry' the acks)")
    rr.add_argument("--password-file", help="file holding the broker password")
    rr.add_argument("--connect-timeout", type=float, default=30.0)
    rr.add_argument("--stats-every", type=float, default=60.0)
    rr.set_defaults(func=_registry_run)
    re_ = rsub.add_parser("export", help="write DIR/<device>-<seq>.cose and DIR/<device>.pub.pem")
    re_.add_argument("--db", required=True)
    re_.add_argument("--out", required=True)
    re_.add_argument("--device-key", action="append", default=[], metavar="DEVICE=PEM")
    re_.set_defaults(func=_registry_export)
    rk = rsub.add_parser(
        "revoke-key",
        help="refuse every packet a device key signed that is not yet stored (a key that may be "
        "compromised); stored ones stay and are listed",
    )
    rk.add_argument("--db", required=True)
    rk.add_argument("--device", required=True)
    rk.add_argument("--key-id", required=True, help="32 hex digits (radarcam keys show)")
    rk.add_argument("--reason", default="", help="recorded with the revocation and in each refusal")
    rk.set_defaults(func=_registry_revoke_key)
