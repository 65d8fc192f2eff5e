"""Model cards: the JSON next to each .tflite that tells the runtime how to feed and read the model.

A deployer's own OCR (e.g. a fast-plate-ocr style export) plugs in by writing a card: input size and
normalisation, alphabet with its pad symbol, number of slots, which output holds the slot
probabilities. No code change is needed. The card's sha256 must match the file, so a packet's model
hash always names the weights that actually ran.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Fraction = Annotated[float, Field(ge=0, le=1)]


class CardError(ValueError):
    pass


class InputSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[1, 3] = 1
    color: Literal["gray", "rgb", "bgr"] = "gray"
    pixel_scale: float = 1.0 / 255.0
    """Model input = pixel (0..255) * pixel_scale + pixel_offset, before any tensor quantisation."""
    pixel_offset: float = 0.0
    resize: Literal["stretch", "letterbox"] = "stretch"


class OcrSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    alphabet: list[str]
    pad: str
    slots: int = Field(gt=0)
    """Output positions: character slots (``decoder: slots``) or time steps (``decoder: ctc``)."""
    decoder: Literal["slots", "ctc"] = "slots"
    """``slots``: one character (or pad) per position, plate text order, decoded under the grammar.
    ``ctc``: pad is the CTC blank; positions read the plate in visual order, ``rows`` rows one after
    the other (device.anpr.layout)."""
    rows: int = Field(default=1, ge=1, le=2)
    countries: list[str]
    """Countries whose plates the model was trained on; decoding only tries these."""
    chars_output: int | None = None
    """Index of the output with (slots x classes) scores; None: the one whose size fits."""
    country_output: int | None = None
    country_codes: list[str] = Field(default_factory=list)
    """Order of the country head's classes (empty: no country head)."""
    scores: Literal["probabilities", "logits"] = "probabilities"
    second_look_below: float | None = Field(default=None, gt=0, le=1)
    """(``ctc`` only) A first read less confident than this is read again from widened crops and the
    most likely valid reading over all looks is kept (device.anpr.second_look). None: one look. The
    value belongs to the model: it is measured on the model's own confidence scale."""
    second_look_margins: list[tuple[Fraction, Fraction]] = Field(default_factory=list)
    """(x, y) fractions of the crop's width and height added on each side, one pair per extra look
    (none: the first look's candidates are re-ranked alone)."""

    @model_validator(mode="after")
    def _second_look_needs_ctc(self) -> OcrSpec:
        if self.second_look_below is not None and self.decoder != "ctc":
            raise ValueError("second_look_below needs decoder 'ctc'")
        return self


class DetectorSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["centernet"] = "centernet"
    stride: int = Field(gt=0)
    channels: list[str] = Field(default_factory=lambda: ["heat", "dx", "dy", "log_w", "log_h"])
    score_threshold: float = Field(default=0.3, gt=0, lt=1)
    max_plates: int = Field(default=4, gt=0)
    second_look_plate_width: float | None = Field(default=None, gt=0, lt=1)
    """Plate width, as a fraction of the input width, at which to look again around each detection
    (a window cut so the plate appears that wide: mid-range of the training sizes). None: one look."""


class ModelCard(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    version: str
    task: Literal["ocr", "detector"]
    file: str
    sha256: str
    input: InputSpec
    ocr: OcrSpec | None = None
    detector: DetectorSpec | None = None
    quantisation: str = "unknown"
    ops: list[str] = Field(default_factory=list)
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def card_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def load_card(model_path: Path, *, verify: bool = True) -> ModelCard:
    """Reads ``<model>.json``; checks it parses, fits the task and (``verify``) names this file's hash."""
    model_path = Path(model_path)
    cp = card_path(model_path)
    if not model_path.is_file():
        raise CardError(f"model file not found: {model_path}")
    if not cp.is_file():
        raise CardError(f"model card not found: {cp} (every model needs one; see models/README.md)")
    try:
        card = ModelCard.model_validate(json.loads(cp.read_text(encoding="utf-8")))
    except (ValidationError, json.JSONDecodeError) as exc:
        raise CardError(f"invalid model card {cp}: {exc}") from exc
    if card.task == "ocr" and card.ocr is None:
        raise CardError(f"{cp}: task ocr needs an 'ocr' section")
    if card.task == "detector" and card.detector is None:
        raise CardError(f"{cp}: task detector needs a 'detector' section")
    if card.ocr is not None and card.ocr.pad not in card.ocr.alphabet:
        raise CardError(f"{cp}: pad {card.ocr.pad!r} not in alphabet")
    if verify:
        actual = file_sha256(model_path)
        if actual != card.sha256:
            raise CardError(f"{model_path}: sha256 {actual} does not match its card ({card.sha256})")
    return card
