"""Uploads as people really make them: phone photos, ruled paper, clutter, coloured ink...

The uploads come from tests/uploads.py (seeded, development seeds only: the
benchmark scores other seeds). Each must come out of preprocess_image looking
like the clean MNIST digit it was made from. No TensorFlow here.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import uploads
from core.preprocess import ImageError, UnusableImage, preprocess_image, preprocess_with_quality, to_png

DEV_SEED = 7  # below uploads.BENCH_SEED
PER_KIND = 2


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def best_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation allowing a 1-px shift (centre-of-mass rounding)."""
    return max(corr(np.roll(a, (dy, dx), axis=(0, 1)), b) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def soft(img: np.ndarray) -> np.ndarray:
    """Stroke width out of the comparison: a thin pen and a marker draw the same digit."""
    return np.asarray(Image.fromarray(img).filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(1)))


def best_rotated_corr(out: np.ndarray, ref_digit: np.ndarray) -> float:
    """Best match over the rotations the generator applies (10-25 degrees either way)."""
    best = -1.0
    for angle in range(-27, 28, 3):
        turned = np.asarray(Image.fromarray(ref_digit).rotate(angle, Image.Resampling.BILINEAR))
        best = max(best, best_corr(out, preprocess_image(to_png(turned))))
    return best


# kind -> how the output is compared with the clean digit, and the bar it must pass
MATCH = {
    "clean": (lambda out, d: best_corr(out, preprocess_image(to_png(d))), 0.9),
    "phone": (lambda out, d: best_corr(out, preprocess_image(to_png(d))), 0.8),
    "ruled": (lambda out, d: best_corr(out, preprocess_image(to_png(d))), 0.85),
    "clutter": (lambda out, d: best_corr(out, preprocess_image(to_png(d))), 0.85),
    "small_rotated": (best_rotated_corr, 0.8),
    "colour": (lambda out, d: best_corr(out, preprocess_image(to_png(d))), 0.85),
    "strokes": (lambda out, d: best_corr(soft(out), soft(preprocess_image(to_png(d)))), 0.75),
}


@pytest.mark.parametrize("kind", uploads.KINDS)
def test_each_kind_of_upload_reads_as_its_clean_digit(kind):
    measure, bar = MATCH[kind]
    for data, label, clean in uploads.uploads(kind, PER_KIND, DEV_SEED):
        out = preprocess_image(data)
        assert out.shape == (28, 28) and out.dtype == np.uint8 and out.max() == 255
        assert out[0].max() == 0 and out[:, 0].max() == 0
        score = measure(out, clean)
        assert score > bar, (kind, label, score)


def test_quality_comes_with_the_same_digit():
    data, _, _ = uploads.upload("phone", DEV_SEED, 0)
    out, quality = preprocess_with_quality(data)
    np.testing.assert_array_equal(out, preprocess_image(data))
    assert isinstance(quality, float) and 0.0 <= quality <= 1.0


def test_quality_is_high_for_clean_ink_and_lower_for_faint_ink_with_clutter():
    clean, faint = paper_page(), paper_page(tone=215)
    draw_pen_seven(clean, ink=20)
    draw_pen_seven(faint, ink=185)
    add_specks(faint, [(60, 60), (540, 60), (60, 380)])
    _, q_clean = preprocess_with_quality(jpeg(clean, noise=2))
    _, q_faint = preprocess_with_quality(jpeg(faint, noise=6))
    assert q_clean > 0.8
    assert q_faint < q_clean


# --------------------------------------------------------------------------- #
# Straight strokes next to ruling, specks, blank paper
# --------------------------------------------------------------------------- #
def paper_page(w: int = 600, h: int = 450, tone: int = 240) -> Image.Image:
    return Image.new("RGB", (w, h), (tone, tone, tone - 6))


def rule(page: Image.Image, spacing: int = 40, first: int = 18, colour=(150, 180, 230), margin: bool = True) -> None:
    draw = ImageDraw.Draw(page)
    w, h = page.size
    for y in range(first, h, spacing):
        draw.line([(0, y), (w, y)], fill=colour, width=2)
    if margin:
        draw.line([(70, 0), (70, h)], fill=(210, 60, 60), width=2)


PEN = {
    # digit -> pen strokes in a 100x100 box; straight parts on purpose
    "1": [[(52, 8), (50, 92)]],
    "7": [[(22, 10), (80, 10), (45, 92)]],
    "4": [[(60, 8), (18, 62), (84, 62)], [(64, 30), (64, 92)]],
}


def draw_pen(page: Image.Image, digit: str, left: int, top: int, size: int, width: int = 7, ink: int = 25) -> None:
    draw = ImageDraw.Draw(page)
    f = size / 100
    for stroke in PEN[digit]:
        draw.line([(left + x * f, top + y * f) for x, y in stroke], fill=(ink, ink, ink + 20), width=width, joint="curve")


