"""The one image preprocessing path: uploads -> MNIST-style 28x28 -> network input.

Used by the web app (validation + preprocessing of uploads), the worker, the
trainers' evaluation and the benchmarks, so there is exactly one definition of
"what the network sees":

* :func:`detect_type` - the image type from magic bytes only (never a filename
  or a Content-Type header); anything else is an :class:`ImageError` 415.
* :func:`preprocess_image` - bytes -> ``(28, 28) uint8``, white digit on black,
  prepared the way MNIST itself was: decoded safely (decompression-bomb guard
  before decoding), EXIF orientation applied, transparency flattened, polarity
  made white-on-black, background removed, contrast stretched, cropped to the
  ink, fitted into 20x20 keeping the aspect ratio, and pasted into 28x28 so
  that the centre of mass of the intensities is at (14, 14).
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
_CENTRE = 14.0

# Working resolution: larger images are box-reduced to at most this long side
# before the numeric steps (the digit ends up 20 px tall anyway).
_WORK_MAX_SIDE = 1024

# Below this contrast (fraction of the full intensity range) an image is blank.
_MIN_CONTRAST = 0.05


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
                    f = _WORK_MAX_SIDE / long_side
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


def _ink(gray: np.ndarray) -> np.ndarray:
    """Grayscale in [0, 1] -> ink map in [0, 1], white (1) digit on black (0)."""
    lo, hi = float(gray.min()), float(gray.max())
    if hi - lo < _MIN_CONTRAST:
        raise _blank("The image is blank: it has no visible digit (uniform colour).")

    # Polarity: the background is what the border (and the majority) shows.
    border = _border(gray)
    mid = 0.5 * (lo + hi)
    bg = float(np.median(border))
    if abs(bg - mid) < 0.15 * (hi - lo):  # border inconclusive: ask the majority
        border = gray.ravel()
        bg = float(np.median(border))
    if bg > mid:  # dark on light -> invert
        gray = np.float32(1.0) - gray
        border = np.float32(1.0) - border
        bg = 1.0 - bg

    # Background level and its noise; the ink must stand out of both.
    peak = float(gray.max())
    contrast = peak - bg
    sigma = 1.4826 * float(np.median(np.abs(border - np.float32(bg))))
    if contrast < _MIN_CONTRAST or contrast < 4.0 * sigma:
        raise _blank("The image is blank: no digit stands out from the background.")

    # Subtract the background plus a light noise floor, stretch to [0, 1].
    floor = bg + max(0.1 * contrast, 3.0 * sigma)
    ink = (gray - np.float32(floor)) * np.float32(1.0 / (peak - floor))
    np.clip(ink, 0.0, 1.0, out=ink)
    return ink


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
    """Uploaded image bytes -> ``(28, 28) uint8``, white digit on black, like raw MNIST.

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
    return _fit_and_centre(_ink(gray))


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
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
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
