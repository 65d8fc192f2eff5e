"""PlateReader: detector + OCR + grammar + frame voting, the one entry point other stages use."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from device.anpr.detector import PlateDetector
from device.anpr.ocr import PlateOcr
from device.anpr.translit import to_latin
from device.anpr.vote import vote
from device.config import AnprConfig
from device.model import PlateRead

DETECTOR_FILE = "anpr_detector.tflite"
OCR_FILE = "anpr_ocr.tflite"
INSTALLED_MODELS = Path("/usr/share/radarcam/models")
# Crops around a detector box, as (x, y) margins in box widths/heights: the first matches the OCR's
# training crops; the wider one rescues boxes the detector drew too small (large two-row plates).
MARGINS = ((0.05, 0.12), (0.22, 0.45))


class ImageError(ValueError):
    """The input is not a usable image (empty, 1x1, wrong type, absurdly large)."""


def default_models_dir() -> Path:
    repo = Path(__file__).resolve().parents[2] / "models"
    if (repo / OCR_FILE).is_file():
        return repo
    return INSTALLED_MODELS


def check_image(image: object, *, min_side: int = 8, max_pixels: int = 60_000_000) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy image, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ImageError(f"unsupported image shape {image.shape}")
    h, w = image.shape[:2]
    if h < min_side or w < min_side:
        raise ImageError(f"image too small ({w}x{h}); need at least {min_side}x{min_side}")
    if h * w > max_pixels:
        raise ImageError(f"image too large ({w}x{h} > {max_pixels} pixels)")
    if image.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


def _inside(box: tuple[int, int, int, int] | None, roi: tuple[float, float, float, float] | None, im) -> bool:
    if roi is None or box is None:
        return True
    h, w = im.shape[:2]
    cx, cy = (box[0] + box[2] / 2) / w, (box[1] + box[3] / 2) / h
    return roi[0] <= cx <= roi[0] + roi[2] and roi[1] <= cy <= roi[1] + roi[3]


class PlateReader:
    """Detector + OCR behind one lock: a TFLite interpreter is not thread-safe, and the ANPR worker, the
    control socket's ``selftest`` and a CLI may share one reader (unlocked, a read failed or came back
    with another plate's text)."""

    def __init__(self, cfg: AnprConfig, *, models_dir: Path | None = None):
        self.cfg = cfg
        self._lock = threading.RLock()
        base = Path(models_dir) if models_dir is not None else default_models_dir()
        self.ocr_path = Path(cfg.ocr_model) if cfg.ocr_model else base / OCR_FILE
        self.det_path = Path(cfg.detector_model) if cfg.detector_model else base / DETECTOR_FILE
        self.ocr = PlateOcr(self.ocr_path, threads=cfg.threads)
        self.detector = PlateDetector(self.det_path, threads=cfg.threads)
        supported = set(self.ocr.countries)
        self.countries = [c for c in cfg.countries if c in supported]
        if not self.countries:
            raise ValueError(
                f"configured countries {cfg.countries} not supported by {self.ocr_path} ({sorted(supported)})"
            )

    def _countries(self, country: str | None) -> list[str]:
        if country is None:
            return self.countries
        if country not in self.ocr.countries:
            raise ValueError(f"country {country!r} not supported by the OCR model ({self.ocr.countries})")
        return [country]

    def _stamp(self, read: PlateRead) -> PlateRead:
        return replace(
            read,
            ocr_model=self.ocr.card.name + "@" + self.ocr.card.version,
            ocr_model_sha256=self.ocr.card.sha256,
            detector_model=self.detector.card.name + "@" + self.detector.card.version,
            detector_model_sha256=self.detector.card.sha256,
        )

    def read_crop(
        self, crop_bgr: np.ndarray, *, country: str | None = None, second_look: bool = True
    ) -> PlateRead:
        crop = check_image(crop_bgr, min_side=4)
        with self._lock:
            res = self.ocr.read(crop, self._countries(country), second_look=second_look)
        text = res.text if res.text and res.confidence >= self.cfg.min_confidence else None
        latin = to_latin(text, res.country) if text and res.country else None
        return self._stamp(
            PlateRead(
                text=text,
                text_latin=latin,
                country=res.country if text else None,
                confidence=res.confidence,
                char_confidences=res.char_confidences if text else (),
            )
        )

    def read_image(self, image_bgr: np.ndarray, *, country: str | None = None) -> list[PlateRead]:
        """Every detected plate, read; texted reads first, by confidence. Boxes in frame pixels."""
        img = check_image(image_bgr)
        with self._lock:
            return self._read_image(img, country)

    def _read_image(self, img: np.ndarray, country: str | None) -> list[PlateRead]:
        h, w = img.shape[:2]
        reads: list[PlateRead] = []
        for det in self.detector.detect_refined(img):
            x, y, bw, bh = det.box
            best: PlateRead | None = None
            for i, (fx, fy) in enumerate(MARGINS):
                mx, my = round(bw * fx), round(bh * fy)
                crop = img[max(0, y - my) : min(h, y + bh + my), max(0, x - mx) : min(w, x + bw + mx)]
                if crop.shape[0] < 4 or crop.shape[1] < 4:
                    continue
                # The OCR's own second look widens its crop: only the tight one (widening the wide
                # crop shrinks the glyphs below what the OCR was trained on).
                r = self.read_crop(crop, country=country, second_look=i == 0)
                if best is None or (r.text is not None, r.confidence) > (
                    best.text is not None,
                    best.confidence,
                ):
                    best = r
            if best is not None:
                reads.append(replace(best, box=det.box, frame_no=0))
        reads.sort(key=lambda r: (r.text is not None, r.confidence), reverse=True)
        return reads

    def read_frames(
        self,
        images: list[np.ndarray],
        *,
        country: str | None = None,
        roi: tuple[float, float, float, float] | None = None,
    ) -> PlateRead | None:
        """Votes the best read of each frame of one pass; ``frame_no`` is the index into ``images``.

        ``roi`` (x, y, w, h as fractions of the frame: the lane's region) keeps only plates whose box
        centre lies in it, so a car in the next lane cannot lend the violation its plate."""
        per_frame: list[PlateRead] = []
        for i, im in enumerate(images):
            reads = [r for r in self.read_image(im, country=country) if r.text and _inside(r.box, roi, im)]
            if reads:
                per_frame.append(replace(reads[0], frame_no=i))
        return vote(per_frame)

    def models(self) -> dict:
        """Inventory for packets and selftest: names, files, sha256, versions, runtime backend."""
        out = {}
        for role, m in (("detector", self.detector), ("ocr", self.ocr)):
            out[role] = {
                "name": m.card.name,
                "version": m.card.version,
                "path": str(m.path),
                "sha256": m.card.sha256,
                "quantisation": m.card.quantisation,
                "runtime": m.model.backend,
                "threads": self.cfg.threads,
            }
        out["countries"] = list(self.countries)
        return out
