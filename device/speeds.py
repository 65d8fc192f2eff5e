"""How speeds are written for people (data bar, decision reasons): never rounded up.

A fined vehicle's printed speed must never exceed what was measured, and a printed excess must never
round into the next fine band; the packet keeps every number unrounded beside the text.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal


def format_kmh(v: float) -> str:
    """Up to 3 decimals, truncated (never rounded up: 89.9996 is ``89.999``, not ``90``), trailing zeros
    dropped: ``87.336``, ``60``. Truncates the shortest repr, so 1.005 stays ``1.005``."""
    d = Decimal(repr(float(v))).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
    return f"{d:f}".rstrip("0").rstrip(".")
