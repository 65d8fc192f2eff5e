"""The radar driver seam: what the serial reader needs from any speed radar module.

A driver knows the module's init commands and turns raw bytes into :class:`~device.model.Reading`
objects. It owns the framing state (partial lines across reads), so ``feed`` may be called with
whatever chunks the serial port hands out; the readings do not depend on where the chunks split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from device.config import RadarConfig
    from device.model import Reading


@runtime_checkable
class RadarDriver(Protocol):
    name: str
    confirmed_units: str | None
    """Units the module itself last reported since :meth:`reset` (None until it has): the reader stays
    ``degraded`` and re-sends :meth:`init_commands` until they are the configured ones."""

    def init_commands(self, cfg: RadarConfig, max_limit_kmh: float) -> list[bytes]:
        """Bytes to write after opening the port (each one a complete command, in order)."""
        ...

    def feed(self, data: bytes, t_mono_ns: int) -> list[Reading]:
        """Parse ``data`` (any chunk); readings get ``t_mono_ns`` of the chunk that completed their line."""
        ...

    def reset(self) -> None:
        """Forget partial input and learnt units (after a reconnect the module may have rebooted)."""
        ...

    @property
    def stats(self) -> dict[str, int]:
        """``lines``, ``readings``, ``replies``, ``blank``, ``skipped`` and ``skipped_<reason>`` counters."""
        ...


def make_driver(cfg: RadarConfig) -> RadarDriver:
    """The driver named by ``cfg.driver`` (only ``ops24x`` so far)."""
    if cfg.driver == "ops24x":
        from device.sensors.ops24x import Ops24xDriver

        # Units start unknown: unit-less numbers are skipped until the module's reply to the units
        # command says what they are (it may still be in m/s after a power cycle, or in km/h).
        return Ops24xDriver(units=None, objects=cfg.objects, max_line_bytes=cfg.max_line_bytes)
    raise ValueError(f"unknown radar driver {cfg.driver!r}; allowed: 'ops24x'")
