"""The one image preprocessing path: uploads -> MNIST-style 28x28 -> network input.

Used by the web app (validation + preprocessing of uploads), the worker, the
trainers' evaluation and the benchmarks, so there is exactly one definition of
"what the network sees":

* :func:`detect_type` - the image type from magic bytes only (never a filename
  or a Content-Type header); anything else is an :class:`ImageError` 415.
* :func:`preprocess_image` - bytes -> ``(28, 28) uint8``, white digit on black,
  prepared the way MNIST itself was: decoded safely (decompression-bomb guard
  before decoding), EXIF orientation applied first, transparency flattened,
  polarity made dark-ink-on-light-paper, then the paper taken out the way a
  person reads a photo of a page:

  1. background: the paper's own brightness (uneven light, vignetting, soft
     shadows) is estimated with a wide grey closing on a coarse copy and the
     ink measured relative to it (``1 - pixel / paper``), so a shadow is not
     ink and faint ink in a shadow is not lost;
  2. threshold: ink must stand out of the paper's pixel noise and reach a
     fair part of the darkest ink's strength (a paper pattern stays paper);
  3. lines: long, thin, nearly straight structures crossing most of the
     picture (ruling, grids, margins, frames, sheet edges) are taken out of
     the ink; where a stroke crosses a line the ink is thicker than the
     line, so the digit's own straight strokes stay;
  4. the digit: the heaviest connected ink that is neither a frame around
     other ink nor a smooth shadow leftover, nor lying along the picture's
     edge, plus the pieces near it (a broken 5, a two-stroke 4); specks,
     dots and far marks are dropped;

  then contrast stretched, cropped to the ink, fitted into 20x20 keeping the
  aspect ratio, and pasted into 28x28 so that the centre of mass of the
  intensities is at (14, 14). ``blank_image`` only when no digit-like ink is left.
* :func:`preprocess_with_quality` - the same, plus how cleanly ink and paper
  separated (0..1; see :func:`_quality`).
* :func:`to_png` / :func:`from_png` - lossless storage of the 28x28 result.
* :func:`scale` - uint8 -> float32 in [0, 1], the networks' input.

Every failure caused by the uploaded bytes is an :class:`ImageError` (too
large, unsupported, unusable) with a short machine code and a human sentence; nothing else
escapes :func:`preprocess_image` for bad input.
"""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps

from core.errors import DomainError, TooLarge, Unprocessable, UnsupportedType

__all__ = [
    "ImageError",
    "ImageTooLarge",
    "UnsupportedImage",
    "UnusableImage",
    "SUPPORTED_TYPES",
    "MAX_PIXELS",
    "detect_type",
    "preprocess_image",
    "preprocess_with_quality",
    "to_png",
    "from_png",
    "scale",
]

#: Default upper bound on width * height, checked from the header before decoding.
MAX_PIXELS = 16_000_000

#: Detected type -> media type. The keys are what :func:`detect_type` returns.
SUPPORTED_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "webp": "image/webp",
    "tiff": "image/tiff",
}

# Detected type -> the Pillow plugin allowed to open it (no other plugin is tried).
_PIL_FORMATS = {
    "png": ("PNG",),
    "jpeg": ("JPEG",),
    "gif": ("GIF",),
    "bmp": ("BMP",),
    "webp": ("WEBP",),
    "tiff": ("TIFF",),
}

# BMP: "BM" is only two bytes (plain text can start with it), so the DIB header
# size at offset 14 must be one of the known header sizes as well.
_BMP_DIB_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}

# Output geometry, as MNIST: the digit fits a 20x20 box inside a 28x28 field.
_SIZE = 28
_BOX = 20

# Thinner strokes than this (px in the 20 px box) are widened to it.
_MIN_STROKE = 2.0
_CENTRE = 14.0

# Working resolution: larger images are box-reduced to at most this long side
# before the numeric steps (the digit ends up 20 px tall anyway).
_WORK_MAX_SIDE = 1024

# Below this contrast (fraction of the full intensity range) an image is blank.
_MIN_CONTRAST = 0.05

# Background estimate: a closing _BG_KERNEL of the picture wide (wider than any
# pen stroke, even a marker on a tight canvas) on a copy at most _BG_GRID px.
_BG_GRID = 96
_BG_KERNEL = 0.3

# Ink: at least this much darker than the paper (relative), and above its noise.
_MIN_INK = 0.04
_INK_OF_PEAK = 0.3

# Lines: cover at least _LINE_SPAN of the picture's width (height), tilted by
# at most _LINE_TILT (a slope); not looked for in pictures smaller than
# _LINE_MIN_SIDE (a 28x28 digit has no ruling).
_LINE_SPAN = 0.6
_LINE_TILT = 0.05
_LINE_MIN_SIDE = 64

# The digit: its main piece spans at least _MIN_DIGIT_FRACTION of the picture's
# long side (and _MIN_DIGIT_PX); other pieces join it when they carry at least
# _MIN_PIECE of its ink and lie within _NEAR of its size.
_MIN_DIGIT_FRACTION = 0.02
_MIN_DIGIT_PX = 4
_MIN_PIECE = 0.02

