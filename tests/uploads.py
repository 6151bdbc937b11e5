"""Deterministic generator of real-world-looking digit uploads made from MNIST test digits.

A plain module (no pytest), shared by the tests and by ``bench/uploads.py``.
Every upload is a function of ``(kind, seed, index)`` only: the same arguments
give the same bytes on every machine (seeded numpy, Pillow encoders).

Kinds (see :data:`KINDS`):

* ``clean``         canvas-like: the digit as a browser canvas or a scan makes it
* ``phone``         phone photo of paper: off-white paper, perspective, uneven light,
                    soft shadow, blur, sensor noise, JPEG 40-80, sometimes EXIF orientation
* ``ruled``         ruled or grid paper (thin blue/grey lines), often a red margin line
* ``clutter``       specks or a dot away from the digit, a stray mark near an edge,
                    a frame drawn around the digit, or the edge of the sheet
* ``small_rotated`` a small digit (5-15 % of the width) rotated 10-25 deg on a big canvas
* ``colour``        coloured ink on coloured or patterned paper, sometimes low contrast
* ``strokes``       thin 1-3 px strokes on 2000-3000 px images, or thick blobby strokes

Development looks at seeds below :data:`BENCH_SEED`; the benchmark uses seeds
from :data:`BENCH_SEED` up, so nothing is tuned on the images it is scored on.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import struct
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("clean", "phone", "ruled", "clutter", "small_rotated", "colour", "strokes")
BENCH_SEED = 1000
MNIST_DIR = os.environ.get("MNIST_DIR", "/work/shared/data/mnist")


# --------------------------------------------------------------------------- #
# MNIST test digits
# --------------------------------------------------------------------------- #
@lru_cache(maxsize=2)
def mnist_test(mnist_dir: str = MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """All 10k MNIST test images (uint8, white on black) and labels, read from gzip IDX."""
    with gzip.open(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read()
    with gzip.open(os.path.join(mnist_dir, "t10k-labels-idx1-ubyte.gz"), "rb") as f:
        raw_labels = f.read()
    _, count, rows, cols = struct.unpack(">IIII", raw[:16])
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(count, rows, cols)
    return images, np.frombuffer(raw_labels, np.uint8, offset=8)


def rng_for(kind: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, KINDS.index(kind), index])


# --------------------------------------------------------------------------- #
# Drawing helpers
# --------------------------------------------------------------------------- #
def digit_ink(d28: np.ndarray, size: int) -> np.ndarray:
    """The 28x28 digit smoothly enlarged to size x size, as ink coverage in [0, 1]."""
    im = Image.fromarray(d28).resize((size, size), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(im, np.float32) / 255.0, 0.0, 1.0)


def rotated(ink: np.ndarray, degrees: float) -> np.ndarray:
    im = Image.fromarray(ink.astype(np.float32), "F")
    return np.asarray(im.rotate(degrees, Image.Resampling.BILINEAR, expand=True), np.float32)


def paste_ink(field: np.ndarray, ink: np.ndarray, top: int, left: int) -> None:
    """Add ink coverage into ``field`` (clipped at the borders), keeping the maximum."""
    h, w = ink.shape
    H, W = field.shape
    t0, l0 = max(0, top), max(0, left)
    t1, l1 = min(H, top + h), min(W, left + w)
    if t1 <= t0 or l1 <= l0:
        return
    part = ink[t0 - top : t1 - top, l0 - left : l1 - left]
    np.maximum(field[t0:t1, l0:l1], part, out=field[t0:t1, l0:l1])


def compose(paper_rgb: np.ndarray, ink: np.ndarray, ink_rgb) -> np.ndarray:
    """Paper (H, W, 3) float and ink coverage (H, W) -> RGB float."""
    a = ink[..., None]
    return paper_rgb * (1.0 - a) + np.asarray(ink_rgb, np.float32) * a


def plain_paper(h: int, w: int, rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.float32), (h, w, 3)).copy()


def lighting(h: int, w: int, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth illumination field: a tilted gradient plus an off-centre vignette."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys /= h
    xs /= w
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle)
    cy, cx = rng.uniform(0.2, 0.8, 2)
    vignette = (ys - cy) ** 2 + (xs - cx) ** 2
    field = 1.0 - strength * (0.6 * (ramp + 0.7) / 1.4 + 0.4 * vignette / 0.8)
    return np.clip(field, 0.25, 1.0)


def soft_shadow(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A soft-edged shadow (a hand or a phone) over one side: multiplicative field."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    d = (xs / w - 0.5) * math.cos(angle) + (ys / h - 0.5) * math.sin(angle) - rng.uniform(0.15, 0.4)
    softness = rng.uniform(0.03, 0.12)
    depth = rng.uniform(0.25, 0.5)
    return 1.0 - depth / (1.0 + np.exp(-d / softness))


def perspective(im: Image.Image, rng: np.random.Generator, amount: float, fill) -> Image.Image:
    """Warp as if photographed at an angle: the corners move by up to ``amount`` of the size."""
    w, h = im.size
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], np.float64)
    dst = src + rng.uniform(-amount, amount, (4, 2)) * (w, h)
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):  # map output (x, y) -> input (u, v)
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    coeffs = np.linalg.solve(np.array(rows), np.array(rhs))
    return im.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs),
                        Image.Resampling.BILINEAR, fillcolor=fill)


def to_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8))


def add_noise(rgb: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return rgb + rng.normal(0.0, sigma, rgb.shape).astype(np.float32)


# EXIF orientation -> the transpose that turns upright pixels into the stored ones.
_STORED_FOR = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def encode(im: Image.Image, fmt: str = "PNG", orientation: int | None = None, **kwargs) -> bytes:
    """Encode; with ``orientation`` the pixels are stored turned and the EXIF tag undoes it."""
    if orientation:
        im = im.transpose(_STORED_FOR[orientation])
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def thin_skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean mask (vectorised; small images only)."""
    img = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = img
            n = [np.roll(np.roll(p, dy, 0), dx, 1) for dy, dx in
                 ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1))]
            # n[0]=P2 (north) ... clockwise, as in the paper
            b = sum(n)
            seq = n + [n[0]]
            a = sum(((seq[i] == 0) & (seq[i + 1] == 1)).astype(np.uint8) for i in range(8))
            if step == 0:
                c = (n[0] * n[2] * n[4] == 0) & (n[2] * n[4] * n[6] == 0)
            else:
                c = (n[0] * n[2] * n[6] == 0) & (n[0] * n[4] * n[6] == 0)
            remove = (p == 1) & (b >= 2) & (b <= 6) & (a == 1) & c
            if remove.any():
                img = img.copy()
                img[remove] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def draw_skeleton(d28: np.ndarray, size: int, width: int) -> Image.Image:
    """The digit redrawn as a pen trajectory of ``width`` px on a size x size white canvas."""
    grid = 112
    mask = np.asarray(Image.fromarray(d28).resize((grid, grid), Image.Resampling.BILINEAR)) > 110
    skel = thin_skeleton(mask)
    im = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(im)
    f = size / grid
    ys, xs = np.nonzero(skel)
    on = set(zip(ys.tolist(), xs.tolist()))
    for y, x in on:
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            if (y + dy, x + dx) in on:
                draw.line([(x * f, y * f), ((x + dx) * f, (y + dy) * f)], fill=0, width=width)
    return im


