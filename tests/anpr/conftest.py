from __future__ import annotations

import pytest

from device.anpr.plates import COUNTRY_CODES
from device.anpr.reader import PlateReader, default_models_dir
from device.config import AnprConfig


@pytest.fixture(scope="session")
def reader() -> PlateReader:
    """The committed models through the real runtime; ``min_confidence=0``: accuracy of the best read."""
    cfg = AnprConfig(countries=list(COUNTRY_CODES), threads=2, min_confidence=0.0)
    return PlateReader(cfg, models_dir=default_models_dir())
