"""MNIST loader: IDX files (gzip or raw) from a directory, optional download from mirrors.

Every file is verified by the SHA-256 of its *uncompressed* bytes, because gzip
files from different mirrors (or recompressed locally) differ byte for byte
while their contents do not.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["load_mnist", "MnistData", "MnistError", "FILES", "EXPECTED_SHA256", "decode_idx", "encode_idx",
           "read_idx", "write_idx"]

# Fixed order: also the order in which MnistData.sha256 combines the digests.
FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# SHA-256 of the uncompressed IDX files (see data/mnist/README.md).
EXPECTED_SHA256: Mapping[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# The largest real file is 47,040,016 bytes; the cap stops a wrong URL or a
# gzip bomb from eating memory/disk before the checksum could reject it.
_MAX_BYTES = 64 * 1024 * 1024
_CHUNK = 1 << 20
_IDX_UBYTE = 0x08


class MnistError(Exception):
    """MNIST files are missing, corrupt or could not be downloaded."""


@dataclass(frozen=True, eq=False)
class MnistData:
    """The MNIST train and test sets.

    Arrays are uint8 and read-only (so ``sha256`` keeps describing them; use
    ``.copy()`` or ``.astype()`` for a mutable version). ``sha256`` is the
    SHA-256 of the four files' lowercase hex digests concatenated in ``FILES``
    order; it identifies the dataset independently of compression.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    sha256: str


def load_mnist(
    directory: str | Path,
    mirrors: Sequence[str] = (),
    download: bool = True,
    progress: bool = True,
    timeout: float = 30.0,
    *,
    expected: Mapping[str, str] | None = None,
) -> MnistData:
    """Load MNIST from ``directory``, downloading missing ``<name>.gz`` files from ``mirrors``.

    For each file, raw ``<name>`` is used if present, else ``<name>.gz``.
    Existing files are never replaced: a corrupt one raises MnistError.
    ``expected`` overrides the per-file SHA-256 values (for tests).
    """
    directory = Path(directory)
    expected = dict(EXPECTED_SHA256 if expected is None else expected)
    if absent := [n for n in FILES if n not in expected]:
        raise ValueError(f"expected checksums missing for: {', '.join(absent)}")
    if isinstance(mirrors, str):  # a lone URL would otherwise be iterated per character
        mirrors = (mirrors,)

    arrays: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    missing: list[str] = []
    # Check what is there first, so a corrupt local file is reported without
    # spending time on downloads.
    for name in FILES:
        path = _existing_path(directory, name)
        if path is None:
            missing.append(name)
        else:
            arrays[name], digests[name] = _load_verified(path, name, expected[name])

    failures: list[str] = []
    if missing and download and mirrors:
        dead: set[str] = set()
        for name in list(missing):
            got = _download(directory, name, expected[name], mirrors, dead, failures,
                            progress=progress, timeout=timeout)
            if got is not None:
                arrays[name], digests[name] = got
                missing.remove(name)
    if missing:
        raise MnistError(_missing_message(directory, missing, download, mirrors, failures))

    for split in ("train", "t10k"):
        images = arrays[f"{split}-images-idx3-ubyte"]
        labels = arrays[f"{split}-labels-idx1-ubyte"]
        if len(images) != len(labels):
            raise MnistError(
                f"MNIST {split} files in {directory} do not match: "
                f"{len(images)} images but {len(labels)} labels"
            )

    combined = hashlib.sha256("".join(digests[n] for n in FILES).encode("ascii")).hexdigest()
    return MnistData(
        x_train=arrays["train-images-idx3-ubyte"],
        y_train=arrays["train-labels-idx1-ubyte"],
        x_test=arrays["t10k-images-idx3-ubyte"],
        y_test=arrays["t10k-labels-idx1-ubyte"],
        sha256=combined,
    )