# --------------------------------------------------------------------------- #
# The kinds
# --------------------------------------------------------------------------- #
def _photo_canvas(rng, short_range, digit_frac):
    short = int(rng.integers(*short_range))
    long_ = int(short * rng.uniform(1.2, 1.45))
    h, w = (long_, short) if rng.random() < 0.5 else (short, long_)
    size = int(min(h, w) * rng.uniform(*digit_frac))
    top = (h - size) // 2 + int(rng.integers(-(h - size) // 5, (h - size) // 5 + 1))
    left = (w - size) // 2 + int(rng.integers(-(w - size) // 5, (w - size) // 5 + 1))
    return h, w, size, top, left


def make_clean(d28, rng) -> bytes:
    size = int(rng.integers(140, 400))
    ink = digit_ink(d28, size)
    style = rng.integers(0, 3)
    if style == 0:  # black strokes on white
        return encode(to_image(compose(plain_paper(size, size, (255, 255, 255)), ink, (0, 0, 0))))
    if style == 1:  # white on black, like MNIST
        return encode(Image.fromarray(np.round(ink * 255).astype(np.uint8)))
    rgba = np.zeros((size, size, 4), np.uint8)  # browser canvas: black strokes on transparency
    rgba[..., 3] = np.round(ink * 255).astype(np.uint8)
    return encode(Image.fromarray(rgba, "RGBA"))


