"""Cabinet I/O through gpiozero: IR flash trigger, status LEDs, an optional relay, the door tamper switch.

Pin numbers are Broadcom (BCM). Every pin is optional: an unset pin is simply absent and its method
does nothing, so a bench unit without LEDs runs the same code. ``pin_factory`` (config ``mock``, or a
factory object passed in) lets tests drive the very same code with gpiozero's ``MockFactory``.

Status LED patterns (what a technician sees from the road):

=========  =========================  ==========================
status     ok LED                     fault LED
=========  =========================  ==========================
ok         steady on                  off
degraded   blinking 1 Hz (0.5/0.5 s)  off
fault      off                        steady on
=========  =========================  ==========================

With only the ok LED wired, ``fault`` is a fast 5 Hz blink (0.1/0.1 s) on it.

Tamper: ``tamper_active_high = false`` means the switch pulls the pin to ground when the door opens
(internal pull-up); ``true`` means it drives the pin high (internal pull-down). Edges are debounced by
``tamper_bounce_ms`` (a change is reported once the switch has been quiet that long);
``on_tamper(True)`` fires on opening, ``on_tamper(False)`` on closing, from a timer thread. Signing and
uplinking the event is the daemon's job (it owns the key); this module only reports it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from device.config import GpioConfig

Status = Literal["ok", "degraded", "fault"]

# (on_time, off_time) for blinking, "on" for steady, "off" for off
LED_PATTERNS: dict[str, tuple[Any, Any]] = {
    "ok": ("on", "off"),
    "degraded": ((0.5, 0.5), "off"),
    "fault": ("off", "on"),
}
FAULT_SINGLE_LED = (0.1, 0.1)


def _factory_for(cfg: GpioConfig) -> Any:
    if cfg.pin_factory == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    if cfg.pin_factory == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    return None  # gpiozero's own choice (GPIOZERO_PIN_FACTORY, then lgpio, rpigpio, ...)


class UnitGpio:
    def __init__(
        self,
        cfg: GpioConfig,
        *,
        pin_factory: Any = None,
        on_tamper: Callable[[bool], None] | None = None,
    ) -> None:
        from gpiozero import LED, Button, DigitalOutputDevice

        self.cfg = cfg
        self.on_tamper = on_tamper
        factory = pin_factory if pin_factory is not None else _factory_for(cfg)
        kw: dict[str, Any] = {"pin_factory": factory} if factory is not None else {}
        self._devices: list[Any] = []
        self._lock = threading.Lock()
        self.status: Status | None = None
        self.last_flash_ns: int | None = None
        self.flashes = 0
        self.tamper_events = 0
        self.last_tamper_ns: int | None = None

        def add(dev: Any) -> Any:
            self._devices.append(dev)
            return dev

        try:
            self._flash = (
                add(DigitalOutputDevice(cfg.flash_pin, initial_value=False, **kw))
                if cfg.flash_pin is not None
                else None
            )
            self._led_ok = add(LED(cfg.led_ok_pin, **kw)) if cfg.led_ok_pin is not None else None
            self._led_fault = add(LED(cfg.led_fault_pin, **kw)) if cfg.led_fault_pin is not None else None
            self._relay = (
                add(DigitalOutputDevice(cfg.relay_pin, initial_value=False, **kw))
                if cfg.relay_pin is not None
                else None
            )
            self._tamper = None
            self._tamper_timer: threading.Timer | None = None
            self._tamper_state = False
            if cfg.tamper_pin is not None:
                # debounced here, not by the pin driver: same behaviour on every pin factory (MockFactory
                # ignores bounce_time), and the reported state is the one that held for the whole window
                self._tamper = add(Button(cfg.tamper_pin, pull_up=not cfg.tamper_active_high, **kw))
                self._tamper_state = bool(self._tamper.is_pressed)
                self._tamper.when_pressed = self._tamper_edge
                self._tamper.when_released = self._tamper_edge
        except Exception:
            self.close()
            raise

    # -- flash ------------------------------------------------------------------------------------
    def flash(self) -> int | None:
        """Starts one pulse of ``flash_pulse_ms`` on the flash pin (non-blocking); returns the monotonic
        time of the rising edge, or None without a flash pin. A pulse still running is restarted."""
        if self._flash is None:
            return None
        width = self.cfg.flash_pulse_ms / 1000.0
        with self._lock:
            t = time.monotonic_ns()
            self._flash.blink(on_time=width, off_time=0, n=1, background=True)
            self.last_flash_ns = t
            self.flashes += 1
        return t

    # -- status LEDs ------------------------------------------------------------------------------
    def set_status(self, status: Status) -> None:
        if status not in LED_PATTERNS:
            raise ValueError(f"status must be one of {sorted(LED_PATTERNS)}, got {status!r}")
        if status == self.status:
            return  # do not restart a blink pattern on every health tick
        ok_pat, fault_pat = LED_PATTERNS[status]
        if status == "fault" and self._led_fault is None:
            ok_pat = FAULT_SINGLE_LED
        with self._lock:
            self._apply(self._led_ok, ok_pat)
            self._apply(self._led_fault, fault_pat)
            self.status = status

    @staticmethod
    def _apply(led: Any, pattern: Any) -> None:
        if led is None:
            return
        if pattern == "on":
            led.on()
        elif pattern == "off":
            led.off()
        else:
            on_t, off_t = pattern
            led.blink(on_time=on_t, off_time=off_t, background=True)

    # -- relay ------------------------------------------------------------------------------------
    def set_relay(self, on: bool) -> None:
        if self._relay is None:
            return
        if on:
            self._relay.on()
        else:
            self._relay.off()

    @property
    def relay_on(self) -> bool:
        return bool(self._relay is not None and self._relay.value)

    # -- tamper -----------------------------------------------------------------------------------
    @property
    def tamper_open(self) -> bool:
        """True while the cabinet door is open (debounced; False when no tamper switch is wired).
        The state at start-up is only here: ``on_tamper`` reports changes."""
        return self._tamper_state

    def _tamper_edge(self) -> None:
        bounce = self.cfg.tamper_bounce_ms / 1000.0
        with self._lock:
            if self._tamper_timer is not None:
                self._tamper_timer.cancel()
                self._tamper_timer = None
            if bounce > 0:
                self._tamper_timer = threading.Timer(bounce, self._tamper_settle)
                self._tamper_timer.daemon = True
                self._tamper_timer.start()
                return
        self._tamper_settle()

    def _tamper_settle(self) -> None:
        """The switch has been quiet for the debounce window: report its state if it changed."""
        tamper = self._tamper
        if tamper is None or tamper.closed:
            return
        opened = bool(tamper.is_pressed)
        with self._lock:
            if opened == self._tamper_state:
                return
            self._tamper_state = opened
            self.tamper_events += 1
            self.last_tamper_ns = time.monotonic_ns()
        cb = self.on_tamper
        if cb is not None:
            cb(opened)

    def health(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "tamper_open": self.tamper_open,
            "tamper_events": self.tamper_events,
            "flashes": self.flashes,
            "relay_on": self.relay_on,
        }

    def close(self) -> None:
        timer = getattr(self, "_tamper_timer", None)
        if timer is not None:
            timer.cancel()
        for dev in reversed(self._devices):
            try:
                dev.close()
            except Exception:  # close everything we can; a stuck pin must not keep others claimed
                continue
        self._devices.clear()

    def __enter__(self) -> UnitGpio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
