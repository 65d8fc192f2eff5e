"""Evidence packets: a CBOR payload signed as COSE_Sign1 (RFC 9052) with Ed25519.

The COSE structure is written here directly (it is four CBOR items) so nothing hides what is signed:
``18([protected, {}, payload, signature])`` with protected ``{1: -8, 3: content type, 4: kid}`` and the
signature over ``["Signature1", protected, h'', payload]``. docs/packet.md has the CDDL. Floats stay
CBOR floats exactly as measured; images are JPEG byte strings inside the signed payload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import uuid
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.config import RadarConfig, SiteConfig
from device.model import ClockStamp, Reading, Violation
from device.uplink.keys import SigningKey, key_id_of

PACKET_VERSION = 1
COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
CONTENT_TYPE = "application/vnd.radarcam.packet+cbor"
HDR_ALG, HDR_CTY, HDR_KID = 1, 3, 4
ENVELOPE_RESERVE = 512
"""Bytes kept free for the COSE envelope, signature, ``seq`` and ``prev_hash`` when fitting to size."""

EVENT_KINDS = frozenset(
    {
        "startup",
        "shutdown",
        "config_changed",
        "config_rejected",
        "console_audit",
        "tamper",
        "clock_jump",
        "clock_unsynchronised",
        "clock_synchronised",
        "plate_amendment",
        "disk_full",
        "outbox_corrupt",
        "health",
    }
)


class PacketError(Exception):
    """A packet that cannot be built or does not verify; ``str()`` is a one-line reason."""


@dataclass(frozen=True)
class PacketContext:
    """What the daemon knows about itself that goes into every packet."""

    device_id: str
    firmware_version: str
    config_hash: str
    key_id: str
    site: SiteConfig
    radar: RadarConfig
    anpr_models: dict[str, Any] | None = None


# --------------------------------------------------------------------------- payload builders


def _clock(c: ClockStamp) -> dict[str, Any]:
    return {
        "utc_ns": c.utc_ns,
        "mono_ns": c.mono_ns,
        "synchronized": c.synchronized,
        "source": c.source,
        "offset_ns": c.offset_ns,
        "max_error_ns": c.max_error_ns,
    }


def _reading(r: Reading) -> dict[str, Any]:
    return {
        "t_mono_ns": r.t_mono_ns,
        "speed_raw": r.speed_raw,
        "unit": r.unit,
        "speed_kmh": r.speed_kmh,
        "direction": None if r.direction is None else str(r.direction),
        "magnitude": r.magnitude,
        "sensor_time": r.sensor_time,
        "obj_index": r.obj_index,
    }


def _header(ctx: PacketContext, kind: str, packet_id: str, clock: ClockStamp) -> dict[str, Any]:
    return {
        "version": PACKET_VERSION,
        "kind": kind,
        "packet_id": packet_id,
        "device_id": ctx.device_id,
        "key_id": ctx.key_id,
        "firmware_version": ctx.firmware_version,
        "time": _clock(clock),
        "config_hash": ctx.config_hash,
    }


def violation_payload(v: Violation, ctx: PacketContext) -> dict[str, Any]:
    """Every number that led to the decision, unrounded, plus the evidence images."""
    d = v.decision
    p = v.pass_
    lane_id = d.lane if d.lane is not None else p.lane
    lane_cfg = next((ln for ln in ctx.site.lanes if ln.id == lane_id), None)
    cal = ctx.radar.calibration
    payload = _header(ctx, "violation", v.violation_id, v.clock)
    payload["site"] = {
        "id": ctx.site.id,
        "name": ctx.site.name,
        "name_local": ctx.site.name_local,
        "latitude": ctx.site.latitude,
        "longitude": ctx.site.longitude,
        "timezone": ctx.site.timezone,
        "jurisdiction": ctx.site.jurisdiction,
        "lane": lane_id,
        "direction": None if p.direction is None else str(p.direction),
        "lane_direction": lane_cfg.direction if lane_cfg else None,
        "limit_kmh": d.limit_kmh,
    }
    payload["measurement"] = {
        "pass_id": p.pass_id,
        "start_mono_ns": p.start_mono_ns,
        "end_mono_ns": p.end_mono_ns,
        "peak_mono_ns": p.peak_mono_ns,
        "peak_kmh": p.peak_kmh,
        "median_kmh": p.median_kmh,
        "spread_kmh": p.spread_kmh,
        "reading_count": p.count,
        "valid": p.valid,
        "invalid_reasons": list(p.invalid_reasons),
        "readings": [_reading(r) for r in p.readings],
        "measured_kmh": d.measured_kmh,
        "corrected_kmh": d.corrected_kmh,
        "enforced_kmh": d.enforced_kmh,
        "tolerance_kmh": d.tolerance_kmh,
        "cosine_factor": d.cosine_factor,
        "mount_angle_deg": d.mount_angle_deg,
        "correction_angle_deg": d.correction_angle_deg,
        "beam_half_angle_deg": d.beam_half_angle_deg,
        "radar": {
            "driver": ctx.radar.driver,
            "model": ctx.radar.model,
            "serial_number": ctx.radar.serial_number,
            "units": ctx.radar.units,
            "calibration": {
                "reference": cal.reference,
                "date": cal.date,
                "valid_until": cal.valid_until,
                "authority": cal.authority,
                "scale_factor": cal.scale_factor,
            },
        },
    }
    payload["decision"] = dataclasses.asdict(d)
    if v.plate is not None:
        plate = dataclasses.asdict(v.plate)
        plate["char_confidences"] = list(v.plate.char_confidences)
        plate["box"] = None if v.plate.box is None else list(v.plate.box)
        plate["status"] = "read"
    elif v.plate_pending:
        plate = {"status": "pending"}
    elif v.plate_not_read:  # no read was made, none will follow: the registry must not wait for one
        plate = {"status": "not_read", "reason": v.plate_not_read}
    else:
        plate = {"status": "none"}
    payload["plate"] = plate
    payload["anpr_models"] = ctx.anpr_models
    payload["images"] = [image_entry(im) for im in v.images]
    if v.extra:
        payload["extra"] = dict(v.extra)
    return payload


def image_entry(im: Any) -> dict[str, Any]:
    """An :class:`~device.capture.evidence.EvidenceImage` as packets carry it."""
    return {
        "role": im.role,
        "jpeg": im.jpeg,
        "sha256": im.sha256,
        "t_mono_ns": im.t_mono_ns,
        "t_utc_ns": im.t_utc_ns,
        "frame_no": im.frame_no,
        "width": im.width,
        "height": im.height,
    }


def event_payload(
    kind: str, body: dict[str, Any], ctx: PacketContext, clock: ClockStamp, *, images: list | None = None
) -> dict[str, Any]:
    """A signed audit event; ``plate_amendment`` must name the packet it amends in ``body["amends"]``.
    ``images`` (EvidenceImages; a plate amendment's frame and close-up) go where a violation's do, so the
    size cap shrinks them the same way."""
    if kind not in EVENT_KINDS:
        raise PacketError(f"unknown event kind {kind!r}; known: {sorted(EVENT_KINDS)}")
    if kind == "plate_amendment" and not body.get("amends"):
        raise PacketError("plate_amendment needs body['amends'] = the packet id of the violation it amends")
    payload = _header(ctx, "event", str(uuid.uuid4()), clock)
    payload["event"] = kind
    payload["site"] = {"id": ctx.site.id}
    payload["body"] = dict(body)
    if images:
        payload["images"] = [image_entry(im) for im in images]
    return payload


# --------------------------------------------------------------------------- COSE_Sign1


def _protected(kid: bytes) -> bytes:
    return cbor2.dumps({HDR_ALG: ALG_EDDSA, HDR_CTY: CONTENT_TYPE, HDR_KID: kid})


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def seal_bytes(payload: dict[str, Any], key: SigningKey) -> bytes:
    """COSE_Sign1, tagged 18. The payload must already carry ``seq``/``prev_hash`` (the outbox adds them)."""
    try:
        body = cbor2.dumps(payload)
    except cbor2.CBOREncodeError as exc:
        raise PacketError(f"payload is not CBOR-encodable: {exc}") from None
    protected = _protected(key.key_id_bytes)
    sig = key.sign(sig_structure(protected, body))
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, body, sig]))


@dataclass(frozen=True)
class CoseSign1:
    protected: bytes
    headers: dict[int, Any]
    payload: bytes
    signature: bytes

    @property
    def kid(self) -> str | None:
        k = self.headers.get(HDR_KID)
        return k.hex() if isinstance(k, bytes) else None


def parse(data: bytes) -> CoseSign1:
    """Structure checks only (no signature): a registry uses ``kid`` to pick the key."""
    if not data:
        raise PacketError("empty file: not a COSE_Sign1 packet")
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(fp).decode()
    except Exception as exc:  # cbor2 raises several types for truncated / garbage input
        raise PacketError(f"malformed CBOR (truncated or not a packet): {exc}") from None
    if fp.tell() != len(data):
        # the bytes are what is stored, hashed into the chain and acked: exactly one packet, nothing more
        raise PacketError(f"{len(data) - fp.tell()} bytes after the COSE_Sign1 packet")
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise PacketError("not a COSE_Sign1 packet (missing CBOR tag 18)")
    arr = obj.value
    if not isinstance(arr, list | tuple) or len(arr) != 4:
        raise PacketError("COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, sig = arr
    if unprotected != {}:  # ours is always empty; anything there is unsigned and could mislead a reader
        raise PacketError("COSE_Sign1 unprotected header must be empty")
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(sig, bytes):
        raise PacketError("COSE_Sign1 protected header, payload and signature must be byte strings")
    try:
        headers = cbor2.loads(protected) if protected else {}
    except Exception as exc:
        raise PacketError(f"malformed protected header: {exc}") from None
    if not isinstance(headers, dict):
        raise PacketError("protected header is not a map")
    if headers.get(HDR_ALG) != ALG_EDDSA:
        raise PacketError(f"unsupported algorithm {headers.get(HDR_ALG)!r} (expected -8 EdDSA)")
    kid = headers.get(HDR_KID)
    if not isinstance(kid, bytes) or len(kid) != 16:
        raise PacketError("protected header lacks the 16-byte key id (kid)")
    if headers.get(HDR_CTY) != CONTENT_TYPE:
        raise PacketError(f"content type {headers.get(HDR_CTY)!r} is not {CONTENT_TYPE}")
    if cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, sig])) != data:
        # The signature covers the header and payload bytes, not the envelope around them: a re-framed
        # copy (tag 18 as d8 12, an indefinite-length array, a longer length prefix) verifies with
        # another sha256, and stored first it would turn the genuine packet into a "replay".
        raise PacketError("COSE_Sign1 envelope is not in the one encoding the device writes")
    return CoseSign1(protected, headers, payload, sig)


def verify(data: bytes, public_key: Ed25519PublicKey | SigningKey) -> dict[str, Any]:
    """Checks structure, key id and Ed25519 signature; returns the decoded payload."""
    pub = public_key.public_key if isinstance(public_key, SigningKey) else public_key
    msg = parse(data)
    expected = key_id_of(pub)
    if msg.kid != expected:
        raise PacketError(f"key id {msg.kid} does not match the given public key ({expected})")
    if len(msg.signature) != 64:
        raise PacketError(f"bad signature length {len(msg.signature)} (Ed25519 needs 64)")
    try:
        pub.verify(msg.signature, sig_structure(msg.protected, msg.payload))
    except InvalidSignature:
        raise PacketError("bad signature: packet altered or signed by another key") from None
    try:
        payload = cbor2.loads(msg.payload)
    except Exception as exc:
        raise PacketError(f"signed payload is not valid CBOR: {exc}") from None
    if not isinstance(payload, dict) or payload.get("version") != PACKET_VERSION:
        raise PacketError("signed payload is not a radarcam packet (version missing or unknown)")
    if payload.get("key_id") != msg.kid:
        raise PacketError(
            f"payload key_id {payload.get('key_id')!r} differs from the signing key id {msg.kid}"
        )
    return payload


def image_problems(payload: dict[str, Any]) -> list[str]:
    """Images whose bytes are not the ones their ``sha256`` names (the signature covers the claim, not
    the match: a verifier must check both)."""
    out = []
    for i, im in enumerate(payload.get("images") or []):
        if not isinstance(im, dict):
            out.append(f"image {i} is not a map")
            continue
        data = im.get("jpeg")
        if data is None:  # left out by the size cap: only its hash travels
            continue
        if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != im.get("sha256"):
            out.append(f"image {i} ({im.get('role')}): bytes do not match its sha256")
    return out


def packet_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- size cap


def encoded_size(payload: dict[str, Any]) -> int:
    return len(cbor2.dumps(payload)) + ENVELOPE_RESERVE


def _reencode(jpeg: bytes, quality: int, scale: float) -> tuple[bytes, int, int]:
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise PacketError("evidence image is not a decodable JPEG")
    if scale < 1.0:
        h, w = img.shape[:2]
        img = cv2.resize(
            img, (max(16, int(w * scale)), max(16, int(h * scale))), interpolation=cv2.INTER_AREA
        )
    from device.capture.evidence import encode_jpeg, jpeg_comment

    # The comment holds the exact numbers behind the printed data bar: it must survive the re-encode.
    try:
        comment = jpeg_comment(jpeg)
    except ValueError:  # decodable but not a JPEG: nothing to carry over
        comment = None
    try:
        out = encode_jpeg(img, quality, comment=comment)
    except Exception as exc:
        raise PacketError(f"JPEG re-encoding failed: {exc}") from exc
    return out, img.shape[1], img.shape[0]


def _omitted(im: dict[str, Any], why: str) -> dict[str, Any]:
    """An image left out: no bytes, the camera JPEG's sha256 (not that of a re-encode it went through)."""
    kept = {k: v for k, v in im.items() if k not in ("jpeg", "original_sha256", "reencoded")}
    return kept | {"jpeg": None, "sha256": im.get("original_sha256", im["sha256"]), "omitted": why}


def fit_to_size(payload: dict[str, Any], max_bytes: int, *, images_only: bool = False) -> dict[str, Any]:
    """Lowers JPEG quality (then resolution) until the packet fits; the measurement is never touched.

    Re-encoded images keep the sha256 of the original in ``original_sha256`` and say at which quality
    and scale they were re-encoded, so the registry knows the file in the packet is not the camera's.
    Only when even 10 %-quality quarter-size images do not fit are images left out (hash kept).

    ``images_only``: the cap only limits what images may add (the outbox's smaller cap when it is over
    its quota). A packet whose own fields are over it is then returned with its images left out, or as
    it is when it has none, instead of refused: a large audit event must still be sealed, and the
    normal cap (checked before) already bounds it.
    """
    if encoded_size(payload) <= max_bytes:
        return payload
    images = list(payload.get("images") or [])
    if not any(im.get("jpeg") is not None for im in images):  # none, or all already left out
        if images_only:
            return payload
        raise PacketError(f"packet without images is {encoded_size(payload)} B, over the {max_bytes} B cap")
    steps = [(q, 1.0) for q in (80, 65, 50, 35, 25)] + [
        (q, s) for s in (0.75, 0.5, 0.25) for q in (35, 20, 10)
    ]
    for quality, scale in steps:
        new_images = []
        for i, im in enumerate(images):
            if im.get("jpeg") is None:  # left out by an earlier fit: stays so, in its place
                new_images.append(im)
                continue
            try:
                jpeg, w, h = _reencode(im["jpeg"], quality, scale)
            except PacketError as exc:  # cannot be shrunk (a torn JPEG): left out, never the measurement
                images[i] = _omitted(im, str(exc))
                new_images.append(images[i])
                continue
            prior = (im.get("reencoded") or {}).get("scale", 1.0)  # shrunk before (the normal cap's fit)
            new_images.append(
                {
                    **im,
                    "jpeg": jpeg,
                    "sha256": hashlib.sha256(jpeg).hexdigest(),
                    "original_sha256": im.get("original_sha256", im["sha256"]),
                    "reencoded": {"quality": quality, "scale": prior * scale},
                    "width": w,
                    "height": h,
                }
            )
        candidate = {**payload, "images": new_images}
        if encoded_size(candidate) <= max_bytes:
            return candidate
    omitted = [im if im.get("jpeg") is None else _omitted(im, "packet size cap") for im in images]
    candidate = {**payload, "images": omitted}
    if encoded_size(candidate) <= max_bytes or images_only:
        return candidate
    raise PacketError(f"measurement alone is {encoded_size(candidate)} B, over the {max_bytes} B cap")