def make_phone(d28, rng) -> bytes:
    h, w, size, top, left = _photo_canvas(rng, (500, 1100), (0.3, 0.6))
    field = np.zeros((h, w), np.float32)
    paste_ink(field, digit_ink(d28, size), top, left)
    tone = rng.uniform(200, 240)
    paper = plain_paper(h, w, (tone, tone * rng.uniform(0.95, 1.0), tone * rng.uniform(0.85, 0.97)))
    ink_rgb = rng.choice([[35, 35, 45], [30, 40, 110], [60, 60, 60]]) + rng.uniform(-10, 20)
    rgb = compose(paper, field * rng.uniform(0.75, 1.0), ink_rgb)
    light = lighting(h, w, rng, rng.uniform(0.15, 0.5))
    if rng.random() < 0.6:
        light = light * soft_shadow(h, w, rng)
    rgb = rgb * light[..., None]
    im = to_image(rgb)
    im = perspective(im, rng, 0.08, fill=tuple(int(v * 0.6) for v in paper[0, 0]))
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.6) * min(h, w) / 600))
    rgb = add_noise(np.asarray(im, np.float32), rng, rng.uniform(2, 9))
    orientation = int(rng.choice([3, 6, 8])) if rng.random() < 0.3 else None
    return encode(to_image(rgb), "JPEG", orientation, quality=int(rng.integers(40, 81)))


def make_ruled(d28, rng) -> bytes:
    h, w, size, top, left = _photo_canvas(rng, (500, 1000), (0.3, 0.55))
    tone = rng.uniform(225, 250)
    im = to_image(plain_paper(h, w, (tone, tone, tone * 0.97)))
    draw = ImageDraw.Draw(im)
    colour = tuple(int(c) for c in (rng.choice([[150, 180, 230], [120, 150, 210], [165, 165, 170]]) + rng.uniform(-15, 15)))
    spacing = size * rng.uniform(0.3, 0.7)
    thick = int(rng.integers(1, 4))
    y = rng.uniform(0, spacing)
    while y < h:
        draw.line([(0, y), (w, y)], fill=colour, width=thick)
        y += spacing
    if rng.random() < 0.4:  # grid paper
        x = rng.uniform(0, spacing)
        while x < w:
            draw.line([(x, 0), (x, h)], fill=colour, width=thick)
            x += spacing
    if rng.random() < 0.6:  # red margin
        x = w * rng.uniform(0.06, 0.2)
        draw.line([(x, 0), (x, h)], fill=(210, 60, 60), width=int(rng.integers(1, 4)))
    field = np.zeros((h, w), np.float32)
    paste_ink(field, digit_ink(d28, size), top, left)
    ink_rgb = rng.choice([[25, 25, 35], [20, 40, 140]])
    rgb = compose(np.asarray(im, np.float32), field, ink_rgb)
    rgb = rgb * lighting(h, w, rng, rng.uniform(0.0, 0.25))[..., None]
    im = to_image(rgb).rotate(rng.uniform(-2, 2), Image.Resampling.BILINEAR, fillcolor=(int(tone),) * 3)
    rgb = add_noise(np.asarray(im, np.float32), rng, rng.uniform(1, 5))
    if rng.random() < 0.5:
        return encode(to_image(rgb), "JPEG", quality=int(rng.integers(60, 91)))
    return encode(to_image(rgb))