def _existing_path(directory: Path, name: str) -> Path | None:
    # Raw first: it is what a user deliberately unpacked, and it loads faster.
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_uncompressed(path: Path, gzipped: bool) -> bytes | bytearray:
    try:
        if not gzipped:
            size = path.stat().st_size
            if size > _MAX_BYTES:
                raise MnistError(f"{path}: file is too large for MNIST ({size} bytes)")
            return path.read_bytes()
        buf = bytearray()
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                buf += chunk
                if len(buf) > _MAX_BYTES:
                    raise MnistError(f"{path}: uncompressed data is too large for MNIST "
                                     f"(over {_MAX_BYTES} bytes)")
        return buf
    except EOFError:
        raise MnistError(f"{path}: truncated gzip file (compressed stream ends early)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise MnistError(f"{path}: corrupt gzip file ({e})") from None
    except OSError as e:
        raise MnistError(f"{path}: cannot read file ({e})") from None


def _load_verified(
    path: Path, name: str, sha256: str, gzipped: bool | None = None
) -> tuple[np.ndarray, str]:
    """Parse and verify one IDX file; return the read-only array and its SHA-256.

    ``gzipped`` defaults to whether the name ends in ``.gz``.
    """
    if gzipped is None:
        gzipped = path.suffix == ".gz"
    data = _read_uncompressed(path, gzipped)
    ndim = 3 if "images" in name else 1
    array = decode_idx(data, ndim, str(path))
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256.lower():
        raise MnistError(f"{path}: SHA-256 mismatch of the uncompressed data: got {digest}, "
                         f"expected {sha256.lower()} (corrupt file or not the MNIST {name})")
    array.flags.writeable = False
    return array, digest


def decode_idx(data: bytes | bytearray, ndim: int, source: str = "IDX data") -> np.ndarray:
    """The uint8 array of an IDX file's bytes (``ndim`` dimensions: 3 for images, 1 for labels).

    A view of ``data``: no copy. ``source`` names the data in error messages.
    """
    if len(data) < 4:
        raise MnistError(f"{source}: truncated: {len(data)} bytes, too short for an IDX header")
    magic = bytes(data[:4])
    want = bytes((0, 0, _IDX_UBYTE, ndim))
    if magic != want:
        hint = " (this is gzip data: name the file '.gz')" if magic[:2] == b"\x1f\x8b" else ""
        raise MnistError(f"{source}: bad IDX magic number 0x{magic.hex()}, expected 0x{want.hex()} "
                         f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}){hint}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistError(f"{source}: truncated: {len(data)} bytes, IDX header needs {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    size = header + math.prod(dims)  # Python ints: a crafted header cannot overflow
    if len(data) < size:
        raise MnistError(f"{source}: truncated: header declares shape {dims} ({size} bytes), "
                         f"but the uncompressed data has {len(data)} bytes")
    if len(data) > size:
        raise MnistError(f"{source}: {len(data) - size} unexpected bytes after the data "
                         f"declared by the header (shape {dims})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes (unsigned bytes, big-endian dimensions) of a uint8 array: what ``decode_idx`` reads."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX files here hold unsigned bytes; got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"an IDX array needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes((0, 0, _IDX_UBYTE, array.ndim)) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    data = encode_idx(array)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """An IDX file (gzip or raw, by the name) as a read-only uint8 array; no checksum."""
    path = Path(path)
    array = decode_idx(_read_uncompressed(path, path.suffix == ".gz"), ndim, str(path))
    array.flags.writeable = False
    return array


def _download(
    directory: Path,
    name: str,
    sha256: str,
    mirrors: Sequence[str],
    dead: set[str],
    failures: list[str],
    *,
    progress: bool,
    timeout: float,
) -> tuple[np.ndarray, str] | None:
    """Fetch ``<name>.gz`` from the first mirror that serves a verified copy.

    Unreachable mirrors are added to ``dead`` and skipped for later files, so an
    offline machine fails after one attempt per mirror rather than four.
    """
    from tqdm import tqdm  # only needed when downloading

    target = directory / f"{name}.gz"
    for mirror in mirrors:
        if mirror in dead:
            continue
        url = f"{mirror.rstrip('/')}/{urllib.parse.quote(name)}.gz"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.gz.", suffix=".part")
        except OSError as e:
            raise MnistError(f"cannot write MNIST files to {directory} ({e}); put them there "
                             f"by hand or set MNIST_DIR to a writable directory") from None
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    written = 0
                    with tqdm(total=total, desc=target.name, unit="B", unit_scale=True,
                              unit_divisor=1024, disable=not progress, leave=False) as bar:
                        while chunk := resp.read(_CHUNK):
                            written += len(chunk)
                            if written > _MAX_BYTES:
                                raise MnistError(f"response is larger than {_MAX_BYTES} bytes")
                            out.write(chunk)
                            bar.update(len(chunk))
                    if total is not None and written != total:
                        raise MnistError(f"incomplete download: {written} of {total} bytes")
                out.flush()
                os.fsync(out.fileno())
            result = _load_verified(tmp, name, sha256, gzipped=True)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are public data
            os.replace(tmp, target)
            return result
        except urllib.error.HTTPError as e:
            failures.append(f"{url}: HTTP {e.code} {e.reason}")
        except MnistError as e:
            failures.append(f"{url}: {str(e).replace(str(tmp), 'downloaded file')}")
        except urllib.error.URLError as e:
            dead.add(mirror)
            failures.append(f"{url}: {e.reason}")
        except (OSError, ValueError) as e:  # timeouts, resets, malformed URLs
            dead.add(mirror)
            failures.append(f"{url}: {e}")
        finally:
            tmp.unlink(missing_ok=True)
    return None


def _missing_message(
    directory: Path,
    missing: list[str],
    download: bool,
    mirrors: Sequence[str],
    failures: list[str],
) -> str:
    where = f"{directory}" + ("" if directory.is_dir() else " (directory does not exist)")
    msg = (
        f"MNIST files missing from {where}: {', '.join(missing)}. "
        f"Put them in that directory, each as gzip ('<name>.gz') or raw IDX ('<name>'), "
        f"or set MNIST_DIR to a directory that has them."
    )
    if not download:
        msg += " Download is disabled."
    elif not mirrors:
        msg += " No download mirrors are configured."
    elif failures:
        msg += " Download failed: " + "; ".join(failures) + "."
    return msg
