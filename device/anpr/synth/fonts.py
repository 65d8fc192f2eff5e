"""Debian fonts used by the plate generator, split into training and held-out pools.

The held-out pool is never used for training: accuracy on it says how the OCR copes with type faces it
has not seen (real plates use faces we do not have). Fonts missing from this machine are skipped; a
font lacking any glyph a plate needs is dropped (PIL would otherwise silently draw boxes).
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import ImageFont

ROOT = Path("/usr/share/fonts")

ARABIC_TRAIN = (
    "opentype/fonts-hosny-amiri/Amiri-Bold.ttf",
    "opentype/fonts-hosny-amiri/Amiri-Regular.ttf",
    "truetype/fonts-arabeyes/ae_AlArabiya.ttf",
    "truetype/fonts-arabeyes/ae_AlBattar.ttf",
    "truetype/fonts-arabeyes/ae_AlHor.ttf",
    "truetype/fonts-arabeyes/ae_AlManzomah.ttf",
    "truetype/fonts-arabeyes/ae_AlYarmook.ttf",
    "truetype/fonts-arabeyes/ae_Arab.ttf",
    "truetype/fonts-arabeyes/ae_Cortoba.ttf",
    "truetype/fonts-arabeyes/ae_Dimnah.ttf",
    "truetype/fonts-arabeyes/ae_Furat.ttf",
    "truetype/fonts-arabeyes/ae_Granada.ttf",
    "truetype/fonts-arabeyes/ae_Hani.ttf",
    "truetype/fonts-arabeyes/ae_Hor.ttf",
    "truetype/fonts-arabeyes/ae_Khalid.ttf",
    "truetype/fonts-arabeyes/ae_Mashq.ttf",
    "truetype/fonts-arabeyes/ae_Nada.ttf",
    "truetype/fonts-arabeyes/ae_Nice.ttf",
    "truetype/fonts-arabeyes/ae_Ouhod-Bold.ttf",
    "truetype/fonts-arabeyes/ae_Petra.ttf",
    "truetype/fonts-arabeyes/ae_Rehan.ttf",
    "truetype/fonts-arabeyes/ae_Salem.ttf",
    "truetype/fonts-arabeyes/ae_Sharjah.ttf",
    "truetype/fonts-arabeyes/ae_Sindbad.ttf",
    "truetype/fonts-arabeyes/ae_Tarablus.ttf",
    "truetype/kacst-one/KacstOne.ttf",
    "truetype/kacst-one/KacstOne-Bold.ttf",
    "truetype/kacst/KacstBook.ttf",
    "truetype/kacst/KacstFarsi.ttf",
    "truetype/kacst/KacstLetter.ttf",
    "truetype/kacst/KacstNaskh.ttf",
    "truetype/kacst/KacstOffice.ttf",
    "truetype/kacst/KacstPoster.ttf",
    "truetype/kacst/KacstTitle.ttf",
    "truetype/noto/NotoNaskhArabic-Regular.ttf",
    "truetype/noto/NotoSansArabic-Regular.ttf",
    "truetype/noto/NotoSansArabic-Bold.ttf",
    "truetype/noto/NotoKufiArabic-Regular.ttf",
    "truetype/scheherazade/Scheherazade-Regular.ttf",
    "truetype/dejavu/DejaVuSans.ttf",
    "truetype/dejavu/DejaVuSans-Bold.ttf",
    "truetype/freefont/FreeSerif.ttf",
)
ARABIC_HELDOUT = (
    "truetype/noto/NotoKufiArabic-Bold.ttf",
    "truetype/noto/NotoNaskhArabic-Bold.ttf",
    "truetype/scheherazade/Scheherazade-Bold.ttf",
    "truetype/fonts-arabeyes/ae_Jet.ttf",
    "truetype/fonts-arabeyes/ae_Graph.ttf",
    "truetype/fonts-arabeyes/ae_Kayrawan.ttf",
    "truetype/fonts-arabeyes/ae_Metal.ttf",
    "truetype/fonts-arabeyes/ae_Electron.ttf",
    "truetype/fonts-arabeyes/ae_Nagham.ttf",
    "truetype/kacst/KacstScreen.ttf",
    "truetype/kacst/KacstTitleL.ttf",
    "truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
)
ARABIC_TRAIN_EXTRA = (
    "opentype/fonts-hosny-amiri/Amiri-Slanted.ttf",
    "opentype/fonts-hosny-amiri/Amiri-BoldSlanted.ttf",
    "truetype/fonts-arabeyes/ae_Japan.ttf",
    "truetype/fonts-arabeyes/ae_Mashq-Bold.ttf",
    "truetype/fonts-arabeyes/ae_Ostorah.ttf",
    "truetype/fonts-arabeyes/ae_Rasheeq-Bold.ttf",
    "truetype/fonts-arabeyes/ae_Tholoth.ttf",
    "truetype/kacst/KacstPen.ttf",
    "truetype/kacst/KacstDigital.ttf",
    "truetype/kacst/KacstArt.ttf",
    "truetype/freefont/FreeMono.ttf",
)
"""Added to the training pool for the OCR's second stage (split ``train_extended``): more stroke
weights and geometric faces. Decorative faces (ae_Haramain, ae_Shado, Nastaliq) stay out."""
ARABIC_TRAIN_WIDE = (
    "opentype/fonts-hosny-thabit/Thabit.ttf",
    "opentype/fonts-hosny-thabit/Thabit-Bold.ttf",
    "opentype/fonts-hosny-thabit/Thabit-Oblique.ttf",
    "opentype/fonts-hosny-thabit/Thabit-Bold-Oblique.ttf",
    "opentype/lateef/Lateef-Regular.ttf",
    "opentype/lateef/Lateef-ExtraBold.ttf",
    "opentype/lateef/Lateef-ExtraLight.ttf",
    "opentype/lemonada/Lemonada-Light.otf",
    "opentype/lemonada/Lemonada-Regular.otf",
    "opentype/lemonada/Lemonada-Bold.otf",
    "truetype/alkalami/Alkalami-Light.ttf",
    "truetype/harmattan/Harmattan-Regular.ttf",
    "truetype/harmattan/Harmattan-Bold.ttf",
    "truetype/farsiweb/homa.ttf",
    "truetype/freefarsi/FreeFarsi.ttf",
    "truetype/freefarsi/FreeFarsi-Bold.ttf",
    "truetype/freefarsi/FreeFarsi-Italic.ttf",
    "truetype/freefarsi/FreeFarsi-BoldItalic.ttf",
    "truetype/unikurdweb/Unikuweb.ttf",
    "truetype/fonts-ukij-uyghur/UKIJBasma.ttf",
    "truetype/fonts-ukij-uyghur/UKIJBom.ttf",
    "truetype/fonts-ukij-uyghur/UKIJCJK.ttf",
    "truetype/fonts-ukij-uyghur/UKIJDiT.ttf",
    "truetype/fonts-ukij-uyghur/UKIJEkran.ttf",
    "truetype/fonts-ukij-uyghur/UKIJEsBold.ttf",
    "truetype/fonts-ukij-uyghur/UKIJEsC.ttf",
    "truetype/fonts-ukij-uyghur/UKIJKesme.ttf",
    "truetype/fonts-ukij-uyghur/UKIJKesmeTuz-b.ttf",
    "truetype/fonts-ukij-uyghur/UKIJMe.ttf",
    "truetype/fonts-ukij-uyghur/UKIJNsq.ttf",
    "truetype/fonts-ukij-uyghur/UKIJNsqb.ttf",
    "truetype/fonts-ukij-uyghur/UKIJOrqun_B.ttf",
    "truetype/fonts-ukij-uyghur/UKIJQara.ttf",
    "truetype/fonts-ukij-uyghur/UKIJQara-b.ttf",
    "truetype/fonts-ukij-uyghur/UKIJQol_Tez.ttf",
    "truetype/fonts-ukij-uyghur/UKIJSlsTom.ttf",
    "truetype/fonts-ukij-uyghur/UKIJTitle.ttf",
    "truetype/fonts-ukij-uyghur/UKIJTor.ttf",
    "truetype/fonts-ukij-uyghur/UKIJTuT.ttf",
    "truetype/fonts-ukij-uyghur/UKIJTuz.ttf",
    "truetype/fonts-ukij-uyghur/UKIJTuzBold.ttf",
    "truetype/fonts-ukij-uyghur/UKIJTuzK.ttf",
    "truetype/fonts-ukij-uyghur/UKIJ_MacEkran.ttf",
    "truetype/noto/NotoSansArabic-Thin.ttf",
    "truetype/noto/NotoSansArabic-Black.ttf",
    "truetype/noto/NotoSansArabic-Condensed.ttf",
    "truetype/noto/NotoSansArabic-ExtraCondensedBold.ttf",
    "truetype/noto/NotoSansArabic-SemiCondensedLight.ttf",
)
"""Added for the OCR's fifth stage (split ``train_wide``; Debian packages in ``TRAINING_DEB_PKGS`` of
scripts/bootstrap.sh, needed by ``make models`` only): Uyghur, Persian, West African and modern
geometric faces, including square "screen" digits. Left out: faces that draw U+0664..U+0666 in their
Persian shapes (nazli, titr, UKIJQol_Tuz/Yantu: a wrong label for an Egyptian plate), ornamental ones
(UKIJTughra, UKIJChechek, UKIJTiken, UKIJOrqun_Y), and every other weight of a held-out family (Noto
Kufi, Noto Naskh), so that the held-out faces stay unseen."""
LATIN_TRAIN = (
    "truetype/dejavu/DejaVuSans.ttf",
    "truetype/dejavu/DejaVuSans-Bold.ttf",
    "truetype/dejavu/DejaVuSansCondensed.ttf",
    "truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "truetype/liberation/LiberationSans-Regular.ttf",
    "truetype/liberation/LiberationSans-Bold.ttf",
    "truetype/liberation/LiberationSansNarrow-Regular.ttf",
    "truetype/liberation/LiberationSansNarrow-Bold.ttf",
    "truetype/liberation/LiberationMono-Bold.ttf",
    "truetype/liberation/LiberationSerif-Bold.ttf",
    "truetype/freefont/FreeSans.ttf",
    "truetype/freefont/FreeSansBold.ttf",
    "truetype/freefont/FreeMonoBold.ttf",
    "truetype/noto/NotoSans-Regular.ttf",
    "truetype/noto/NotoSans-Bold.ttf",
    "truetype/kacst-one/KacstOne-Bold.ttf",
    "truetype/noto/NotoSansArabic-Bold.ttf",
)
LATIN_HELDOUT = (
    "truetype/noto/NotoSansDisplay-Bold.ttf",
    "truetype/noto/NotoSansDisplay-Regular.ttf",
    "truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "truetype/dejavu/DejaVuSansMono.ttf",
    "truetype/freefont/FreeSerifBold.ttf",
    "truetype/noto/NotoSansMono-Bold.ttf",
    "truetype/liberation/LiberationSans-BoldItalic.ttf",
)

LATIN_TRAIN_EXTRA = (
    "truetype/dejavu/DejaVuSerif.ttf",
    "truetype/dejavu/DejaVuSerif-Bold.ttf",
    "truetype/dejavu/DejaVuSans-Oblique.ttf",
    "truetype/dejavu/DejaVuSansCondensed-Oblique.ttf",
    "truetype/dejavu/DejaVuSans-ExtraLight.ttf",
    "truetype/freefont/FreeSansOblique.ttf",
    "truetype/freefont/FreeMono.ttf",
    "truetype/liberation/LiberationMono-Regular.ttf",
    "truetype/liberation/LiberationSerif-Regular.ttf",
    "truetype/noto/NotoSerif-Regular.ttf",
    "truetype/noto/NotoSerif-Bold.ttf",
    "truetype/noto/NotoSans-Italic.ttf",
)

_ARABIC_NEEDED = "أابجحدرسصطعفقكلمنهوىي٠١٢٣٤٥٦٧٨٩"
_LATIN_NEEDED = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"


@functools.lru_cache(maxsize=512)
def font(path: str, size: int) -> ImageFont.FreeTypeFont:
    layout = ImageFont.Layout.RAQM if ImageFont.core.HAVE_RAQM else ImageFont.Layout.BASIC
    return ImageFont.truetype(path, size, layout_engine=layout)


def _covers(path: str, chars: str) -> bool:
    f = font(path, 32)
    missing = bytes(f.getmask("\ue000"))  # private-use code point: draws the .notdef glyph
    for c in chars:
        m = f.getmask(c)
        if m.size[0] == 0 or bytes(m) == missing:
            return False
    return True


def persian_digits(path: str) -> bool:
    """True when the face draws Arabic-Indic four or five (U+0664, U+0665) with the Persian glyph.

    Such a face would label a Persian-shaped digit as an Egyptian one; Egyptian plates use the Arabic
    shapes, so these faces are refused for Arabic plates."""
    f = font(path, 32)
    return any(
        bytes(f.getmask(a)) == bytes(f.getmask(b)) for a, b in (("\u0664", "\u06f4"), ("\u0665", "\u06f5"))
    )


@functools.lru_cache(maxsize=8)
def pool(script: str, split: str) -> tuple[str, ...]:
    """Absolute paths of the usable fonts of ``script`` (arabic|latin) in ``split``.

    Splits: train, train_extended, train_wide, heldout, all. ``train_extended`` is the training pool
    plus the extra faces, ``train_wide`` adds the fifth stage's faces (missing ones are skipped); ``all``
    is the extended pool and the held-out faces.
    """
    table = {
        ("arabic", "train"): ARABIC_TRAIN,
        ("arabic", "train_extended"): ARABIC_TRAIN + ARABIC_TRAIN_EXTRA,
        ("arabic", "train_wide"): ARABIC_TRAIN + ARABIC_TRAIN_EXTRA + ARABIC_TRAIN_WIDE,
        ("arabic", "heldout"): ARABIC_HELDOUT,
        ("latin", "train"): LATIN_TRAIN,
        ("latin", "train_extended"): LATIN_TRAIN + LATIN_TRAIN_EXTRA,
        ("latin", "train_wide"): LATIN_TRAIN + LATIN_TRAIN_EXTRA,
        ("latin", "heldout"): LATIN_HELDOUT,
    }
    names = (
        table[(script, "train_extended")] + table[(script, "heldout")]
        if split == "all"
        else table[(script, split)]
    )
    need = _ARABIC_NEEDED if script == "arabic" else _LATIN_NEEDED
    out = tuple(
        str(ROOT / n)
        for n in names
        if (ROOT / n).is_file()
        and _covers(str(ROOT / n), need)
        and not (script == "arabic" and persian_digits(str(ROOT / n)))
    )
    if not out:
        raise RuntimeError(f"no usable {script} fonts ({split}) under {ROOT}")
    return out
