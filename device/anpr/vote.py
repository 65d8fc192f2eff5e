"""Voting across the frames of one pass: several independent reads beat the single best guess.

Each frame's read votes for its (country, text) with its confidence as weight. The winner's confidence
is the best single read of that text scaled by the winner's share of all weight, so a split vote is
reported as uncertain even when one frame was confident.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from device.model import PlateRead


def vote(reads: list[PlateRead]) -> PlateRead | None:
    """The voted read (``frames_voted`` = frames that agreed), or None when no frame had a text."""
    texted = [r for r in reads if r.text]
    if not texted:
        return None
    weight: dict[tuple[str | None, str], float] = defaultdict(float)
    members: dict[tuple[str | None, str], list[PlateRead]] = defaultdict(list)
    for r in texted:
        key = (r.country, r.text or "")
        weight[key] += max(r.confidence, 1e-6)
        members[key].append(r)
    total = sum(weight.values())
    key = max(weight, key=lambda k: (weight[k], len(members[k])))
    best = max(members[key], key=lambda r: r.confidence)
    share = weight[key] / total
    return replace(best, confidence=best.confidence * share, frames_voted=len(members[key]))