# A pen stroke's edge: the ink right outside the main piece must be lower than
# inside it by at least this share of the piece's own contrast.
_SHARPNESS = 0.5
_NEAR = 0.25


class ImageError(DomainError):
    """An uploaded image that cannot be used; the subclass says why."""


class ImageTooLarge(ImageError, TooLarge):
    default_code = "image_too_large"


class UnsupportedImage(ImageError, UnsupportedType):
    default_code = "unsupported_media_type"


class UnusableImage(ImageError, Unprocessable):
    """Unreadable (``unreadable_image``) or without a digit (``blank_image``)."""

    default_code = "unreadable_image"


def _too_large(message: str) -> ImageError:
    return ImageTooLarge(message)


def _unreadable(message: str) -> ImageError:
    return UnusableImage(message, "unreadable_image")


def _blank(message: str) -> ImageError:
    return UnusableImage(message, "blank_image")


def _as_bytes(data) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"image data must be bytes, not {type(data).__name__}")


# --------------------------------------------------------------------------- #
# Type detection
# --------------------------------------------------------------------------- #
def detect_type(data: bytes) -> str:
    """Return the image type (a key of :data:`SUPPORTED_TYPES`) from magic bytes.

    Only the content decides; a filename or Content-Type is never consulted.
    Empty data -> ImageError 422 ``unreadable_image``; anything that is not
    PNG, JPEG, GIF, BMP, WebP or TIFF (SVG, PDF, PostScript/EPS, HTML, text,
    ...) -> ImageError 415 ``unsupported_media_type``.
    """
    data = _as_bytes(data)
    if not data:
        raise _unreadable("The image is empty (0 bytes).")
    head = data[:32]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if (
        head.startswith(b"BM")
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_DIB_HEADER_SIZES
    ):
        return "bmp"
    allowed = ", ".join(k.upper() for k in SUPPORTED_TYPES)
    raise UnsupportedImage(
        f"Unsupported image type: the data is not one of {allowed} "
        "(vector formats such as SVG, PDF and EPS are not accepted).",
    )


# --------------------------------------------------------------------------- #
# Decoding
# --------------------------------------------------------------------------- #
def _decode(data: bytes, kind: str, max_pixels: int) -> Image.Image:
    """Open, bomb-check, decode the first frame and apply EXIF orientation."""
    # Note: catch_warnings is process-global state; under threads it can at
    # worst leave the "error" filter installed a little longer (harmless) or
    # miss it - the explicit size check below is what really guards us.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=_PIL_FORMATS[kind])
            width, height = im.size
            if width <= 0 or height <= 0:
                raise _unreadable("The image has no pixels.")
            if width * height > max_pixels:
                raise _too_large(
                    f"The image is too large: {width}x{height} pixels "
                    f"(at most {max_pixels:,} pixels are accepted)."
                )
            if kind == "jpeg":
                # Let libjpeg decode at a reduced scale (1/2..1/8) when the
                # picture is much larger than we will ever need.
                long_side = max(width, height)
                if long_side > 2 * _WORK_MAX_SIDE:
                    # (3/4 of the working size is plenty: the digit ends up 20 px tall)
                    f = 0.75 * _WORK_MAX_SIDE / long_side
                    im.draft(im.mode, (math.ceil(width * f), math.ceil(height * f)))
            im.seek(0)  # multi-frame GIF/TIFF/WebP/APNG: the first frame
            im.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(
                "The image is too large: its header declares more pixels than can be "
                "decoded safely (decompression bomb protection)."
            ) from exc
        except MemoryError as exc:
            raise _too_large("The image is too large to decode.") from exc
        except Exception as exc:  # OSError, SyntaxError, ValueError, EOFError, struct.error...
            raise _unreadable(
                f"The {kind.upper()} image could not be decoded (truncated or corrupt data)."
            ) from exc

    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception:  # malformed EXIF: keep the pixels as stored
        pass
    return im


def _nominal_unit(arr: np.ndarray) -> np.ndarray:
    """Map "I"/"F" data of unknown range onto [0, 1]."""
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0:
        for top in (1.0, 255.0, 65535.0):
            if hi <= top:
                return arr / np.float32(top)
    if hi > lo:
        return (arr - np.float32(lo)) / np.float32(hi - lo)
    return np.zeros_like(arr)


def _reduce_factor(size: tuple[int, int]) -> int:
    return max(1, math.ceil(max(size) / _WORK_MAX_SIDE))


def _backdrop(base: Image.Image, alpha: Image.Image) -> int:
    """The gray level (0 or 255) to flatten transparency onto.

    White, as a browser canvas needs (black strokes on a transparent
    background), unless the picture clearly asks for black:
    * mostly transparent (the opaque part is the drawing) and that drawing is
      light: white strokes on transparency;
    * mostly opaque (the opaque part holds the background) and dark.
    """
    step = max(1, int(math.sqrt(base.size[0] * base.size[1] / 250_000)))
    g = np.asarray(base)[::step, ::step]
    a = np.asarray(alpha)[::step, ::step]
    coverage = float(a.mean()) / 255.0
    opaque = g[a >= 128]
    if opaque.size == 0:
        opaque = g[a > 0]
    if opaque.size == 0:
        return 255
    if coverage < 0.5:
        # Light drawing: at least three quarters of its pixels are light
        # (antialiased dark strokes have far more dark pixels than that).
        return 0 if float(np.percentile(opaque, 25)) > 127.5 else 255
    return 255 if float(np.median(opaque)) >= 127.5 else 0


