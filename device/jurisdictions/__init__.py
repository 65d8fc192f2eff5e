"""Jurisdiction schedules: tolerance and fine bands per country, as data (``<code>.toml`` beside this file).

A table is validated when loaded (pydantic, unknown keys forbidden, bands contiguous and ascending) so a
typo in a schedule is an error at start-up, not a wrong fine at the roadside.
"""

from __future__ import annotations

import functools
import hashlib
import tomllib
from importlib import resources
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tolerance(_Strict):
    fixed_kmh: Annotated[float, Field(ge=0, le=20)] = 3.0
    threshold_kmh: Annotated[float, Field(gt=0, le=300)] = 100.0
    percent: Annotated[float, Field(ge=0, le=20)] = 3.0

    def deduction_kmh(self, corrected_kmh: float) -> float:
        """``fixed_kmh`` while the corrected speed is <= ``threshold_kmh``, ``percent`` of it above."""
        if corrected_kmh <= self.threshold_kmh:
            return self.fixed_kmh
        return corrected_kmh * self.percent / 100.0


class Band(_Strict):
    id: str
    min_excess_kmh: Annotated[float, Field(ge=0)]
    """Included lower edge."""
    max_excess_kmh: float | None = None
    """Excluded upper edge; None = no upper edge."""
    degree: str | None = None
    fine_min: float | None = None
    fine_max: float | None = None
    points: int = 0
    settleable: bool = True
    note: str = ""

    def contains(self, excess_kmh: float) -> bool:
        return excess_kmh >= self.min_excess_kmh and (
            self.max_excess_kmh is None or excess_kmh < self.max_excess_kmh
        )


class Jurisdiction(_Strict):
    code: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    name: str
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    verified: bool
    source: Annotated[str, Field(min_length=1)]
    tolerance: Tolerance = Field(default_factory=Tolerance)
    bands: Annotated[list[Band], Field(min_length=1)]
    table_sha256: str | None = None
    """sha256 of the table file as loaded (set by :func:`load_jurisdiction`; a value in the file is
    replaced): every decision names the exact schedule it applied."""

    @model_validator(mode="after")
    def _contiguous(self) -> Jurisdiction:
        """Ascending, touching bands, the last one open-ended: every excess has exactly one band."""
        for band in self.bands:
            if band.max_excess_kmh is not None and band.max_excess_kmh <= band.min_excess_kmh:
                raise ValueError(
                    f"band {band.id} is empty or inverted ({band.min_excess_kmh} to {band.max_excess_kmh})"
                )
        for a, b in zip(self.bands, self.bands[1:], strict=False):
            if a.max_excess_kmh is None or a.max_excess_kmh != b.min_excess_kmh:
                raise ValueError(
                    f"band {a.id} must end where {b.id} starts ({a.max_excess_kmh} vs {b.min_excess_kmh})"
                )
        if self.bands[-1].max_excess_kmh is not None:
            raise ValueError(f"the last band ({self.bands[-1].id}) must have no upper edge")
        return self

    def band_for(self, excess_kmh: float) -> Band | None:
        """The band containing ``excess_kmh`` (> 0 expected), or None below the first band."""
        for band in self.bands:
            if band.contains(excess_kmh):
                return band
        return None


class JurisdictionError(Exception):
    pass


@functools.cache
def load_jurisdiction(code: str) -> Jurisdiction:
    """Reads ``<code>.toml`` (case-insensitive code). Raises :class:`JurisdictionError` when unusable."""
    name = f"{code.lower()}.toml"
    try:
        text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        raise JurisdictionError(f"no jurisdiction table {name} in {__name__}") from None
    try:
        j = Jurisdiction.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise JurisdictionError(f"jurisdiction table {name} is invalid: {exc}") from None
    if j.code != code.upper():
        raise JurisdictionError(f"{name} declares code {j.code!r}")
    return j.model_copy(update={"table_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
