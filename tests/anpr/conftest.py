from __future__ import annotations

import pytest

from device.anpr.plates import COUNTRY_CODES
from device.anpr.reader import PlateReader, default_models_dir
from device.config import AnprConfig


@pytest.fixture(scope="session")
def reader() -> PlateReader:
    """The committed models through the real runtime (LiteRT, falling back to tflite-runtime)."""
    return PlateReader(AnprConfig(countries=list(COUNTRY_CODES), threads=2), models_dir=default_models_dir())
