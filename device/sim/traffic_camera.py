"""Synthetic traffic camera: renders the scenario the radar emulator plays, frame by frame.

Same vehicles, same instants: frame ``i`` is stamped ``epoch_mono_ns + i / fps`` and shows every vehicle
at ``Vehicle.distance_m(i / fps)``, so a pass the tracker builds from emulated radar bytes finds its
vehicle in the ring exactly where a real camera would. Geometry is a pinhole camera aimed down the road
(focal length ``3.2 * width`` px, a short telephoto as ANPR cameras use, mounted 1.6 m high): nearer is lower and larger, the plate is focused
at ``geometry.capture_m`` and defocused in front of and behind it, so the sharpest frame is the one
nearest the capture line. Ground-truth plate boxes (:meth:`SyntheticCamera.plate_boxes`) let tests check
evidence selection and ANPR against what was drawn.

Speed: the road is rendered once; a frame copies it, draws each vehicle inside its own bounding box and
adds precomputed sensor noise (a few hundred microseconds), so 1280x720 at 15 fps runs in real time
on one slow core.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from device.capture.camera import CameraStats
from device.capture.pixels import bgr_to_yuv420
from device.model import Direction, Frame, FrameLayout
from device.sim.scenario import Scenario, Vehicle

CAMERA_HEIGHT_M = 1.6
HORIZON_FRAC = 0.28
FOCAL_PER_WIDTH = 3.2
LANE_WIDTH_M = 3.5
PLATE_W_M = 0.52
PLATE_H_M = 0.11
TWO_LINE_W_M = 0.30
PLATE_Y_M = 0.5
"""Height of the plate's centre above the road."""
EXPOSURE_US = 1000
PREFETCH_S = 3.0
_BODY = {  # width, height (m)
    "car": (1.8, 1.45),
    "truck": (2.5, 3.2),
    "bus": (2.55, 3.1),
    "motorcycle": (0.8, 1.25),
}


@dataclass(frozen=True, slots=True)
class PlateTruth:
    """Where a plate was drawn in one frame (pixels, clipped to the frame)."""

    vid: int
    text: str
    text_latin: str
    box: tuple[int, int, int, int]
    """(x, y, w, h)"""
    distance_m: float
    blur_sigma: float