def make_clutter(d28, rng) -> bytes:
    h, w, size, top, left = _photo_canvas(rng, (400, 900), (0.3, 0.5))
    tone = rng.uniform(225, 255)
    im = to_image(plain_paper(h, w, (tone, tone, tone)))
    draw = ImageDraw.Draw(im)
    ink_c = tuple(int(v) for v in rng.uniform(10, 60, 3))
    far = lambda: _far_point(rng, h, w, top, left, size)  # noqa: E731
    what = rng.choice(["specks", "mark", "frame", "sheet"], size=int(rng.integers(1, 3)), replace=False)
    if "specks" in what:
        for _ in range(int(rng.integers(1, 7))):
            y, x = far()
            r = rng.uniform(1, 0.025 * size + 1.5)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=ink_c)
    if "mark" in what:  # a short stray stroke near an edge
        y, x = far()
        length = rng.uniform(0.05, 0.15) * min(h, w)
        a = rng.uniform(0, math.pi)
        draw.line([(x, y), (x + length * math.cos(a), y + length * math.sin(a))], fill=ink_c,
                  width=max(1, int(size * rng.uniform(0.02, 0.05))))
    if "frame" in what:
        m = size * rng.uniform(0.12, 0.3)
        draw.rectangle([left - m, top - m, left + size + m, top + size + m], outline=ink_c,
                       width=max(1, int(size * rng.uniform(0.01, 0.04))))
    field = np.zeros((h, w), np.float32)
    paste_ink(field, digit_ink(d28, size), top, left)
    rgb = compose(np.asarray(im, np.float32), field, ink_c)
    if "sheet" in what:  # the sheet ends: a darker table beyond a slightly tilted edge
        rgb = _sheet_edge(rgb, rng, top, left, size)
    rgb = add_noise(rgb, rng, rng.uniform(1, 5))
    if rng.random() < 0.5:
        return encode(to_image(rgb), "JPEG", quality=int(rng.integers(60, 91)))
    return encode(to_image(rgb))


def _far_point(rng, h, w, top, left, size):
    """A point at least 0.35 digit sizes away from the digit's box."""
    for _ in range(100):
        y, x = rng.uniform(0.03, 0.97) * h, rng.uniform(0.03, 0.97) * w
        dy = max(top - y, 0, y - (top + size))
        dx = max(left - x, 0, x - (left + size))
        if max(dy, dx) > 0.35 * size:
            return y, x
    return 0.05 * h, 0.05 * w


def _sheet_edge(rgb, rng, top, left, size):
    h, w, _ = rgb.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    side = int(rng.integers(0, 4))
    tilt = rng.uniform(-0.05, 0.05)
    if side == 0:
        edge, pos = ys - tilt * xs, rng.uniform(0.02, max(0.03, top - 0.15 * size))
    elif side == 1:
        edge, pos = (h - ys) - tilt * xs, rng.uniform(0.02, max(0.03, h - top - 1.15 * size))
    elif side == 2:
        edge, pos = xs - tilt * ys, rng.uniform(0.02, max(0.03, left - 0.15 * size))
    else:
        edge, pos = (w - xs) - tilt * ys, rng.uniform(0.02, max(0.03, w - left - 1.15 * size))
    beyond = (edge < pos)[..., None]
    table = np.asarray(rng.uniform(40, 140, 3), np.float32)
    return np.where(beyond, table, rgb)


def make_small_rotated(d28, rng) -> bytes:
    w = int(rng.integers(1000, 2600))
    h = int(w * rng.uniform(0.6, 1.0))
    size = int(w * rng.uniform(0.05, 0.15))
    angle = rng.uniform(10, 25) * rng.choice([-1, 1])
    ink = rotated(digit_ink(d28, size), angle)
    field = np.zeros((h, w), np.float32)
    paste_ink(field, ink, int(rng.integers(0, h - ink.shape[0])), int(rng.integers(0, w - ink.shape[1])))
    gray = np.round(255 * (1.0 - field)).astype(np.uint8)
    if rng.random() < 0.5:
        return encode(Image.fromarray(gray), "JPEG", quality=90)
    return encode(Image.fromarray(gray))