def _to_gray(im: Image.Image) -> np.ndarray:
    """Decoded image of any mode -> float32 grayscale in [0, 1] (either polarity).

    Transparency is flattened: the transparent background becomes the colour
    that contrasts with the opaque content (white behind dark strokes - the
    browser canvas case - black behind light strokes).
    """
    mode = im.mode
    alpha = None
    if mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or (
        "transparency" in im.info and mode in ("1", "L", "RGB", "RGBX")
    ):
        if mode == "LA":
            base, alpha = im.getchannel("L"), im.getchannel("A")
        else:
            rgba = im.convert("RGBA")
            base, alpha = rgba.convert("L"), rgba.getchannel("A")
        lo_a, hi_a = alpha.getextrema()
        if hi_a == 0:
            raise _blank("The image is blank: it is fully transparent.")
        if lo_a == 255:
            alpha = None
    elif mode in ("1", "L"):
        base = im.convert("L")
    elif mode.startswith("I;16") or mode in ("I", "F"):
        base = im.convert("F") if mode != "F" else im
    elif mode in ("LAB",):
        base = im.convert("RGB").convert("L")
    else:  # RGB, RGBX, CMYK, YCbCr, HSV, ...
        base = im.convert("L")

    if alpha is not None:
        base = Image.composite(base, Image.new("L", base.size, _backdrop(base, alpha)), alpha)

    k = _reduce_factor(base.size)
    if k > 1:
        base = base.reduce(k)

    arr = np.asarray(base, dtype=np.float32)
    if base.mode == "L":
        return arr / np.float32(255.0)
    if mode.startswith("I;16"):
        return arr / np.float32(65535.0)
    return _nominal_unit(arr)


