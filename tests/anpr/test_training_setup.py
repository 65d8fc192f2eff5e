"""The training pipeline's start-up checks (no training here: that is `make models`)."""

from __future__ import annotations

import pytest

from device.anpr.synth import fonts as F
from models.train import __main__ as train


def test_wide_stages_refuse_to_start_without_their_fonts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training data must not silently depend on which fonts a machine happens to have."""
    monkeypatch.setattr(F, "ARABIC_TRAIN_WIDE", (*F.ARABIC_TRAIN_WIDE, "truetype/absent/Absent-Regular.ttf"))
    with pytest.raises(SystemExit, match="TRAINING_DEB_PKGS"):
        train._require_stage_fonts(tuple(train.FINETUNE))
    train._require_stage_fonts((2, 3, 4))  # stages on the extended pool need no extra package