def _pattern(h, w, rng) -> np.ndarray:
    """A light paper pattern in [0, 1]: stripes, checks or dots."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(12, 40)
    kind = rng.integers(0, 3)
    if kind == 0:
        a = rng.uniform(0, math.pi)
        return (np.sin((xs * math.cos(a) + ys * math.sin(a)) * 2 * math.pi / period) > 0.3).astype(np.float32)
    if kind == 1:
        return (((xs // period) + (ys // period)) % 2).astype(np.float32)
    return ((((xs % period) - period / 2) ** 2 + ((ys % period) - period / 2) ** 2) < (period / 5) ** 2).astype(np.float32)


def make_colour(d28, rng) -> bytes:
    h, w, size, top, left = _photo_canvas(rng, (300, 700), (0.35, 0.65))
    hue = rng.uniform(0, 1, 3)
    paper_rgb = 255 - rng.uniform(10, 70) * hue / hue.max()
    paper = plain_paper(h, w, paper_rgb)
    if rng.random() < 0.5:
        other = 255 - rng.uniform(15, 60, 3)
        pat = _pattern(h, w, rng)[..., None]
        paper = paper * (1 - pat) + other * pat
    pens = np.array([[200, 30, 30], [30, 60, 200], [20, 130, 40], [120, 30, 150], [20, 20, 20], [210, 110, 20]], np.float32)
    ink_rgb = pens[rng.integers(0, len(pens))]
    strength = rng.uniform(0.3, 0.5) if rng.random() < 0.35 else 1.0  # low contrast: a faint pen
    field = np.zeros((h, w), np.float32)
    paste_ink(field, digit_ink(d28, size) * strength, top, left)
    rgb = add_noise(compose(paper, field, ink_rgb), rng, rng.uniform(0, 4))
    if rng.random() < 0.5:
        return encode(to_image(rgb), "JPEG", quality=int(rng.integers(75, 95)))
    return encode(to_image(rgb))


def make_strokes(d28, rng) -> bytes:
    if rng.random() < 0.5:  # fine pen on a huge image
        side = int(rng.integers(2000, 3001))
        size = int(side * rng.uniform(0.3, 0.6))
        pen = draw_skeleton(d28, size, int(rng.integers(1, 4)))
        im = Image.new("L", (side, int(side * rng.uniform(0.75, 1.0))), 255)
        im.paste(pen, (int(rng.integers(0, side - size)), int(rng.integers(0, im.size[1] - size))))
        return encode(im)
    size = int(rng.integers(200, 500))  # thick, blobby marker
    big = Image.fromarray(d28).resize((size, size), Image.Resampling.BICUBIC)
    k = int(size * rng.uniform(0.03, 0.07)) | 1
    big = big.filter(ImageFilter.MaxFilter(k)).filter(ImageFilter.GaussianBlur(k / 3))
    canvas = Image.new("L", (int(size * 1.3), int(size * 1.3)), 0)
    canvas.paste(big, (int(size * 0.15), int(size * 0.15)))
    return encode(Image.fromarray(255 - np.asarray(canvas)), "JPEG" if rng.random() < 0.5 else "PNG")


MAKERS = {
    "clean": make_clean,
    "phone": make_phone,
    "ruled": make_ruled,
    "clutter": make_clutter,
    "small_rotated": make_small_rotated,
    "colour": make_colour,
    "strokes": make_strokes,
}


def upload(kind: str, seed: int, index: int, mnist_dir: str = MNIST_DIR) -> tuple[bytes, int, np.ndarray]:
    """One upload of ``kind``: (image bytes, true label, the clean 28x28 MNIST digit)."""
    rng = rng_for(kind, seed, index)
    images, labels = mnist_test(mnist_dir)
    i = int(rng.integers(0, len(images)))
    return MAKERS[kind](images[i], rng), int(labels[i]), images[i]


def uploads(kind: str, count: int, seed: int, mnist_dir: str = MNIST_DIR):
    """``count`` uploads of ``kind`` for ``seed`` (a generator of (bytes, label, digit))."""
    for index in range(count):
        yield upload(kind, seed, index, mnist_dir)


def phone_photo_12mp(seed: int = BENCH_SEED, mnist_dir: str = MNIST_DIR) -> bytes:
    """A 4000x3000 phone-style JPEG of one digit (for timing the preprocessing)."""
    rng = np.random.default_rng([seed, 12])
    images, _ = mnist_test(mnist_dir)
    d28 = images[int(rng.integers(0, len(images)))]
    small = Image.open(io.BytesIO(make_phone(d28, rng))).convert("RGB")
    big = small.resize((4000, 3000) if small.width >= small.height else (3000, 4000), Image.Resampling.BICUBIC)
    noisy = add_noise(np.asarray(big, np.float32), rng, 3.0)
    return encode(to_image(noisy), "JPEG", quality=85)