# --------------------------------------------------------------------------- #
# MNIST-style normalisation
# --------------------------------------------------------------------------- #
def _border(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape
    b = max(1, min(h, w) // 20)
    if 2 * b >= min(h, w):
        return arr.ravel()
    return np.concatenate(
        [arr[:b].ravel(), arr[-b:].ravel(), arr[b:-b, :b].ravel(), arr[b:-b, -b:].ravel()]
    )


def _paper_light(gray: np.ndarray) -> np.ndarray:
    """Grayscale of either polarity -> the same picture with light paper and dark ink.

    The paper is what the border (and, when the border is inconclusive, the
    majority) shows.
    """
    lo, hi = float(gray.min()), float(gray.max())
    if hi - lo < _MIN_CONTRAST:
        raise _blank("The image is blank: it has no visible digit (uniform colour).")
    mid = 0.5 * (lo + hi)
    bg = float(np.median(_border(gray)))
    if abs(bg - mid) < 0.15 * (hi - lo):  # border inconclusive: ask the majority
        step = max(1, int(math.sqrt(gray.size / 100_000)))
        bg = float(np.median(gray[::step, ::step]))
    if bg < mid:  # light on dark -> invert
        return np.float32(1.0) - gray
    return gray


# --------------------------------------------------------------------------- #
# Background: the paper's own brightness, lighting and shadows included
# --------------------------------------------------------------------------- #
def _odd(n: float) -> int:
    n = max(3, int(round(n)))
    return n if n % 2 else n + 1


def _window(arr: np.ndarray, k: int, axis: int, reduce) -> np.ndarray:
    """Separable 1-D sliding max/min of width k along ``axis`` (the output is k - 1 shorter)."""
    return reduce(np.lib.stride_tricks.sliding_window_view(arr, k, axis=axis), axis=-1)


def _closing(arr: np.ndarray, k: int) -> np.ndarray:
    """Grey closing with a k x k square: removes dark structures narrower than k.

    The picture is first extended by point reflection, which continues a
    brightness ramp past the edge (plain edge padding would make the paper
    brighter than it is wherever the light falls off towards the edge); the
    extension is capped at the paper's brightest level so that ink near the
    edge does not reflect into overbright paper.
    """
    p = k - 1
    padded = np.pad(arr, p, mode="reflect", reflect_type="odd") if min(arr.shape) > p else np.pad(arr, p, mode="edge")
    np.minimum(padded, np.float32(np.percentile(arr, 99)), out=padded)
    for reduce in (np.max, np.min):
        padded = _window(_window(padded, k, 0, reduce), k, 1, reduce)
    return padded


def _background(paper: np.ndarray) -> np.ndarray:
    """The paper's brightness at every pixel, without the ink.

    Lighting and shadows vary slowly, pen strokes are narrow: a closing wider
    than any stroke (a fraction of the picture) on a coarse copy keeps the
    paper and drops the ink; ramps and soft shadow edges survive a closing.
    """
    h, w = paper.shape
    f = max(1, math.ceil(max(h, w) / _BG_GRID))
    coarse = Image.fromarray(paper, "F")
    if f > 1:
        coarse = coarse.reduce(f)
    small = np.asarray(coarse, dtype=np.float32)
    closed = _closing(small, _odd(_BG_KERNEL * max(small.shape)))
    if f == 1:
        return closed
    back = Image.fromarray(np.ascontiguousarray(closed), "F").resize((w, h), Image.Resampling.BILINEAR)
    return np.maximum(np.asarray(back, dtype=np.float32), paper)


def _ink_map(paper: np.ndarray) -> np.ndarray:
    """Light paper, dark ink -> ink map in [0, 1]: how much darker than its paper each pixel is.

    Relative darkness (1 - pixel / paper) is what the pen did, whatever the
    light: the same stroke in a shadow is as dark relative to the paper there.
    Very dark "paper" (a table beyond the sheet) is not allowed to amplify its noise.
    """
    back = _background(paper)
    floor = np.float32(0.4 * float(np.percentile(back[::4, ::4], 90)) + 1e-3)
    ink = (back - paper) / np.maximum(back, floor)
    np.clip(ink, 0.0, 1.0, out=ink)
    return ink


# --------------------------------------------------------------------------- #
# Run-length helpers (connected ink without scipy)
# --------------------------------------------------------------------------- #
def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True: (row, start, end exclusive), in row-major order."""
    m = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    m[:, 1:-1] = mask
    d = np.diff(m, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    return rows, starts, ends


def _paint(shape: tuple[int, int], rows, starts, ends) -> np.ndarray:
    """Runs -> boolean mask."""
    h, w = shape
    d = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(d, (rows, starts), 1)
    np.add.at(d, (rows, ends), -1)
    return np.cumsum(d, axis=1)[:, :w] > 0


def _run_length_at(mask: np.ndarray) -> np.ndarray:
    """For each pixel, the length of the horizontal run of True it belongs to (0 off the mask)."""
    rows, starts, ends = _runs(mask)
    h, w = mask.shape
    d = np.zeros((h, w + 1), dtype=np.int32)
    lengths = (ends - starts).astype(np.int32)
    np.add.at(d, (rows, starts), lengths)
    np.add.at(d, (rows, ends), -lengths)
    return np.cumsum(d, axis=1)[:, :w]


def _components(mask: np.ndarray):
    """8-connected components of a mask, as runs: (rows, starts, ends, label per run).

    Runs in neighbouring rows that touch are joined with a vectorised
    union-find (hook roots to the smaller root, then compress paths).
    """
    rows, starts, ends = _runs(mask)
    n = len(rows)
    if n == 0:
        return rows, starts, ends, np.zeros(0, dtype=np.int64)
    stride = mask.shape[1] + 2
    key_start = rows * stride + starts
    key_end = rows * stride + ends
    # runs of the previous row touching run j: end >= start_j and start <= end_j
    lo = np.searchsorted(key_end, (rows - 1) * stride + starts, side="left")
    hi = np.searchsorted(key_start, (rows - 1) * stride + ends, side="right")
    count = np.maximum(hi - lo, 0)
    b = np.repeat(np.arange(n), count)
    a = np.repeat(lo, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    parent = np.arange(n)
    while len(a):
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(pa, pb)[differ], np.minimum(pa, pb)[differ])
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return rows, starts, ends, parent


# --------------------------------------------------------------------------- #
# Lines: ruling, grids, margins, frames and sheet edges
# --------------------------------------------------------------------------- #
def _thick(mask: np.ndarray, axis: int, limit: int) -> np.ndarray:
    """Pixels of ``mask`` whose run along ``axis`` is longer than ``limit`` (opening by a line)."""
    k = limit + 1
    if mask.shape[axis] < k:
        return np.zeros_like(mask)

    def cut(a: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
        index = [slice(None), slice(None)]
        index[axis] = slice(lo, hi)
        return a[tuple(index)]

    def window_sums(m: np.ndarray) -> np.ndarray:
        c = np.cumsum(m, axis=axis, dtype=np.int16 if m.shape[axis] < 32_000 else np.int32)
        return np.concatenate([cut(c, k - 1, k), cut(c, k, None) - cut(c, 0, -k)], axis=axis)

    full = window_sums(mask) == k  # windows of k pixels all inked (their first pixel)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (k - 1, k - 1)
    return window_sums(np.pad(full, pad)) > 0  # every pixel covered by such a window


def _line_bins(hist: np.ndarray, least: float) -> np.ndarray:
    """Bins holding a line: at least ``least`` pixels, and standing out of the bins
    three away on both sides (a line is narrow; a noisy or shaded area is not)."""
    padded = np.pad(hist, 3)
    beside = np.maximum(padded[:-6], padded[6:])
    return (hist >= least) & (hist >= 2 * beside)


def _line_pixels(mask: np.ndarray, faint: np.ndarray, along: int) -> np.ndarray:
    """Pixels of ``mask`` on long, thin, nearly straight lines running along axis ``along``.

    ``faint`` (a superset of ``mask``: all ink above the noise) is where a
    line is whole and is counted; thickness is measured in ``mask``.

    A line is thin and crosses most of the picture (at least _LINE_SPAN of
    its length) at a slight tilt; a digit's own strokes are shorter than that,
    and where a stroke crosses a line the ink is thicker than the line there,
    so the crossing stays.
    """
    across = 1 - along
    length = mask.shape[along]
    thin = faint & ~_thick(mask, across, _line_thickness(mask.shape))
    coords = np.nonzero(thin)
    u, v = coords[across], coords[along]  # position across the line, position along it
    out = np.zeros_like(mask)
    if len(u) < _LINE_SPAN * length:
        return out
    # Count thin ink along slightly tilted lines; bins a few px wide, tilts
    # close enough that a straight line stays within one bin across the picture.
    # Counting uses every few pixels (a line has hundreds); only tilts that
    # hold a line are applied to all of them.
    bin_px = max(3, length // 150)
    step = bin_px / length
    every = max(1, len(u) // 5_000)
    u_f, v_f = u.astype(np.float32), v.astype(np.float32)
    u_s, v_s = u_f[::every], v_f[::every]
    found = np.zeros(len(u), dtype=bool)
    for tilt in np.arange(-_LINE_TILT, _LINE_TILT + step / 2, step, dtype=np.float32):
        base = float((u_s - v_s * tilt).min()) - 2 * bin_px
        for offset in (0, bin_px // 2):
            r = ((u_s - v_s * tilt - base + offset) // bin_px).astype(np.int32)
            full = _line_bins(np.bincount(r), _LINE_SPAN * length / every)
            if full.any():
                r_all = ((u_f - v_f * tilt - base + offset) // bin_px).astype(np.int32)
                inside = (r_all >= 0) & (r_all < len(full))
                found |= inside & full[np.clip(r_all, 0, len(full) - 1)]
    out[u[found] if across == 0 else v[found], v[found] if across == 0 else u[found]] = True
    return out & mask


def _line_thickness(shape: tuple[int, int]) -> int:
    return max(4, round(0.01 * max(shape)))


def _without_lines(mask: np.ndarray, faint: np.ndarray) -> np.ndarray:
    """The ink mask without ruling, grid, margin, frame and sheet-edge lines."""
    if min(mask.shape) < _LINE_MIN_SIDE:
        return mask
    return mask & ~(_line_pixels(mask, faint, along=1) | _line_pixels(mask, faint, along=0))


# --------------------------------------------------------------------------- #
# Thresholding and choosing the digit's connected ink
# --------------------------------------------------------------------------- #
def _noise(ink: np.ndarray) -> tuple[float, float]:
    """Paper level (median) and pixel noise of the ink map, on a sample.

    The noise comes from differences of neighbouring pixels (robust: MAD), so
    a paper pattern or a shadow, which change slowly, do not count as noise.
    """
    step = max(1, int(math.sqrt(ink.size / 50_000)))
    sample = ink[::step]
    med = float(np.median(sample[:, ::step]))
    diff = np.abs(sample[:, 1:] - sample[:, :-1])
    return med, 1.4826 * float(np.median(diff)) / math.sqrt(2.0)


def _texture(ink: np.ndarray, digit: np.ndarray, paper: float) -> float:
    """How much the paper away from the digit varies: noise, leftover shading, a pattern,
    specks, lines (as a standard deviation: the 90th percentile over 1.28)."""
    step = max(1, int(math.sqrt(ink.size / 50_000)))
    away = ~_dilate(_dilate(digit))[::step, ::step]
    rest = ink[::step, ::step][away]
    return float(np.percentile(rest, 90) - paper) / 1.2816 if rest.size else 0.0


class _Pieces:
    """Connected ink pieces with the statistics the choice needs."""

    def __init__(self, mask: np.ndarray, ink: np.ndarray):
        self.shape = mask.shape
        self.rows, self.starts, self.ends, labels = _components(mask)
        roots, self.label = np.unique(labels, return_inverse=True)
        n = len(roots)
        self.area = np.bincount(self.label, weights=self.ends - self.starts, minlength=n)
        csum = np.zeros((ink.shape[0], ink.shape[1] + 1), dtype=np.float64)
        np.cumsum(ink, axis=1, out=csum[:, 1:])
        run_mass = csum[self.rows, self.ends] - csum[self.rows, self.starts]
        self.mass = np.bincount(self.label, weights=run_mass, minlength=n)
        run_peak = np.zeros(len(self.rows))
        self.r0 = np.full(n, 1 << 30)
        self.r1 = np.full(n, -1)
        self.c0 = np.full(n, 1 << 30)
        self.c1 = np.full(n, -1)
        np.minimum.at(self.r0, self.label, self.rows)
        np.maximum.at(self.r1, self.label, self.rows)
        np.minimum.at(self.c0, self.label, self.starts)
        np.maximum.at(self.c1, self.label, self.ends - 1)
        del run_peak

    def __len__(self) -> int:
        return len(self.area)

    def extent(self) -> np.ndarray:
        return np.maximum(self.r1 - self.r0, self.c1 - self.c0) + 1

    def cut_by_border(self) -> np.ndarray:
        """Pieces lying along the picture's edge (not merely touching it with a stub)."""
        h, w = self.shape
        on_edge = np.where((self.rows == 0) | (self.rows == h - 1), self.ends - self.starts, 0)
        on_edge = on_edge + (self.starts == 0) + (self.ends == w)
        contact = np.bincount(self.label, weights=on_edge, minlength=len(self))
        return contact >= max(_MIN_DIGIT_PX, 0.05 * min(h, w))

    def gap(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """Chebyshev distance between each piece's box and ``box`` (0 when they overlap)."""
        r0, r1, c0, c1 = box
        dy = np.maximum(np.maximum(r0 - self.r1, self.r0 - r1), 0)
        dx = np.maximum(np.maximum(c0 - self.c1, self.c0 - c1), 0)
        return np.maximum(dy, dx)

    def box(self, i: int) -> tuple[int, int, int, int]:
        return int(self.r0[i]), int(self.r1[i]), int(self.c0[i]), int(self.c1[i])

    def mask(self, chosen: np.ndarray) -> np.ndarray:
        keep = chosen[self.label]
        return _paint(self.shape, self.rows[keep], self.starts[keep], self.ends[keep])


def _is_frame(p: _Pieces, i: int) -> bool:
    """A drawn frame or box around the digit: hollow, with sizeable ink inside it."""
    r0, r1, c0, c1 = p.box(i)
    mh, mw = (r1 - r0) // 6, (c1 - c0) // 6
    inner = (p.r0 > r0 + mh) & (p.r1 < r1 - mh) & (p.c0 > c0 + mw) & (p.c1 < c1 - mw)
    inside = inner & (p.mass >= 0.1 * p.mass[i])
    if not inside.any():
        return False
    fill = p.area[i] / float((r1 - r0 + 1) * (c1 - c0 + 1))
    return fill < 0.2


def _is_soft(p: _Pieces, i: int, ink: np.ndarray, paper: float) -> bool:
    """A smooth darkening (the leftover of a shadow or vignette), not a pen stroke.

    A stroke's ink drops to the paper right outside it; a shadow's leftover
    fades out, so the ring just outside it is nearly as dark as it is inside.
    """
    r0, r1, c0, c1 = p.box(i)
    h, w = p.shape
    t, l = max(0, r0 - 3), max(0, c0 - 3)
    b, r = min(h, r1 + 4), min(w, c1 + 4)
    own = p.label == i
    piece = _paint((b - t, r - l), p.rows[own] - t, p.starts[own] - l, p.ends[own] - l)
    ring = _dilate(_dilate(piece)) & ~piece
    crop = ink[t:b, l:r]
    inside = float(crop[piece].mean())
    outside = float(crop[ring].mean()) if ring.any() else paper
    return inside - outside < _SHARPNESS * (inside - paper)


def _choose_digit(p: _Pieces, ink: np.ndarray, paper: float) -> np.ndarray:
    """Which pieces form the digit: the main piece plus the pieces close to it."""
    n = len(p)
    long_side = max(p.shape)
    big_enough = p.extent() >= max(_MIN_DIGIT_PX, _MIN_DIGIT_FRACTION * long_side)
    candidates = big_enough.copy()
    # A digit is rarely cut by the picture's edge; shadows, tables and sheet
    # edges are. Prefer pieces inside the picture when there are any.
    inside = candidates & ~p.cut_by_border()
    if inside.any():
        candidates = inside
    order = np.argsort(-np.where(candidates, p.mass, -1.0))
    main = -1
    for i in order:
        if not candidates[i]:
            break
        if not _is_frame(p, int(i)) and not _is_soft(p, int(i), ink, paper):
            main = int(i)
            break
    chosen = np.zeros(n, dtype=bool)
    if main < 0:
        return chosen
    chosen[main] = True
    r0, r1, c0, c1 = p.box(main)
    # Pieces of the same digit (a broken 5, a two-stroke 4) lie within a
    # fraction of the digit's size; specks and far marks do not.
    worth = (p.mass >= _MIN_PIECE * p.mass[main]) & ~chosen
    while True:
        size = max(r1 - r0, c1 - c0) + 1
        near = worth & ~chosen & (p.gap((r0, r1, c0, c1)) <= _NEAR * size)
        # ... and neither outweigh it nor surround it, as a frame or a sheet edge does.
        encloses = (p.r0 <= r0) & (p.r1 >= r1) & (p.c0 <= c0) & (p.c1 >= c1)
        near &= (p.mass <= p.mass[main]) & (p.extent() <= 2 * size) & ~encloses
        if not near.any():
            return chosen
        chosen |= near
        r0, r1 = min(r0, int(p.r0[near].min())), max(r1, int(p.r1[near].max()))
        c0, c1 = min(c0, int(p.c0[near].min())), max(c1, int(p.c1[near].max()))


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def _digit_ink(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """Grayscale in [0, 1] -> (ink of the digit only, white on black in [0, 1], quality).

    Paper and lighting out (background estimate), ink thresholded against the
    paper's noise, lines removed, the digit's connected ink chosen, contrast
    stretched. Raises blank_image when no digit-like ink is left.
    """
    ink = _ink_map(_paper_light(gray))
    paper, sigma = _noise(ink)
    # Ink stands out of the paper's noise, and - so that a paper pattern or
    # faint ruling does not join the strokes - reaches a fair part of the
    # darkest ink's strength (the darkest per mille: a few specks do not count).
    peak = float(np.percentile(ink[::2, ::2], 99.9)) if ink.size > 4096 else float(ink.max())
    noise_floor = paper + max(4.0 * sigma, _MIN_INK)
    low = max(noise_floor, paper + _INK_OF_PEAK * (peak - paper))
    # Lines are looked for in all the ink above the noise, where they are whole.
    mask = _without_lines(ink > low, ink > noise_floor)
    if not mask.any():
        raise _blank("The image is blank: no digit stands out from the paper.")
    pieces = _Pieces(mask, ink)
    chosen = _choose_digit(pieces, ink, paper)
    if not chosen.any():
        raise _blank("The image is blank: only specks or lines, no digit.")
    digit = pieces.mask(chosen)
    level = float(np.percentile(ink[digit], 90))
    if level - paper < max(_MIN_CONTRAST, 5.0 * sigma):
        raise _blank("The image is blank: no digit stands out from the paper.")
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    r0, r1 = max(0, rows[0] - 1), rows[-1] + 2
    c0, c1 = max(0, cols[0] - 1), cols[-1] + 2
    region = _dilate(digit[r0:r1, c0:c1])  # the strokes' soft edges belong to them
    floor = paper + 0.5 * (low - paper)
    out = np.where(region, (ink[r0:r1, c0:c1] - np.float32(floor)) * np.float32(1.0 / (level - floor)),
                   np.float32(0.0))
    np.clip(out, 0.0, 1.0, out=out)
    out = _thicken(out, _stroke_width(digit[r0:r1, c0:c1]))
    spread = max(sigma, _texture(ink, digit, paper))
    return out.astype(np.float32), _quality(level - paper, spread, pieces, chosen)


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in px: twice the area over the outline (a stroke has two edges)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    outline = int(mask.sum()) - int(inner.sum())
    return 2.0 * float(mask.sum()) / max(outline, 1)


def _thicken(crop: np.ndarray, width: float) -> np.ndarray:
    """A fine pen's strokes widened to MNIST's (about 2 px in the 20 px box).

    A 1 px line on a large picture would shrink to a faint hair in 20x20;
    MNIST digits were written with a thicker pen. The crop is reduced to four
    times the box (strokes then stay visible), stretched, and grey-dilated by
    what is missing.
    """
    scale = _BOX / max(crop.shape)
    if width * scale >= _MIN_STROKE:
        return crop
    f = 4 * _BOX / max(crop.shape)
    if f < 1.0:
        size = (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f)))
        crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop), "F").resize(size, Image.Resampling.BOX))
        seen = crop[crop > 0.02]
        if seen.size:
            crop = np.clip(crop / np.float32(np.percentile(seen, 90)), 0.0, 1.0)
        width *= f
        scale = _BOX / max(crop.shape)
    k = _odd((_MIN_STROKE / scale - width))
    pad = k // 2
    grown = np.pad(crop, pad)
    return _window(_window(grown, k, 0, np.max), k, 1, np.max).astype(np.float32) if k > 1 else crop


