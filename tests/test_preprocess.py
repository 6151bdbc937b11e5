"""Tests of server/preprocess.py: the one uploads -> MNIST-style 28x28 path.

No TensorFlow, no services: images are built here with Pillow/numpy, plus a
few real MNIST test digits read straight from the gzip IDX files.
"""
from __future__ import annotations

import functools
import gzip
import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core import preprocess
from core.preprocess import (
    SUPPORTED_TYPES,
    ImageError,
    ImageTooLarge,
    UnsupportedImage,
    UnusableImage,
    detect_type,
    from_png,
    preprocess_image,
    preprocess_with_quality,
    scale,
    to_png,
)

FORMATS = ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]
MNIST_DIR = os.environ.get("MNIST_DIR", "/work/shared/data/mnist")
N_DIGITS = 10  # the first ten test digits: labels 7 2 1 0 4 1 4 9 5 9


# --------------------------------------------------------------------------- #
# Helpers / factories
# --------------------------------------------------------------------------- #
@functools.lru_cache(maxsize=None)
def mnist_test(n: int = N_DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` MNIST test images (n, 28, 28) uint8 and their labels."""
    images_path = os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz")
    labels_path = os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz")
    assert os.path.exists(images_path), f"MNIST test images not found in {MNIST_DIR} (set MNIST_DIR)"
    with gzip.open(images_path, "rb") as f:
        raw = f.read(16 + n * 28 * 28)
    with gzip.open(labels_path, "rb") as f:
        raw_labels = f.read(8 + n)
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    assert (magic, rows, cols) == (2051, 28, 28) and count >= n
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 28, 28)
    labels = np.frombuffer(raw_labels, dtype=np.uint8, offset=8)
    return images, labels


def digit(i: int = 0) -> np.ndarray:
    return mnist_test()[0][i]


def upscale(img: np.ndarray, factor: int = 5) -> np.ndarray:
    """A smooth (bilinear) upscaled copy of a uint8 image, like a large drawing."""
    h, w = img.shape
    return np.asarray(
        Image.fromarray(img).resize((w * factor, h * factor), Image.Resampling.BILINEAR)
    )


def encode(img, fmt: str = "PNG", **kwargs) -> bytes:
    """A numpy array or PIL image -> bytes in ``fmt``."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    if fmt == "JPEG":
        kwargs.setdefault("quality", 90)
    if fmt == "WEBP":
        kwargs.setdefault("quality", 90)
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def best_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation allowing a 1-px shift (the centre-of-mass rounding of MNIST itself)."""
    best = -1.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            best = max(best, corr(np.roll(a, (dy, dx), axis=(0, 1)), b))
    return best


def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    m = img.astype(float)
    total = m.sum()
    ys, xs = np.indices(m.shape)
    return float((ys * m).sum() / total), float((xs * m).sum() / total)


def bbox_size(img: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(img.any(axis=1))
    cols = np.flatnonzero(img.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def assert_mnist_like(out: np.ndarray) -> None:
    """Shape, dtype, full contrast, black background, 20x20 box, centre of mass."""
    assert isinstance(out, np.ndarray)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255
    assert out[0].max() == 0 and out[:, 0].max() == 0  # black frame: white on black
    assert (out > 0).mean() < 0.5  # the digit is the minority
    h, w = bbox_size(out)
    assert h <= 20 and w <= 20 and max(h, w) >= 19
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1.0 and abs(cx - 14) <= 1.0, (cy, cx)


def stroke_image(size=280, mode="L", bg=255, ink=0, width=18):
    """A hand-drawn-looking "7" (thick polyline) in ``mode`` on ``bg``."""
    im = Image.new(mode, (size, size), bg)
    draw = ImageDraw.Draw(im)
    s = size / 280
    pts = [(80 * s, 60 * s), (200 * s, 60 * s), (150 * s, 150 * s), (120 * s, 230 * s)]
    draw.line(pts, fill=ink, width=max(1, round(width * s)), joint="curve")
    draw.line([(115 * s, 145 * s), (185 * s, 145 * s)], fill=ink, width=max(1, round(width * s * 0.7)))
    return im


def reference_seven() -> np.ndarray:
    """The "7" drawn white on black, opaque grayscale: what every variant must match."""
    return preprocess_image(encode(stroke_image(bg=0, ink=255)))


KINDS = {413: ImageTooLarge, 415: UnsupportedImage, 422: UnusableImage}


def status_of(err: ImageError) -> int:
    """The status the API answers with for this kind of image error."""
    return next(status for status, kind in KINDS.items() if isinstance(err, kind))


def raises_image_error(data: bytes, status: int, code: str, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as info:
        preprocess_image(data, **kwargs)
    err = info.value
    assert (status_of(err), err.code) == (status, code), repr(err)
    assert isinstance(err.message, str) and len(err.message) > 10
    assert str(err) == err.message
    return err


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A valid 1-bit grayscale PNG of zeros, built compactly (a few tens of KB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    chunks = [comp.compress(row * 100) for _ in range(height // 100)]
    chunks.append(comp.compress(row * (height % 100)))
    chunks.append(comp.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"".join(chunks))
        + png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- #
# Type detection
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "fmt,kind", [("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("BMP", "bmp"), ("WEBP", "webp"), ("TIFF", "tiff")]
)
def test_detect_type_each_supported_format(fmt, kind):
    data = encode(upscale(digit(0), 2), fmt)
    assert detect_type(data) == kind
    assert detect_type(bytearray(data)) == kind
    assert detect_type(memoryview(data)) == kind
    assert kind in SUPPORTED_TYPES


def test_detect_type_big_endian_tiff():
    data = b"MM\x00*" + b"\x00" * 60
    assert detect_type(data) == "tiff"


UNSUPPORTED = {
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><path d="M1 1L9 9"/></svg>',
    "svg_xml": b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    "svg_bom": b'\xef\xbb\xbf<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    "pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n",
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 1 1 moveto 9 9 lineto stroke\n",
    "eps_dos_binary": b"\xc5\xd0\xd3\xc6" + b"\x00" * 60,
    "text": b"seven\n",
    "text_starting_with_BM": b"BMW drawings are not images, this is plain text.",
    "html": b"<!doctype html><html><body><img src=x></body></html>",
    "ico": b"\x00\x00\x01\x00\x01\x00\x10\x10" + b"\x00" * 60,
    "zip": b"PK\x03\x04" + b"\x00" * 60,
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_types_are_415(name):
    data = UNSUPPORTED[name]
    with pytest.raises(ImageError) as info:
        detect_type(data)
    assert isinstance(info.value, UnsupportedImage) and info.value.code == "unsupported_media_type"
    # preprocess_image rejects the same bodies the same way (no filename involved).
    raises_image_error(data, 415, "unsupported_media_type")


def test_type_is_decided_by_content_not_by_claims():
    # A PNG body is a PNG whatever anyone calls it; an SVG body stays an SVG.
    png = encode(upscale(digit(0), 2), "PNG")
    assert detect_type(png) == "png"
    out = preprocess_image(png)
    assert out.shape == (28, 28)
    svg_named_png = UNSUPPORTED["svg"]
    raises_image_error(svg_named_png, 415, "unsupported_media_type")


def test_empty_bytes_are_422_unreadable():
    # Empty data is not "an unsupported type" but an unreadable (empty) image: 422.
    with pytest.raises(ImageError) as info:
        detect_type(b"")
    assert isinstance(info.value, UnusableImage) and info.value.code == "unreadable_image"
    raises_image_error(b"", 422, "unreadable_image")


# --------------------------------------------------------------------------- #
# Real MNIST digits through every format, both polarities
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("polarity", ["black_on_white", "white_on_black"])
def test_mnist_digits_round_trip_every_format(fmt, polarity):
    images, _ = mnist_test()
    for i, original in enumerate(images):
        big = upscale(original, 5)
        if polarity == "black_on_white":
            big = 255 - big
        out = preprocess_image(encode(big, fmt))
        assert_mnist_like(out)
        c = best_corr(out, original)
        assert c > 0.85, (fmt, polarity, i, c)
        assert corr(out, original) > 0.75, (fmt, polarity, i)


def test_mnist_digit_at_native_size_is_nearly_unchanged():
    images, _ = mnist_test()
    for original in images:
        out = preprocess_image(encode(original, "PNG"))
        assert_mnist_like(out)
        assert best_corr(out, original) > 0.95


def test_a_digit_already_in_mnist_form_is_taken_as_it_is():
    """MNIST's own digits (box 20 px, centred by mass, flat paper) come out exactly as they went in,
    in either polarity; one moved off centre or of another size goes the general way (and is then
    put into that form)."""
    images, _ = mnist_test()
    for original in images:
        if original.max() != 255:
            continue
        for picture in (original, 255 - original):
            out, quality = preprocess_with_quality(encode(picture, "PNG"))
            assert np.array_equal(out, original) and quality == 1.0
        shifted = np.roll(original, 3, axis=1)
        out = preprocess_image(encode(shifted, "PNG"))
        assert not np.array_equal(out, shifted) and best_corr(out, original) > 0.95
        small = np.zeros((28, 28), np.uint8)
        small[7:21, 7:21] = np.asarray(Image.fromarray(original[4:24, 4:24]).resize((14, 14)))
        out = preprocess_image(encode(small, "PNG"))
        assert not np.array_equal(out, small) and best_corr(out, original) > 0.8


def test_lossy_low_quality_jpeg_still_matches():
    original = digit(2)
    out = preprocess_image(encode(255 - upscale(original, 5), "JPEG", quality=40))
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85


def test_non_square_canvas_and_small_digit_in_a_big_margin():
    original = digit(1)  # a "2"
    page = np.full((600, 900), 230, dtype=np.uint8)  # off-white paper
    page[250:390, 500:640] = np.minimum(page[250:390, 500:640], 255 - upscale(original, 5))
    out = preprocess_image(encode(page, "PNG"))
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85


def test_noisy_grey_paper_photo_like():
    original = digit(4)  # a "4"
    rng = np.random.default_rng(0)
    ink = upscale(original, 8).astype(float) / 255
    paper = 200 + rng.normal(0, 6, ink.shape)
    photo = paper * (1 - 0.8 * ink)
    out = preprocess_image(encode(np.clip(photo, 0, 255).astype(np.uint8), "JPEG"))
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85


def test_colour_ink_on_coloured_paper():
    original = digit(7)  # a "9"
    ink = upscale(original, 5).astype(float)[..., None] / 255
    paper = np.array([250, 240, 170], dtype=float)  # yellow note
    pen = np.array([20, 40, 160], dtype=float)  # blue pen
    rgb = (paper * (1 - ink) + pen * ink).astype(np.uint8)
    out = preprocess_image(encode(rgb, "PNG"))
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85


def test_large_photo_is_read_right():
    original = digit(0)  # a "7"
    page = np.full((3000, 4000), 215, dtype=np.uint8)
    page[900:2300, 1300:2700] = 215 - (upscale(original, 50).astype(np.uint16) * 180 // 255)
    data = encode(page, "JPEG")
    out = preprocess_image(data)
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85


# --------------------------------------------------------------------------- #
# Browser canvas and transparency
# --------------------------------------------------------------------------- #
def test_canvas_black_strokes_on_transparent_background():
    # What a browser canvas exports: RGBA, alpha 0 everywhere but the strokes.
    im = stroke_image(mode="RGBA", bg=(0, 0, 0, 0), ink=(0, 0, 0, 255))
    out = preprocess_image(encode(im, "PNG"))
    assert_mnist_like(out)
    assert out[14, 0] == 0 and out[0, 14] == 0  # white digit on black
    assert corr(out, reference_seven()) > 0.99


def test_canvas_transparent_white_background_and_soft_alpha_edges():
    # Transparent pixels that happen to be white, strokes with partial alpha edges.
    alpha = np.asarray(stroke_image(bg=0, ink=255).resize((140, 140), Image.Resampling.BILINEAR))
    rgba = np.zeros((140, 140, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[alpha > 0, :3] = 0
    rgba[..., 3] = alpha
    out = preprocess_image(encode(rgba, "PNG"))
    assert_mnist_like(out)
    assert best_corr(out, reference_seven()) > 0.95


def test_white_strokes_on_transparent_background():
    # Light strokes on transparency are flattened onto black, not lost on white.
    im = stroke_image(mode="RGBA", bg=(0, 0, 0, 0), ink=(255, 255, 255, 255))
    out = preprocess_image(encode(im, "PNG"))
    assert_mnist_like(out)
    assert corr(out, reference_seven()) > 0.99


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_white_key_colour_transparency_with_antialiased_ink(fmt):
    # A black-on-white antialiased digit whose white background is the
    # transparent colour: the light fringe must not turn it into an outline.
    original = digit(0)
    im = Image.fromarray(255 - upscale(original, 2))
    out = preprocess_image(encode(im, fmt, transparency=255))
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85


@pytest.mark.parametrize("paper,ink", [(235, 20), (20, 235)])
def test_mostly_opaque_picture_with_transparent_corners(paper, ink):
    # A photo of a note with rounded transparent corners: the backdrop must
    # match the paper, light or dark.
    original = digit(4)
    strokes = upscale(original, 5).astype(float) / 255
    grey = (paper + (ink - paper) * strokes).astype(np.uint8)
    alpha = np.full(grey.shape, 255, np.uint8)
    for r in range(12):
        alpha[r, : 12 - r] = alpha[r, -(12 - r) :] = 0
        alpha[-1 - r, : 12 - r] = alpha[-1 - r, -(12 - r) :] = 0
    out = preprocess_image(encode(np.dstack([grey, alpha]), "PNG"))
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85


def test_opaque_canvas_white_background():
    im = stroke_image(mode="RGBA", bg=(255, 255, 255, 255), ink=(0, 0, 0, 255))
    out = preprocess_image(encode(im, "PNG"))
    assert corr(out, reference_seven()) > 0.99


def test_la_mode_png():
    im = stroke_image(mode="LA", bg=(0, 0), ink=(0, 255))
    out = preprocess_image(encode(im, "PNG"))
    assert_mnist_like(out)
    assert corr(out, reference_seven()) > 0.99


# --------------------------------------------------------------------------- #
# EXIF orientation
# --------------------------------------------------------------------------- #
# Orientation tag -> how the stored pixels relate to the upright picture.
_STORED_FOR_ORIENTATION = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # viewer rotates 90 deg clockwise to display
    8: Image.Transpose.ROTATE_270,  # viewer rotates 90 deg counter-clockwise
    2: Image.Transpose.FLIP_LEFT_RIGHT,
}


@pytest.mark.parametrize("orientation", sorted(_STORED_FOR_ORIENTATION))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_gives_upright_digit(orientation, fmt):
    original = digit(1)  # a "2": not symmetric under any of these
    upright = Image.fromarray(255 - upscale(original, 5))
    stored = upright.transpose(_STORED_FOR_ORIENTATION[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = preprocess_image(encode(stored, fmt, exif=exif.tobytes()))
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85
    # Without the tag the same pixels do not look like the upright digit.
    sideways = preprocess_image(encode(stored, fmt))
    assert best_corr(sideways, original) < 0.7


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_is_ignored():
    upright = Image.fromarray(255 - upscale(digit(0), 5))
    data = encode(upright, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    out = preprocess_image(data)
    assert_mnist_like(out)


# --------------------------------------------------------------------------- #
# Image modes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale(fmt):
    original = digit(3)
    big16 = (255 - upscale(original, 5)).astype(np.uint16) * 257
    im = Image.fromarray(big16)
    assert im.mode.startswith("I;16")
    data = encode(im, fmt)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode in ("I;16", "I;16B", "I;16L", "I")
    out = preprocess_image(data)
    assert_mnist_like(out)
    eight_bit = preprocess_image(encode(255 - upscale(original, 5), fmt))
    assert corr(out, eight_bit) > 0.99


def test_16_bit_png_with_12_bit_data():
    original = digit(3)
    big12 = upscale(original, 5).astype(np.uint16) * 16  # 0..4080: white on black, dim
    out = preprocess_image(encode(Image.fromarray(big12), "PNG"))
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85


def test_32_bit_int_and_float_tiff():
    original = digit(5)
    big = 255 - upscale(original, 5)
    for arr in (big.astype(np.int32) * 1000, big.astype(np.float32) / 255.0):
        im = Image.fromarray(arr)
        assert im.mode in ("I", "F")
        out = preprocess_image(encode(im, "TIFF"))
        assert_mnist_like(out)
        assert best_corr(out, original) > 0.85


def _palette_seven(transparent_index: int | None) -> Image.Image:
    im = Image.new("P", (140, 140), 0)
    im.putpalette([255, 255, 255, 0, 0, 0] + [128, 128, 128] * 254)
    draw = ImageDraw.Draw(im)
    draw.line([(40, 30), (100, 30), (75, 75), (60, 115)], fill=1, width=9, joint="curve")
    draw.line([(58, 72), (93, 72)], fill=1, width=6)
    if transparent_index is not None:
        im.info["transparency"] = transparent_index
    return im


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency(fmt):
    im = _palette_seven(transparent_index=0)
    data = encode(im, fmt, transparency=0)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == "P" and "transparency" in decoded.info
    out = preprocess_image(data)
    assert_mnist_like(out)
    plain = preprocess_image(encode(_palette_seven(None), fmt))
    assert corr(out, plain) > 0.99
    assert best_corr(out, reference_seven()) > 0.95


def test_palette_transparent_black_background_black_ink():
    # Transparent index is black like the ink: the backdrop must still be white.
    im = Image.new("P", (140, 140), 0)
    im.putpalette([0, 0, 0, 0, 0, 0] + [0, 0, 0] * 254)
    ImageDraw.Draw(im).line([(40, 30), (100, 30), (60, 115)], fill=1, width=9)
    out = preprocess_image(encode(im, "PNG", transparency=0))
    assert_mnist_like(out)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "GIF"])
@pytest.mark.parametrize("invert", [False, True])
def test_one_bit_images(fmt, invert):
    original = digit(2)
    bits = upscale(original, 5) > 127
    if invert:
        bits = ~bits
    im = Image.fromarray(bits)
    assert im.mode == "1"
    out = preprocess_image(encode(im, fmt))
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85


def test_cmyk_jpeg():
    original = digit(6)
    rgb = Image.fromarray(255 - upscale(original, 5)).convert("RGB")
    data = encode(rgb.convert("CMYK"), "JPEG")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = preprocess_image(data)
    assert_mnist_like(out)
    assert best_corr(out, original) > 0.85


def test_multi_frame_gif_and_tiff_use_first_frame():
    first, second = digit(0), digit(1)  # "7" then "2"
    frames = [Image.fromarray(255 - upscale(d, 5)) for d in (first, second)]
    for fmt in ("GIF", "TIFF"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:])
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
        out = preprocess_image(data)
        assert best_corr(out, first) > 0.85
        assert best_corr(out, second) < 0.7


# --------------------------------------------------------------------------- #
# Blank, unreadable, too large
# --------------------------------------------------------------------------- #
BLANKS = {
    "white_png": lambda: encode(np.full((280, 280), 255, np.uint8), "PNG"),
    "black_png": lambda: encode(np.zeros((280, 280), np.uint8), "PNG"),
    "grey_jpeg": lambda: encode(np.full((200, 300), 128, np.uint8), "JPEG", quality=30),
    "white_rgb_webp": lambda: encode(Image.new("RGB", (64, 64), (255, 255, 255)), "WEBP"),
    "transparent_rgba": lambda: encode(Image.new("RGBA", (280, 280), (0, 0, 0, 0)), "PNG"),
    "transparent_with_hidden_pixels": lambda: encode(
        stroke_image(mode="RGBA", bg=(255, 255, 255, 0), ink=(0, 0, 0, 0)), "PNG"
    ),
    "one_pixel": lambda: encode(np.zeros((1, 1), np.uint8), "BMP"),
    "black_1bit_tiff": lambda: encode(Image.new("1", (50, 50), 0), "TIFF"),
}


@pytest.mark.parametrize("name", sorted(BLANKS))
def test_blank_images_are_422_blank(name):
    err = raises_image_error(BLANKS[name](), 422, "blank_image")
    assert "blank" in err.message.lower()


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_images_are_422(fmt):
    data = encode(255 - upscale(digit(0), 5), fmt)
    # Cuts inside the pixel data. (A PNG that only lost its IEND trailer still
    # holds every pixel; Pillow decodes it, and so do we.)
    for cut in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        raises_image_error(data[:cut], 422, "unreadable_image")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_header_only_and_garbage_after_magic_are_422():
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    for magic in (
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF89a",
        b"RIFF\x00\x10\x00\x00WEBP",
        b"II*\x00",
        b"MM\x00*",
    ):
        raises_image_error(magic, 422, "unreadable_image")
        if magic == b"GIF89a":
            # Random GIF descriptors claim gigapixel frames: that is (rightly) a
            # 413 before anything is decoded; either way an ImageError.
            with pytest.raises(ImageError) as info:
                preprocess_image(magic + noise)
            assert status_of(info.value) in (413, 422)
            continue
        raises_image_error(magic + noise, 422, "unreadable_image")
    raises_image_error(b"BM" + b"\x00" * 12 + struct.pack("<I", 40) + noise, 422, "unreadable_image")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_images_only_ever_raise_image_error(fmt):
    # Small deterministic fuzz: flipped bytes and cuts give a digit or an
    # ImageError (413/415/422), never another exception (that would be a 500).
    rng = np.random.default_rng(sum(map(ord, fmt)))
    base = encode(255 - upscale(digit(3), 3), fmt)
    for _ in range(80):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(1, len(data)))]
        try:
            out = preprocess_image(bytes(data))
        except ImageError as err:
            assert status_of(err) in (413, 415, 422)
        else:
            assert out.shape == (28, 28) and out.dtype == np.uint8


def test_corrupt_png_crc_is_422():
    data = bytearray(encode(upscale(digit(0), 5), "PNG"))
    data[40:60] = b"\x00" * 20  # inside IDAT
    raises_image_error(bytes(data), 422, "unreadable_image")


def test_png_bomb_rejected_fast():
    bomb = png_bomb(10_000, 10_000)
    assert len(bomb) < 100_000  # compact: 100 megapixels in a few tens of KB
    t0 = time.perf_counter()
    err = raises_image_error(bomb, 413, "image_too_large")
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, elapsed  # rejected from the header, nothing decoded
    assert "too large" in err.message


def test_pillow_bomb_guard_also_maps_to_413():
    # Even with a permissive max_pixels, Pillow's own warning (> ~89 MP) and
    # error (> ~179 MP) thresholds are treated as 413, never decoded.
    for w, h in ((10_000, 10_000), (20_000, 10_000)):
        t0 = time.perf_counter()
        raises_image_error(png_bomb(w, h), 413, "image_too_large", max_pixels=10**12)
        assert time.perf_counter() - t0 < 1.0


def test_gif_with_huge_logical_screen_is_413():
    data = bytearray(encode(np.zeros((10, 10), np.uint8), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen width/height
    raises_image_error(bytes(data), 413, "image_too_large")


def test_max_pixels_is_checked_from_header():
    data = encode(255 - upscale(digit(0), 5), "PNG")  # 140x140 = 19600 px
    raises_image_error(data, 413, "image_too_large", max_pixels=19_599)
    assert preprocess_image(data, max_pixels=19_600).shape == (28, 28)


def test_non_bytes_input_is_a_type_error():
    with pytest.raises(TypeError):
        preprocess_image("not bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# PNG storage and scaling
# --------------------------------------------------------------------------- #
def test_to_png_from_png_round_trip_is_exact():
    rng = np.random.default_rng(2)
    for img in (digit(0), np.zeros((28, 28), np.uint8), rng.integers(0, 256, (28, 28), dtype=np.uint8)):
        data = to_png(img)
        assert detect_type(data) == "png"
        im = Image.open(io.BytesIO(data))
        assert im.mode == "L" and im.size == (28, 28)
        back = from_png(data)
        assert back.dtype == np.uint8 and back.shape == (28, 28)
        np.testing.assert_array_equal(back, img)


def test_preprocessed_output_round_trips_through_png():
    out = preprocess_image(encode(255 - upscale(digit(9), 5), "JPEG"))
    np.testing.assert_array_equal(from_png(to_png(out)), out)


def test_to_png_rejects_wrong_shape_or_dtype():
    with pytest.raises(ValueError):
        to_png(np.zeros((28, 28), np.float32))
    with pytest.raises(ValueError):
        to_png(np.zeros((20, 20), np.uint8))
    assert from_png(to_png(np.zeros((28, 28, 1), np.uint8))).shape == (28, 28)


def test_from_png_rejects_other_images():
    with pytest.raises(ImageError) as info:
        from_png(encode(np.zeros((28, 28), np.uint8), "BMP"))
    assert isinstance(info.value, UnsupportedImage)
    with pytest.raises(ImageError) as info:
        from_png(encode(np.zeros((56, 56), np.uint8), "PNG"))
    assert isinstance(info.value, UnusableImage)
    with pytest.raises(ImageError) as info:
        from_png(to_png(digit(0))[:50])
    assert isinstance(info.value, UnusableImage)


def test_scale_unchanged():
    x = np.array([[0, 128, 255]], dtype=np.uint8)
    y = scale(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.0, 128 / 255, 1.0]])
    assert scale(preprocess_image(encode(digit(0), "PNG"))).max() == 1.0