def _fallback_plate(text: str, country: str, rng: random.Random, height_px: int) -> np.ndarray:
    """Plain white plate with black text; used until ``device.anpr.synth`` exists."""
    from PIL import Image, ImageDraw, ImageFont

    from device.capture.databar import find_font

    h = max(height_px, 16)
    w = round(h * PLATE_W_M / PLATE_H_M)
    img = Image.new("RGB", (w, h), (245, 245, 240))
    draw = ImageDraw.Draw(img)
    draw.rectangle((1, 1, w - 2, h - 2), outline=(0, 0, 0), width=max(1, h // 16))
    font = ImageFont.truetype(find_font("sans:lang=ar"), int(h * 0.72))
    shown = text.replace("-", " | ")
    bbox = draw.textbbox((0, 0), shown, font=font)
    tw, th = bbox[2] - bbox[0], bbox[3] - bbox[1]
    draw.text(((w - tw) / 2 - bbox[0], (h - th) / 2 - bbox[1]), shown, font=font, fill=(10, 10, 10))
    return cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)


def render_plate_image(text: str, country: str, rng: random.Random, height_px: int) -> np.ndarray:
    """BGR plate image from the ANPR generator (``device.anpr.synth.render_plate``, same look as its
    training data; style one- or two-line as it draws), or a plain plate when that module is absent."""
    try:
        from device.anpr.synth import render_plate  # type: ignore[import-not-found]
    except ImportError:
        return _fallback_plate(text, country, rng, height_px)
    out: Any = render_plate(text, country, rng, height_px=height_px)
    if isinstance(out, tuple):
        out = out[0]
    arr = np.asarray(out)
    if arr.ndim == 2:
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(arr.astype(np.uint8, copy=False))


class _NoiseTiles:
    """Sensor noise for the synthetic camera, from two small tiles instead of whole frames.

    Full-frame noise fields (three +/- pairs) were 36 MB at 1080p, held in the demo process beside the
    daemon, so the demo's memory figure measured the simulator as much as the firmware. A band of
    ``rows`` rows (a little wider than the frame) is laid down the image, each band at its own column
    and row offset per frame, which at sigma 3 looks the same as fresh noise and stays deterministic.
    """

    def __init__(
        self, width: int, height: int, sigma: float, seed: int, rows: int = 96, pad: int = 128
    ) -> None:
        self.width, self.height, self.rows, self.pad = width, height, min(rows, height), pad
        rs = np.random.default_rng(seed)
        shape = (self.rows * 2, width + pad, 3)  # twice the band's rows: a row offset per band too
        self.sigma = sigma
        self.pos = np.clip(rs.normal(0, sigma, shape), 0, 255).astype(np.uint8)
        self.neg = np.clip(-rs.normal(0, sigma, shape), 0, 255).astype(np.uint8)

    def apply(self, img: np.ndarray, frame_no: int) -> None:
        if self.sigma <= 0:
            return
        for band, y0 in enumerate(range(0, self.height, self.rows)):
            y1 = min(self.height, y0 + self.rows)
            k = frame_no * 7919 + band * 104729  # primes: offsets that do not repeat frame to frame
            dy, dx = k % self.rows, (k // self.rows) % self.pad
            rows = slice(dy, dy + y1 - y0)
            cols = slice(dx, dx + self.width)
            view = img[y0:y1]
            cv2.add(view, self.pos[rows, cols], dst=view)
            cv2.subtract(view, self.neg[rows, cols], dst=view)


class SyntheticCamera:
    """A :class:`~device.capture.camera.Camera` that renders ``scenario``.

    ``realtime=True`` paces ``read()`` to the frame clock (and skips frames, as a real sensor would,
    when the reader falls behind); ``realtime=False`` renders as fast as asked. Frames keep coming after
    the scenario ends (empty road) until ``stop()``.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        width: int = 1280,
        height: int = 720,
        fps: float = 15.0,
        epoch_mono_ns: int | None = None,
        realtime: bool = True,
        preview_size: tuple[int, int] = (640, 360),
        noise: float = 3.0,
        layout: FrameLayout = "bgr",
    ) -> None:
        if width < 160 or height < 120 or fps <= 0:
            raise ValueError(f"synthetic camera needs >= 160x120 and fps > 0, got {width}x{height}@{fps}")
        if layout == "yuv420" and (width % 2 or height % 2):
            raise ValueError(f"a yuv420 synthetic camera needs an even size, got {width}x{height}")
        self.scenario = scenario
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.epoch_mono_ns = epoch_mono_ns
        self.realtime = realtime
        self.preview_size = preview_size
        self.layout: FrameLayout = layout
        """What ``read()`` delivers: the BGR render as is, or converted to I420 as a camera would."""
        self.geom = scenario.geometry
        self.f = FOCAL_PER_WIDTH * self.width
        self.cx = self.width / 2.0
        self.y_h = HORIZON_FRAC * self.height
        lanes = sorted(set(scenario.lanes) | {v.lane for v in scenario.vehicles})
        mid = (len(lanes) - 1) / 2.0
        self._lane_x = {lane: (i - mid) * LANE_WIDTH_M for i, lane in enumerate(lanes)}
        self._background = self._render_background()
        self._noise = _NoiseTiles(self.width, self.height, max(noise, 0.0), scenario.seed)
        self._plates: dict[int, np.ndarray] = {}
        self._by_enter = sorted(scenario.vehicles, key=lambda v: v.t_enter_s)
        self._gone_s = {v.vid: v.t_exit_s(self.geom) + 2.0 for v in scenario.vehicles}  # as in _visible
        self._prefetch_i = 0
        self._next_no = 0
        self._stats = CameraStats()
        self._preview: np.ndarray | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    # -- geometry ---------------------------------------------------------------------------------
    def frame_time_ns(self, frame_no: int) -> int:
        epoch = self.epoch_mono_ns or 0
        return epoch + round(frame_no * 1e9 / self.fps)

    def scenario_time(self, frame_no: int) -> float:
        return frame_no / self.fps

    def frame_no_at(self, t_mono_ns: int) -> int:
        """Frame whose capture time is nearest ``t_mono_ns``."""
        return max(0, round((t_mono_ns - (self.epoch_mono_ns or 0)) * self.fps / 1e9))

    def _project(self, x_m: float, height_m: float, d: float) -> tuple[float, float]:
        return self.cx + self.f * x_m / d, self.y_h + self.f * (CAMERA_HEIGHT_M - height_m) / d

    def _face_distance(self, v: Vehicle, t: float) -> float:
        d = v.distance_m(t, self.geom)
        return d if v.direction is Direction.INBOUND else d - v.length_m

    def blur_sigma(self, d: float) -> float:
        """Defocus blur (px at 1280 wide) of an object at ``d``: zero on the capture line."""
        return 3.0 * abs(1.0 - self.geom.capture_m / d) * self.width / 1280

    def _visible(self, t: float) -> list[tuple[float, Vehicle]]:
        out = []
        for v in self.scenario.vehicles:
            if t < v.t_enter_s - 1.0 or t > v.t_exit_s(self.geom) + 2.0:
                continue
            d = self._face_distance(v, t)
            if 2.0 < d < 120.0:
                out.append((d, v))
        out.sort(key=lambda p: -p[0])  # far first: nearer vehicles are drawn over them
        return out

    def _plate_size_m(self, v: Vehicle) -> tuple[float, float]:
        """Physical plate size: one-line plates 520 mm wide, two-line ones 300 mm; height from the
        rendered image's aspect so the plate is never stretched."""
        ph, pw = self._plate_for(v).shape[:2]
        aspect = pw / ph
        w_m = PLATE_W_M if aspect >= 3.0 else TWO_LINE_W_M
        return w_m, w_m / aspect

    def _plate_rect(self, v: Vehicle, d: float) -> tuple[float, float, float, float]:
        xc, yc = self._project(self._lane_x.get(v.lane, 0.0), PLATE_Y_M, d)
        w_m, h_m = self._plate_size_m(v)
        w = self.f * w_m / d
        h = self.f * h_m / d
        return xc - w / 2, yc - h / 2, w, h

    def plate_boxes(self, frame_no: int) -> list[PlateTruth]:
        """Ground truth: every plate drawn in ``frame_no`` and at least 4 px tall, clipped to the frame."""
        t = self.scenario_time(frame_no)
        out = []
        for d, v in self._visible(t):
            x, y, w, h = self._plate_rect(v, d)
            x0, y0 = max(0, round(x)), max(0, round(y))
            x1, y1 = min(self.width, round(x + w)), min(self.height, round(y + h))
            if h >= 4 and x1 - x0 >= w * 0.9 and y1 - y0 >= h * 0.9:
                out.append(
                    PlateTruth(
                        v.vid, v.plate_text, v.plate_latin, (x0, y0, x1 - x0, y1 - y0), d, self.blur_sigma(d)
                    )
                )
        return out

    def plate_box(self, frame_no: int, vid: int | None = None) -> tuple[int, int, int, int] | None:
        for p in reversed(self.plate_boxes(frame_no)):  # nearest first
            if vid is None or p.vid == vid:
                return p.box
        return None

    # -- rendering --------------------------------------------------------------------------------
    def _render_background(self) -> np.ndarray:
        w, h = self.width, self.height
        img = np.empty((h, w, 3), np.uint8)
        yh = int(self.y_h)
        sky = np.linspace(235, 190, yh, dtype=np.float32)[:, None]
        img[:yh] = np.stack([sky * 1.0, sky * 0.93, sky * 0.82], axis=-1).astype(np.uint8)
        img[yh:] = (70, 110, 80)  # verge
        xs = sorted(self._lane_x.values())
        left, right = xs[0] - LANE_WIDTH_M / 2, xs[-1] + LANE_WIDTH_M / 2
        far, near = 400.0, 1.0
        road = np.array(
            [
                self._project(left, 0, far),
                self._project(right, 0, far),
                self._project(right, 0, near),
                self._project(left, 0, near),
            ],
            np.float32,
        )
        cv2.fillConvexPoly(img, np.round(road).astype(np.int32), (92, 92, 96), lineType=cv2.LINE_AA)
        edges = [left + 0.15, right - 0.15]
        dividers = [(a + b) / 2 for a, b in itertools.pairwise(xs)]
        for x in edges + dividers:
            dashed = x in dividers
            d = 3.0
            while d < 200:
                d2 = d + (3.0 if dashed else 6.0)
                p0 = self._project(x, 0, d)
                p1 = self._project(x, 0, d2)
                thick = max(1, int(self.f * 0.15 / d2))
                cv2.line(
                    img,
                    (int(p0[0]), int(p0[1])),
                    (int(p1[0]), int(p1[1])),
                    (225, 225, 225),
                    thick,
                    cv2.LINE_AA,
                )
                d = d2 + (6.0 if dashed else 0.0)
        # a cabinet pole and a sign as fixed texture for the lower-half sharpness metric
        px, py = self._project(right + 1.5, 0, 25.0)
        cv2.rectangle(
            img, (int(px), int(self.y_h - 60 * w / 1280)), (int(px + 6 * w / 1280), int(py)), (60, 60, 60), -1
        )
        return img

    def _prefetch(self, t: float) -> bool:
        """Renders the plate of the next vehicle to appear within ``PREFETCH_S`` of ``t`` (plates cost
        ~10 ms each: one per frame keeps real time). True when it rendered one."""
        if self._prefetch_i >= len(self._by_enter):
            return False
        v = self._by_enter[self._prefetch_i]
        if v.t_enter_s - 1.0 > t + PREFETCH_S:
            return False
        self._prefetch_i += 1
        self._plate_for(v)
        return True

    def _forget_gone(self, t: float) -> None:
        """Drops the plates of vehicles no longer drawn: at 20 vehicles/s the cache grew by ~2 MB a
        second for as long as the demo ran. A later ``plate_boxes`` of an old frame renders the same
        plate again (seeded per vehicle)."""
        for vid in [k for k in list(self._plates) if self._gone_s.get(k, float("inf")) < t]:
            self._plates.pop(vid, None)

    def _plate_for(self, v: Vehicle) -> np.ndarray:
        img = self._plates.get(v.vid)
        if img is None:
            rng = random.Random((self.scenario.seed << 20) ^ v.vid)
            img = render_plate_image(v.plate_text, v.country, rng, height_px=96)
            self._plates[v.vid] = img
        return img

    def _draw_vehicle(self, img: np.ndarray, v: Vehicle, d: float) -> None:
        bw, bh = _BODY.get(v.vehicle_class, _BODY["car"])
        xl = self._lane_x.get(v.lane, 0.0)
        x0, y0 = self._project(xl - bw / 2, bh, d)
        x1, y1 = self._project(xl + bw / 2, 0.0, d)
        H, W = img.shape[:2]
        sigma = self.blur_sigma(d)
        pad = int(3 * sigma) + 2
        rx0, ry0 = max(0, int(x0) - pad), max(0, int(y0) - pad)
        rx1, ry1 = min(W, int(x1) + pad + 1), min(H, int(y1) + pad + 1)
        if rx1 <= rx0 or ry1 <= ry0:
            return
        roi = img[ry0:ry1, rx0:rx1]
        patch = roi.copy()
        ox, oy = rx0, ry0

        def pt(x: float, y: float) -> tuple[int, int]:
            return round(x - ox), round(y - oy)

        s = self.f / d  # px per metre
        cv2.rectangle(patch, pt(x0, y0), pt(x1, y1), v.color_bgr, -1)
        # windscreen, bumper, wheels: enough structure to look like a vehicle and to have edges
        cv2.rectangle(
            patch, pt(x0 + 0.12 * s, y0 + 0.1 * s), pt(x1 - 0.12 * s, y0 + 0.55 * s), (50, 40, 35), -1
        )
        cv2.rectangle(patch, pt(x0, y1 - 0.3 * s), pt(x1, y1 - 0.15 * s), (40, 40, 40), -1)
        for xw in (x0 + 0.05 * s, x1 - 0.3 * s):
            cv2.rectangle(patch, pt(xw, y1 - 0.15 * s), pt(xw + 0.25 * s, y1), (20, 20, 20), -1)
        for xl_ in (x0 + 0.1 * s, x1 - 0.35 * s):
            cv2.rectangle(
                patch, pt(xl_, y1 - 0.7 * s), pt(xl_ + 0.25 * s, y1 - 0.55 * s), (210, 230, 240), -1
            )
        px, py, pw, ph = self._plate_rect(v, d)
        iw, ih = round(pw), round(ph)
        if iw >= 4 and ih >= 2:
            plate = cv2.resize(self._plate_for(v), (iw, ih), interpolation=cv2.INTER_AREA)
            qx, qy = round(px - ox), round(py - oy)
            a0, b0 = max(0, qx), max(0, qy)
            a1, b1 = min(patch.shape[1], qx + iw), min(patch.shape[0], qy + ih)
            if a1 > a0 and b1 > b0:
                patch[b0:b1, a0:a1] = plate[b0 - qy : b1 - qy, a0 - qx : a1 - qx]
        if sigma > 0.3:
            patch = cv2.GaussianBlur(patch, (0, 0), sigma)
        roi[:] = patch

    def render(self, frame_no: int) -> np.ndarray:
        """The BGR image of frame ``frame_no`` (deterministic: same scenario, same pixels)."""
        img = self._background.copy()
        t = self.scenario_time(frame_no)
        for d, v in self._visible(t):
            self._draw_vehicle(img, v, d)
        self._noise.apply(img, frame_no)
        return img

    # -- Camera protocol --------------------------------------------------------------------------
    def start(self) -> None:
        # warm-up before the frame clock starts: the first plates (font lookup) and one render, so the
        # first real-time frames are not late; later plates are prefetched one per frame
        while self._prefetch(0.0):
            pass
        self.render(0)
        if self.epoch_mono_ns is None:
            self.epoch_mono_ns = time.monotonic_ns()
        self._stopped.clear()
        self._stats.state = "running"

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._stats.state != "running":
            return None
        no = self._next_no
        if self.realtime:
            now = time.monotonic_ns()
            due = self.frame_time_ns(no)
            if due > now:
                wait = (due - now) / 1e9
                if wait > timeout:
                    self._stopped.wait(timeout)
                    return None
                if self._stopped.wait(wait):
                    return None
            else:
                latest = (now - (self.epoch_mono_ns or 0)) * int(self.fps * 1000) // (1000 * 10**9)
                if latest > no:  # reader fell behind: a sensor would have overwritten these frames
                    self._stats.dropped += latest - no
                    no = latest
        image = self.render(no)
        self._next_no = no + 1
        self._prefetch(self.scenario_time(no))
        self._forget_gone(self.scenario_time(no))
        t = self.frame_time_ns(no)
        self._stats.frame(t)
        with self._lock:
            self._preview = (
                cv2.resize(image, self.preview_size, interpolation=cv2.INTER_AREA)
                if no % 3 == 0 or self._preview is None
                else self._preview
            )
        return Frame(
            t_mono_ns=t,
            frame_no=no,
            image=bgr_to_yuv420(image) if self.layout == "yuv420" else image,
            exposure_us=EXPOSURE_US,
            analogue_gain=1.0,
            source="synthetic",
            layout=self.layout,
        )

    def preview(self) -> np.ndarray | None:
        with self._lock:
            return self._preview

    def stop(self) -> None:
        self._stopped.set()
        self._stats.state = "stopped"

    def health(self) -> dict[str, Any]:
        return self._stats.as_dict()
