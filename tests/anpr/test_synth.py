"""The plate generator: shapes, determinism, per-country layouts, validity of drawn numbers."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.anpr.grammar import is_valid
from device.anpr.plates import COUNTRIES
from device.anpr.synth import STYLES, random_plate, render_plate
from device.anpr.synth import fonts as F
from device.anpr.synth.samples import crop_sample
from device.anpr.synth.scene import FRAME_H, FRAME_W, make_scene


@pytest.mark.parametrize("country", sorted(COUNTRIES))
def test_render_each_style(country: str) -> None:
    rng = random.Random(3)
    for style in STYLES[country]:
        text, _ = random_plate(country, rng)
        assert is_valid(text, country)
        img = render_plate(text, country, rng, height_px=50, style=style)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[0] == 50
        assert img.shape[1] > img.shape[0]
        assert img.std() > 10  # something was drawn


def test_render_is_deterministic_and_varies_with_seed() -> None:
    a = render_plate("12345-ب-6", "MA", random.Random(1))
    b = render_plate("12345-ب-6", "MA", random.Random(1))
    c = render_plate("12345-ب-6", "MA", random.Random(2))
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_render_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        render_plate("12345-ب", "MA", random.Random(0))
    with pytest.raises(ValueError):
        render_plate("1-ب-2", "ZZ", random.Random(0))
    with pytest.raises(ValueError):
        render_plate("1-ب-2", "MA", random.Random(0), style="taxi")


def test_samples_and_scenes() -> None:
    rng = random.Random(9)
    s = crop_sample(rng, split="heldout", degraded=True)
    assert s.conditions and s.image.dtype == np.uint8 and is_valid(s.text, s.country)
    sc = make_scene(rng, split="heldout", min_plates=1)
    assert sc.image.shape == (FRAME_H, FRAME_W, 3)
    assert sc.plates
    for p in sc.plates:
        x, y, w, h = p.box
        assert x >= 0 and y >= 0 and x + w <= FRAME_W and y + h <= FRAME_H and w > h > 0


def test_training_pools_never_include_held_out_faces() -> None:
    for script in ("arabic", "latin"):
        held = set(F.pool(script, "heldout"))
        assert held, script
        for split in ("train", "train_extended", "train_wide"):
            train = set(F.pool(script, split))
            assert train and not train & held, (script, split, train & held)
        assert set(F.pool(script, "train")) <= set(F.pool(script, "train_extended"))
        assert set(F.pool(script, "train_extended")) <= set(F.pool(script, "train_wide"))
    # The wide pool's additions include no other weight of a held-out family (e.g. Noto Kufi Arabic).
    held_families = {Path(n).stem.split("-")[0] for n in F.ARABIC_HELDOUT}
    assert not [n for n in F.ARABIC_TRAIN_WIDE if Path(n).stem.split("-")[0] in held_families]


def test_faces_with_persian_digit_shapes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "truetype/farsiweb/nazli.ttf"  # fonts-farsiweb: draws U+0664 as the Persian four
    if not (F.ROOT / name).is_file():
        pytest.skip("fonts-farsiweb (a training-only package) is not installed")
    assert F.persian_digits(str(F.ROOT / name))
    for split in ("train_wide", "all"):
        assert not [p for p in F.pool("arabic", split) if F.persian_digits(p)]
    monkeypatch.setattr(F, "ARABIC_TRAIN_WIDE", (*F.ARABIC_TRAIN_WIDE, name))
    F.pool.cache_clear()
    try:
        assert str(F.ROOT / name) not in F.pool("arabic", "train_wide")
    finally:
        F.pool.cache_clear()


def test_wide_margin_crops_keep_more_surroundings() -> None:
    def mean_ratio(margins: str) -> float:
        rng = random.Random(5)
        shapes = [
            crop_sample(rng, degraded=False, country="MR", margins=margins).image.shape for _ in range(30)
        ]
        return sum(h / w for h, w, _ in shapes) / len(shapes)

    # Same plates (same seed, same draws), wider margins: taller crops relative to their width.
    assert mean_ratio("wide") > mean_ratio("tight") * 1.1


def test_hollow_keeps_outlines_and_empties_strokes() -> None:
    from device.anpr.synth import augment

    plate = render_plate("12345-ب-6", "MA", random.Random(3), height_px=110, style="one_line")
    out = augment.hollow(plate, random.Random(1))
    g0 = plate.mean(axis=2)
    g1 = out.mean(axis=2)
    dark0, dark1 = (g0 < 100).sum(), (g1 < 100).sum()
    assert 0.1 * dark0 < dark1 < 0.8 * dark0  # strokes emptied, edges kept
    assert out.shape == plate.shape and out.dtype == np.uint8


def test_glyph_warp_bends_strokes_within_its_amplitude() -> None:
    from device.anpr.synth import augment

    plate = render_plate("2369-قسد", "EG", random.Random(3), height_px=100, style="private")
    ink = plate.mean(axis=2) < 100
    out = augment.glyph_warp(plate, random.Random(1), amplitude=0.04)
    assert out.shape == plate.shape and out.dtype == np.uint8
    moved = out.mean(axis=2) < 100
    assert (ink != moved).sum() > 0.05 * ink.sum()  # the outlines changed ...
    # ... but no ink moved further than the amplitude (4 px here): dilating by it covers the result.
    import cv2

    near = cv2.dilate(ink.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0
    assert (moved & ~near).sum() <= 0.01 * moved.sum()
    still = augment.glyph_warp(plate, random.Random(1), amplitude=0.0)
    assert np.abs(still.astype(int) - plate.astype(int)).max() <= 1


def test_variety_crops_add_small_plates_and_egypt() -> None:
    def draw(variety: bool) -> list:
        rng = random.Random(21)
        return [crop_sample(rng, split="train_extended", degraded=False, variety=variety) for _ in range(150)]

    plain, varied = draw(False), draw(True)
    share = {k: sum(s.country == "EG" for s in v) / len(v) for k, v in (("plain", plain), ("varied", varied))}
    assert share["varied"] > share["plain"]
    one_line = [s for s in varied if s.country in ("MA", "MR") and s.style in ("one_line", "standard")]
    assert min(s.image.shape[0] for s in one_line) < min(
        s.image.shape[0] for s in plain if s.country in ("MA", "MR") and s.style in ("one_line", "standard")
    )


def test_scene_motion_blur_scales_with_plate_width() -> None:
    from device.anpr.synth.scene import BLUR_OF_PLATE_WIDTH, ScenePlate, blur_limit

    small = [ScenePlate("1-ب-2", "1-B-2", "MA", (0, 0, 80, 18))]
    large = [ScenePlate("1-ب-2", "1-B-2", "MA", (0, 0, 300, 66))]
    assert blur_limit(small) == max(3, round(80 * BLUR_OF_PLATE_WIDTH))
    assert blur_limit(large) == round(300 * BLUR_OF_PLATE_WIDTH) > blur_limit(small)
    assert blur_limit([]) >= 3


def _ink_components(gray: np.ndarray) -> list[tuple[int, int, int]]:
    """(left x, height, area) of each dark connected component (the lettering) of a plate part."""
    n, _, stats, _ = cv2.connectedComponentsWithStats((gray < 110).astype(np.uint8), connectivity=8)
    return [(x, h, a) for x, _, _, h, a in stats[1:n] if a >= 12]


@pytest.mark.parametrize("font", ["Amiri-Regular.ttf", "ae_AlArabiya.ttf"])
def test_typeset_joins_letters_and_keeps_digits_left_to_right(font: str) -> None:
    """A joined letter group is one connected word; spaced digits stay in reading order (the bidi
    algorithm would put spaced Arabic-Indic digits right to left without the renderer's override)."""
    ar = [p for p in F.pool("arabic", "train") if p.endswith(font)]
    la = F.pool("latin", "train")[:1]

    def parts(typeset) -> tuple[np.ndarray, np.ndarray]:
        img = render_plate("1000-لمس", "EG", random.Random(4), height_px=128, style="private",
                           arabic_fonts=ar, latin_fonts=la, typeset=typeset)  # fmt: skip
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[int(0.34 * 128) : int(0.9 * 128)]
        w = g.shape[1]
        mid = int(0.3 * w) + int((g[:, int(0.3 * w) : int(0.7 * w)] < 110).sum(axis=0).argmax())
        return g[:, int(0.04 * w) : mid - 3], g[:, mid + 4 : int(0.95 * w)]  # either side of the rule

    (d_glyphs, l_glyphs), (d_strings, l_strings), (_, l_joined) = map(parts, ("glyphs", "strings", "joined"))
    assert len(_ink_components(l_glyphs)) == len(_ink_components(l_strings)) == 3
    assert len(_ink_components(l_joined)) == 1
    for digits in (d_glyphs, d_strings):  # ١٠٠٠: the tall one first, then three small zeros
        comps = sorted(_ink_components(digits))
        assert len(comps) == 4
        assert comps[0][1] == max(h for _, h, _ in comps) > 2 * comps[-1][1]


def test_typeset_sets_draw_the_same_plates_another_way() -> None:
    """A typeset test set is the main set's plates (same seed: same text, country, layout) drawn as
    another generator draws them, so the two accuracies compare like for like."""
    for k in range(8):
        base = crop_sample(random.Random(k), split="heldout")
        for kind in ("strings", "joined"):
            other = crop_sample(random.Random(k), split="heldout", typeset=kind)
            assert (other.text, other.country, other.style) == (base.text, base.country, base.style)
    differ = [
        not np.array_equal(crop_sample(random.Random(k), split="heldout").image,
                           crop_sample(random.Random(k), split="heldout", typeset="strings").image)
        for k in range(8)
    ]  # fmt: skip
    assert sum(differ) >= 6  # (a face without the layout engine's shaping falls back to glyphs)


def test_every_face_but_the_wide_pool_is_installed() -> None:
    """A missing face is skipped silently by ``fonts.pool``, which would change the test sets (and the
    card's figures would not reproduce) or the training data: scripts/bootstrap.sh installs them all."""
    faces = F.ARABIC_TRAIN + F.ARABIC_TRAIN_EXTRA + F.ARABIC_HELDOUT
    faces += F.LATIN_TRAIN + F.LATIN_TRAIN_EXTRA + F.LATIN_HELDOUT
    missing = sorted({n for n in faces if not (F.ROOT / n).is_file()})
    assert not missing, f"not installed (add the package to DEB_PKGS in scripts/bootstrap.sh): {missing}"


def _bars() -> np.ndarray:
    """Two 12 px dark bars at +45 and -45 degrees, a small ring and a full-width border line."""
    img = np.full((120, 400, 3), 230, np.uint8)
    cv2.line(img, (30, 100), (110, 20), (20, 20, 20), 12)  # rising: +45 degrees (image y points down)
    cv2.line(img, (150, 20), (230, 100), (20, 20, 20), 12)  # falling: -45 degrees
    cv2.circle(img, (320, 60), 14, (20, 20, 20), 3)  # thinner than the bars: a glyph like ه
    img[112:116, :] = 20  # border: wider than 40 % of the plate, never restyled
    return img


@pytest.mark.parametrize("seed", range(6))
def test_pen_thins_strokes_across_the_nib_and_keeps_those_along_it(seed: int) -> None:
    from device.anpr.synth import augment

    img = _bars()
    out = augment.pen(img, random.Random(seed))
    assert out.shape == img.shape and out.dtype == np.uint8

    def ink(a: np.ndarray, x0: int, x1: int, y0: int = 0, y1: int = 110) -> int:
        return int((a[y0:y1, x0:x1].mean(axis=2) < 125).sum())

    kept = sorted(ink(out, *r) / ink(img, *r) for r in ((15, 125), (135, 245)))
    # One bar thinned, the one nearer the nib's direction kept (more): the pen's contrast.
    assert kept[0] < 0.9 and kept[1] > 0.7 and kept[1] - kept[0] > 0.1
    assert ink(out, 295, 345) >= 0.5 * ink(img, 295, 345)  # the thin ring does not vanish
    assert np.array_equal(out[112:116], img[112:116])


def test_pen_leaves_a_plate_without_dark_lettering_alone() -> None:
    from device.anpr.synth import augment

    flat = np.full((40, 120, 3), 200, np.uint8)
    assert np.array_equal(augment.pen(flat, random.Random(1)), flat)


def test_restyle_is_reproducible_and_leaves_other_draws_alone() -> None:
    def draw(**kw) -> list:
        rng = random.Random(8)
        return [crop_sample(rng, split="train_wide", degraded=False, variety=True, **kw) for _ in range(40)]

    plain, off, a, b = draw(), draw(restyle=False), draw(restyle=True), draw(restyle=True)
    assert all(np.array_equal(p.image, q.image) for p, q in zip(plain, off, strict=True))
    assert all(np.array_equal(p.image, q.image) and p.text == q.text for p, q in zip(a, b, strict=True))
    assert sum(p.text != q.text for p, q in zip(plain, a, strict=True)) > 20  # other plates drawn


def test_a_smaller_set_is_the_start_of_a_larger_one() -> None:
    """Chunks are seeded by their index, so the export's 1000 calibration crops are the first 1000 of
    stage 1's 60 000 without generating the rest (``_calibration``)."""
    from models.train import data

    small = data.ocr_dataset(500, 11, 48, 160, "train", workers=1)  # in-process: nothing forks
    large = data.ocr_dataset(520, 11, 48, 160, "train", workers=1)
    assert np.array_equal(small["x"], large["x"][:500])
    assert list(small["text"]) == list(large["text"][:500])
