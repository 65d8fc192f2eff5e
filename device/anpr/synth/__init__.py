"""Synthetic Arabic-script plates: the training data of the ANPR models and the plates of the simulator.

``render_plate`` draws a flat, front-on plate (BGR uint8) in the country's layout; ``random_plate``
draws a valid plate number. Geometry, blur, noise and lighting are added by :mod:`.augment` and
:mod:`.scene`, so the simulator can paste clean plates and degrade the whole frame itself.
"""

from __future__ import annotations

import random

from device.anpr.plates import COUNTRIES
from device.anpr.synth.render import STYLES, render

render_plate = render
"""Public name of :func:`device.anpr.synth.render.render` (scenarios, camera, training)."""


def _num(rng: random.Random, lo_len: int, hi_len: int, nonzero: bool) -> str:
    n = rng.randint(lo_len, hi_len)
    first = rng.choice("123456789" if nonzero else "0123456789")
    return first + "".join(rng.choice("0123456789") for _ in range(n - 1))


def random_plate(country: str, rng: random.Random) -> tuple[str, str]:
    """A valid plate number for ``country``: (printed text, Latin transliteration)."""
    spec = COUNTRIES.get(country)
    if spec is None:
        raise ValueError(f"unknown country {country!r}; known: {sorted(COUNTRIES)}")
    parts: list[str] = []
    latin: list[str] = []
    for i, g in enumerate(spec.groups):
        if g.kind == "digits":
            if spec.region_max is not None and i == len(spec.groups) - 1:
                s = str(rng.randint(1, spec.region_max))
            else:
                s = _num(rng, g.min_len, g.max_len, g.first_nonzero)
            parts.append(s)
            latin.append(s)
        else:
            n = rng.randint(g.min_len, g.max_len)
            letters = [rng.choice(sorted(spec.letters)) for _ in range(n)]
            parts.append("".join(letters))
            latin.append("".join(spec.letters[c] for c in letters))
    return "-".join(parts), "-".join(latin)


__all__ = ["STYLES", "random_plate", "render_plate"]