def draw_pen_seven(page: Image.Image, ink: int = 25) -> None:
    draw_pen(page, "7", 220, 100, 220, ink=ink)


def add_specks(page: Image.Image, points) -> None:
    draw = ImageDraw.Draw(page)
    for x, y in points:
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(30, 30, 30))


def jpeg(page: Image.Image, noise: float = 3.0, seed: int = 0, quality: int = 85) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.asarray(page, np.float32) + rng.normal(0, noise, (page.size[1], page.size[0], 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.mark.parametrize("digit", ["1", "7", "4"])
def test_straight_strokes_survive_next_to_ruling(digit):
    # The 7's bar and the 4's bar lie 4 px from a ruling line, the 1 and the
    # 4's upright cross several lines: the strokes stay, the lines go.
    plain, ruled = paper_page(), paper_page()
    rule(ruled, spacing=40, first=18 + 24)  # lines at y = 42, 82, 122, ...
    for page in (plain, ruled):
        draw_pen(page, digit, 220, 50 if digit == "7" else 20 if digit == "4" else 40, 300)
    expected = preprocess_image(jpeg(plain))
    out = preprocess_image(jpeg(ruled))
    assert best_corr(out, expected) > 0.93, digit
    h, w = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert h[-1] - h[0] >= 18  # the digit, not a line, fills the 20x20 box


def test_far_specks_and_marks_are_dropped():
    plain, cluttered = paper_page(), paper_page()
    draw_pen_seven(plain)
    draw_pen_seven(cluttered)
    add_specks(cluttered, [(40, 40), (560, 400), (30, 420), (500, 60)])
    ImageDraw.Draw(cluttered).line([(560, 150), (585, 190)], fill=(30, 30, 30), width=5)  # a stray mark
    expected = preprocess_image(jpeg(plain))
    out = preprocess_image(jpeg(cluttered))
    assert best_corr(out, expected) > 0.97


def test_frame_around_the_digit_is_dropped():
    plain, framed = paper_page(), paper_page()
    draw_pen_seven(plain)
    draw_pen_seven(framed)
    ImageDraw.Draw(framed).rectangle([180, 60, 480, 370], outline=(30, 30, 30), width=4)
    assert best_corr(preprocess_image(jpeg(framed)), preprocess_image(jpeg(plain))) > 0.97


def four_in_two_strokes(gap: int) -> bytes:
    """A 4 whose bar stops ``gap`` px short of the separately drawn upright."""
    page = paper_page()
    draw = ImageDraw.Draw(page)
    draw.line([(280, 60), (200, 250), (300 - 9 - gap, 250)], fill=(25, 25, 25), width=9)
    draw.line([(300, 120), (300, 380)], fill=(25, 25, 25), width=9)
    return jpeg(page)


def test_broken_strokes_stay_together():
    # Pen lifted: the two strokes of a 4 do not touch, the digit keeps both.
    joined = preprocess_image(four_in_two_strokes(gap=-6))
    for gap in (4, 12):
        assert best_corr(preprocess_image(four_in_two_strokes(gap)), joined) > 0.9, gap


def blank_paper_photo(seed: int) -> bytes:
    """Paper with a lighting gradient, a soft shadow, noise, ruling and a margin, JPEG - no ink."""
    rng = np.random.default_rng(seed)
    page = paper_page(800, 600, tone=int(rng.integers(205, 245)))
    rule(page, spacing=int(rng.integers(30, 60)), first=int(rng.integers(5, 30)), colour=(140, 170, 225))
    arr = np.asarray(page, np.float32)
    h, w = arr.shape[:2]
    light = uploads.lighting(h, w, rng, 0.4) * uploads.soft_shadow(h, w, rng)
    im = uploads.to_image(arr * light[..., None]).filter(ImageFilter.GaussianBlur(1.0))
    noisy = uploads.add_noise(np.asarray(im, np.float32), rng, 6.0)
    return uploads.encode(uploads.to_image(noisy), "JPEG", quality=60)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blank_paper_photo_is_still_blank(seed):
    with pytest.raises(ImageError) as info:
        preprocess_image(blank_paper_photo(seed))
    assert isinstance(info.value, UnusableImage) and info.value.code == "blank_image"


def test_faint_ink_on_shadowed_photo_is_not_blank():
    page = paper_page(tone=225)
    draw_pen_seven(page, ink=170)  # a faint pencil-like stroke
    arr = np.asarray(page, np.float32)
    rng = np.random.default_rng(3)
    shade = uploads.soft_shadow(arr.shape[0], arr.shape[1], rng) * uploads.lighting(arr.shape[0], arr.shape[1], rng, 0.4)
    photo = uploads.to_image(arr * shade[..., None])
    plain = paper_page()
    draw_pen_seven(plain)
    assert best_corr(preprocess_image(jpeg(photo, noise=4)), preprocess_image(jpeg(plain))) > 0.9