def _quality(contrast: float, spread: float, pieces: _Pieces, chosen: np.ndarray) -> float:
    """How cleanly ink and paper separated, 0..1: the product of

    * separation: the digit's contrast over the paper's noise and texture
      (shading left over, a pattern): 0 at 4x, 1 from 24x;
    * share: the part of all thresholded ink (lines removed) that the digit holds
      - specks, marks and frames left behind lower it.
    """
    separation = min(1.0, max(0.0, (contrast / max(spread, 1e-3) - 4.0) / 20.0))
    share = float(pieces.mass[chosen].sum() / max(pieces.mass.sum(), 1e-9))
    return round(separation * share, 3)


def _bbox(ink: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (r0, r1, c0, c1 inclusive) of the ink.

    Starts from the clearly inked pixels and grows over the faint fringe that
    touches it, so isolated faint specks do not stretch the box.
    """
    core = ink >= 0.5
    rows = np.flatnonzero(core.any(axis=1))
    cols = np.flatnonzero(core.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    some = ink > 0.0
    h, w = ink.shape
    for _ in range(8):
        before = (r0, r1, c0, c1)
        while r0 > 0 and some[r0 - 1, c0 : c1 + 1].any():
            r0 -= 1
        while r1 < h - 1 and some[r1 + 1, c0 : c1 + 1].any():
            r1 += 1
        while c0 > 0 and some[r0 : r1 + 1, c0 - 1].any():
            c0 -= 1
        while c1 < w - 1 and some[r0 : r1 + 1, c1 + 1].any():
            c1 += 1
        if (r0, r1, c0, c1) == before:
            break
    return r0, r1, c0, c1


def _fit_and_centre(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, fit into 20x20 (aspect kept), centre of mass at (14, 14)."""
    r0, r1, c0, c1 = _bbox(ink)
    crop = ink[r0 : r1 + 1, c0 : c1 + 1]
    h, w = crop.shape
    f = _BOX / max(h, w)
    nh = min(_BOX, max(1, round(h * f)))
    nw = min(_BOX, max(1, round(w * f)))
    small = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32)).resize(
        (nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0
    )
    digit = np.asarray(small, dtype=np.float32).clip(0.0, 1.0)
    top = float(digit.max())
    if top <= 0.0:
        raise _blank("The image is blank: the digit is too faint to be seen.")
    digit = digit * np.float32(1.0 / top)  # MNIST digits reach full intensity

    total = float(digit.sum())
    cy = float(digit.sum(axis=1) @ np.arange(nh, dtype=np.float32)) / total
    cx = float(digit.sum(axis=0) @ np.arange(nw, dtype=np.float32)) / total
    oy = min(max(int(round(_CENTRE - cy)), 0), _SIZE - nh)
    ox = min(max(int(round(_CENTRE - cx)), 0), _SIZE - nw)

    out = np.zeros((_SIZE, _SIZE), dtype=np.uint8)
    out[oy : oy + nh, ox : ox + nw] = np.rint(digit * np.float32(255.0)).astype(np.uint8)
    return out


def preprocess_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Uploaded image bytes -> ``(28, 28) uint8`` (see :func:`preprocess_with_quality`)."""
    return preprocess_with_quality(data, max_pixels)[0]


def preprocess_with_quality(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, float]:
    """Uploaded image bytes -> ``((28, 28) uint8, quality)``: white digit on black, like raw MNIST.

    ``quality`` (0..1) is the preprocessing's own confidence that it separated
    the digit's ink from the paper cleanly: 1.0 for a clean canvas or scan,
    lower when the digit barely stands out of the paper's noise, shading or
    pattern, or when other ink (specks, marks, frames) was left beside it.
    It says nothing about which digit it is.

    Raises :class:`ImageError`: 415 for an unsupported type, 413 when the image
    has more than ``max_pixels`` pixels (checked from the header before any
    decoding) or trips Pillow's decompression-bomb guard, 422 when the data is
    empty, truncated or corrupt (``unreadable_image``) or shows no digit
    (``blank_image``).
    """
    data = _as_bytes(data)
    kind = detect_type(data)
    im = _decode(data, kind, max_pixels)
    try:
        gray = _to_gray(im)
    except ImageError:
        raise
    except Exception as exc:  # exotic modes Pillow cannot convert
        raise _unreadable(
            f"The {kind.upper()} image uses a colour mode ({im.mode}) that cannot be read."
        ) from exc
    if gray.shape == (_SIZE, _SIZE):
        ready = _already_mnist(gray)
        if ready is not None:
            return ready, 1.0
    digit, quality = _digit_ink(gray)
    return _fit_and_centre(digit), quality


def _already_mnist(gray: np.ndarray) -> np.ndarray | None:
    """A 28x28 picture already in MNIST's form -> the same digit as ``(28, 28) uint8``, or None.

    MNIST's form is what the general path produces: flat paper (the outer ring
    one exact level), the ink's box 20 px on its long side, its centre of mass
    at the centre. Such a picture (a digit from MNIST itself, or a client that
    normalised its own) is taken as it is, light on dark with the darkest ink at
    full strength, instead of being resampled into its own shape again.
    """
    ring = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    paper = float(ring[0])
    if paper not in (0.0, 1.0) or not (ring == paper).all():
        return None
    ink = gray if paper == 0.0 else np.float32(1.0) - gray
    top = float(ink.max())
    if top < _MIN_CONTRAST:
        return None
    some = ink > 0
    rows, cols = np.flatnonzero(some.any(axis=1)), np.flatnonzero(some.any(axis=0))
    if max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 != _BOX:
        return None
    total = float(ink.sum())
    axis = np.arange(_SIZE, dtype=np.float32)
    cy, cx = float(ink.sum(axis=1) @ axis) / total, float(ink.sum(axis=0) @ axis) / total
    if round(_CENTRE - cy) != 0 or round(_CENTRE - cx) != 0:
        return None
    return np.rint(ink * np.float32(255.0 / top)).astype(np.uint8)


# --------------------------------------------------------------------------- #
# Storage of the 28x28 result
# --------------------------------------------------------------------------- #
def to_png(image: np.ndarray) -> bytes:
    """``(28, 28) uint8`` -> lossless 8-bit grayscale PNG bytes."""
    arr = np.asarray(image)
    if arr.shape == (_SIZE, _SIZE, 1):
        arr = arr[:, :, 0]
    if arr.shape != (_SIZE, _SIZE) or arr.dtype != np.uint8:
        raise ValueError(
            f"expected a (28, 28) uint8 array, got shape {arr.shape} dtype {arr.dtype}"
        )
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)  # 28x28: speed over bytes
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """Inverse of :func:`to_png`: PNG bytes -> ``(28, 28) uint8``."""
    data = _as_bytes(data)
    if detect_type(data) != "png":
        raise UnsupportedImage("Expected a PNG image.")
    try:
        im = _decode(data, "png", _SIZE * _SIZE)
    except ImageTooLarge as exc:
        raise _unreadable("Expected a 28x28 image; this one is larger.") from exc
    if im.size != (_SIZE, _SIZE):
        raise _unreadable(f"Expected a 28x28 image, got {im.size[0]}x{im.size[1]}.")
    if im.mode != "L":
        im = im.convert("L")
    return np.array(im, dtype=np.uint8)


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 images (white digit on black, 0..255) -> float32 in [0, 1], the networks' input."""
    return np.asarray(images, dtype=np.float32) / np.float32(255.0)
