"""Tests for trainers.mnist: real data (gzip, raw, mixed), corruption, download."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from trainers.mnist import EXPECTED_SHA256, FILES, MnistData, MnistError, load_mnist

REAL_DIR = Path(os.environ.get("MNIST_DIR", "/work/shared/data/mnist"))
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
UNREACHABLE = "http://127.0.0.1:9/"  # discard port: nothing listens, refused at once
# sha256 over the four hex digests in FILES order (the documented MnistData.sha256).
DATASET_SHA256 = hashlib.sha256("".join(EXPECTED_SHA256[n] for n in FILES).encode()).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment would swallow the 127.0.0.1 requests.
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def real_gz_dir() -> Path:
    missing = [n for n in FILES if not (REAL_DIR / f"{n}.gz").is_file()]
    assert not missing, f"real MNIST gzip files {missing} not found in {REAL_DIR} (set MNIST_DIR)"
    return REAL_DIR


@pytest.fixture(scope="module")
def raw_bytes(real_gz_dir: Path) -> dict[str, bytes]:
    return {n: gzip.decompress((real_gz_dir / f"{n}.gz").read_bytes()) for n in FILES}


@pytest.fixture(scope="module")
def real_data(real_gz_dir: Path) -> MnistData:
    return load_mnist(real_gz_dir, download=False, progress=False)


def assert_same(a: MnistData, b: MnistData) -> None:
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.sha256 == b.sha256


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, np.ndarray]]:
    """A small crafted raw IDX dataset in tmp_path/tiny with its checksums."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 6, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3, dtype=np.uint8),
    }
    directory = tmp_path / "tiny"
    directory.mkdir()
    sums = {}
    for name, array in arrays.items():
        data = idx_bytes(array)
        (directory / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    return directory, sums, arrays


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    """serve(directory) -> base URL of a local HTTP server for that directory."""
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# --- real data ---------------------------------------------------------------

def test_real_gzip_files_load(real_data: MnistData) -> None:
    d = real_data
    assert d.x_train.shape == (60000, 28, 28) and d.x_train.dtype == np.uint8
    assert d.y_train.shape == (60000,) and d.y_train.dtype == np.uint8
    assert d.x_test.shape == (10000, 28, 28) and d.x_test.dtype == np.uint8
    assert d.y_test.shape == (10000,) and d.y_test.dtype == np.uint8
    assert np.bincount(d.y_train, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(d.y_test, minlength=10).tolist() == TEST_COUNTS
    assert d.x_train.mean() == pytest.approx(33.318, abs=1e-3)
    assert d.sha256 == DATASET_SHA256
    assert not d.x_train.flags.writeable  # frozen: the checksum keeps describing the data


def test_real_load_is_fast(real_gz_dir: Path) -> None:
    start = time.perf_counter()
    load_mnist(real_gz_dir, download=False, progress=False)
    assert time.perf_counter() - start < 5


def test_raw_files_load_identically(tmp_path: Path, raw_bytes: dict[str, bytes],
                                    real_data: MnistData) -> None:
    for name, data in raw_bytes.items():
        (tmp_path / name).write_bytes(data)
    assert_same(load_mnist(tmp_path, download=False, progress=False), real_data)


def test_mixed_directory_loads_identically(tmp_path: Path, real_gz_dir: Path,
                                           raw_bytes: dict[str, bytes],
                                           real_data: MnistData) -> None:
    for i, name in enumerate(FILES):
        if i % 2:
            shutil.copy(real_gz_dir / f"{name}.gz", tmp_path)
        else:
            (tmp_path / name).write_bytes(raw_bytes[name])
    assert_same(load_mnist(tmp_path, download=False, progress=False), real_data)


def test_raw_preferred_when_both_exist(tmp_path: Path, real_gz_dir: Path,
                                       raw_bytes: dict[str, bytes]) -> None:
    name = "t10k-labels-idx1-ubyte"
    (tmp_path / name).write_bytes(b"not idx")
    shutil.copy(real_gz_dir / f"{name}.gz", tmp_path)
    with pytest.raises(MnistError, match="bad IDX magic") as err:
        load_mnist(tmp_path, download=False)
    assert str(tmp_path / name) in str(err.value)


# --- corruption --------------------------------------------------------------

@pytest.mark.parametrize("name", FILES)
def test_checksum_mismatch_names_file(tmp_path: Path, raw_bytes: dict[str, bytes],
                                      name: str) -> None:
    data = bytearray(raw_bytes[name])
    data[len(data) // 2] ^= 0x01
    (tmp_path / name).write_bytes(data)
    with pytest.raises(MnistError, match="SHA-256 mismatch") as err:
        load_mnist(tmp_path, download=True, mirrors=[UNREACHABLE])
    assert str(tmp_path / name) in str(err.value)


def test_truncated_gzip_names_file(tmp_path: Path, real_gz_dir: Path) -> None:
    name = "t10k-images-idx3-ubyte"
    gz = (real_gz_dir / f"{name}.gz").read_bytes()
    (tmp_path / f"{name}.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(MnistError, match="truncated gzip") as err:
        load_mnist(tmp_path, download=False)
    assert str(tmp_path / f"{name}.gz") in str(err.value)


def test_truncated_raw_names_file(tmp_path: Path, raw_bytes: dict[str, bytes]) -> None:
    name = "train-labels-idx1-ubyte"
    (tmp_path / name).write_bytes(raw_bytes[name][:-100])
    with pytest.raises(MnistError, match="truncated") as err:
        load_mnist(tmp_path, download=False)
    assert str(tmp_path / name) in str(err.value)


@pytest.mark.parametrize("data", [b"", b"\x00\x00", b"\x00\x00\x08\x03\x00\x00"])
def test_short_header_is_truncated(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(data)
    with pytest.raises(MnistError, match="truncated"):
        load_mnist(tmp_path, download=False)


def test_corrupt_gzip_names_file(tmp_path: Path) -> None:
    name = "train-labels-idx1-ubyte"
    (tmp_path / f"{name}.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(MnistError, match="corrupt gzip") as err:
        load_mnist(tmp_path, download=False)
    assert f"{name}.gz" in str(err.value)


def test_gzip_data_under_raw_name_gets_a_hint(tmp_path: Path, real_gz_dir: Path) -> None:
    name = "t10k-labels-idx1-ubyte"
    shutil.copy(real_gz_dir / f"{name}.gz", tmp_path / name)
    with pytest.raises(MnistError, match="this is gzip data"):
        load_mnist(tmp_path, download=False)


def test_bad_magic_names_file(tiny) -> None:
    directory, sums, _ = tiny
    name = "t10k-images-idx3-ubyte"
    data = bytearray((directory / name).read_bytes())
    data[3] = 0x01  # claims one dimension
    (directory / name).write_bytes(data)
    sums[name] = hashlib.sha256(data).hexdigest()  # only the magic is wrong
    with pytest.raises(MnistError, match="bad IDX magic number 0x00000801") as err:
        load_mnist(directory, download=False, expected=sums)
    assert str(directory / name) in str(err.value)


def test_huge_declared_dims_are_truncated_not_overflowed(tmp_path: Path) -> None:
    # 2**32-1 cubed overflows 64 bits; the loader must still call it truncated.
    header = struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2**32 - 1, 2**32 - 1, 2**32 - 1)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + bytes(100))
    with pytest.raises(MnistError, match="truncated"):
        load_mnist(tmp_path, download=False)


def test_trailing_bytes_rejected(tiny) -> None:
    directory, sums, _ = tiny
    name = "train-labels-idx1-ubyte"
    with open(directory / name, "ab") as f:
        f.write(b"\x00")
    with pytest.raises(MnistError, match="unexpected bytes") as err:
        load_mnist(directory, download=False, expected=sums)
    assert name in str(err.value)


# --- crafted files with the `expected` override ------------------------------

def test_expected_override_loads_crafted_files(tiny) -> None:
    directory, sums, arrays = tiny
    data = load_mnist(directory, download=False, expected=sums)
    np.testing.assert_array_equal(data.x_train, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert data.sha256 == hashlib.sha256("".join(sums[n] for n in FILES).encode()).hexdigest()
    # The real checksums reject the crafted files.
    with pytest.raises(MnistError, match="SHA-256 mismatch"):
        load_mnist(directory, download=False)


def test_image_label_count_mismatch(tiny) -> None:
    directory, sums, _ = tiny
    name = "t10k-labels-idx1-ubyte"
    data = idx_bytes(np.zeros(4, np.uint8))
    (directory / name).write_bytes(data)
    sums[name] = hashlib.sha256(data).hexdigest()
    with pytest.raises(MnistError, match="3 images but 4 labels"):
        load_mnist(directory, download=False, expected=sums)


def test_expected_must_cover_all_files(tiny) -> None:
    directory, sums, _ = tiny
    del sums["t10k-labels-idx1-ubyte"]
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        load_mnist(directory, download=False, expected=sums)


# --- missing files / offline -------------------------------------------------

def test_missing_offline_fails_quickly_with_clear_message(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(MnistError) as err:
        load_mnist(tmp_path, mirrors=[UNREACHABLE, UNREACHABLE.rstrip("/")], timeout=5)
    assert time.perf_counter() - start < 3
    msg = str(err.value)
    for name in FILES:
        assert name in msg
    assert str(tmp_path) in msg and "MNIST_DIR" in msg
    assert "gzip" in msg and "raw" in msg
    assert "127.0.0.1:9" in msg and "Download failed" in msg
    assert list(tmp_path.iterdir()) == []  # no temp files left behind


def test_missing_with_download_disabled(tmp_path: Path, real_gz_dir: Path) -> None:
    shutil.copy(real_gz_dir / "train-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(MnistError, match="Download is disabled") as err:
        load_mnist(tmp_path, mirrors=[UNREACHABLE], download=False)
    msg = str(err.value)
    assert "train-labels-idx1-ubyte" not in msg  # present, so not listed
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in msg
    assert str(tmp_path) in msg and "MNIST_DIR" in msg


def test_missing_directory_without_mirrors(tmp_path: Path) -> None:
    directory = tmp_path / "nope"
    with pytest.raises(MnistError, match="does not exist") as err:
        load_mnist(directory)
    assert "No download mirrors" in str(err.value)
    assert not directory.exists()


# --- downloading -------------------------------------------------------------

@pytest.fixture(scope="module")
def mirror_dir(tmp_path_factory: pytest.TempPathFactory, real_gz_dir: Path) -> Path:
    directory = tmp_path_factory.mktemp("mirror")
    for name in FILES:
        shutil.copy(real_gz_dir / f"{name}.gz", directory)
    return directory


def test_download_from_mirror(tmp_path: Path, mirror_dir: Path, serve,
                              real_data: MnistData, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "data" / "mnist"  # created on demand
    url = serve(mirror_dir)
    data = load_mnist(target, mirrors=[UNREACHABLE, url], progress=True, timeout=5)
    assert_same(data, real_data)
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n in FILES)
    for name in FILES:
        assert (target / f"{name}.gz").read_bytes() == (mirror_dir / f"{name}.gz").read_bytes()
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err  # tqdm bar
    # Second call uses the downloaded files, no network needed.
    assert_same(load_mnist(target, download=False), real_data)


def test_download_only_missing_files(tmp_path: Path, mirror_dir: Path, serve,
                                     raw_bytes: dict[str, bytes]) -> None:
    for name in FILES[:3]:
        (tmp_path / name).write_bytes(raw_bytes[name])
    data = load_mnist(tmp_path, mirrors=[serve(mirror_dir)], progress=False)
    assert data.sha256 == DATASET_SHA256
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*FILES[:3], f"{FILES[3]}.gz"])


@pytest.fixture(scope="module")
def bad_mirror_dir(tmp_path_factory: pytest.TempPathFactory, mirror_dir: Path,
                   raw_bytes: dict[str, bytes]) -> Path:
    """Like mirror_dir, but t10k-labels has one flipped byte (valid gzip, wrong data)."""
    directory = tmp_path_factory.mktemp("bad_mirror")
    for name in FILES:
        shutil.copy(mirror_dir / f"{name}.gz", directory)
    name = "t10k-labels-idx1-ubyte"
    data = bytearray(raw_bytes[name])
    data[-1] = (data[-1] + 1) % 10
    (directory / f"{name}.gz").write_bytes(gzip.compress(bytes(data)))
    return directory


def test_corrupt_download_rejected_and_not_kept(tmp_path: Path, bad_mirror_dir: Path,
                                                serve, raw_bytes: dict[str, bytes]) -> None:
    for name in FILES[:3]:
        (tmp_path / name).write_bytes(raw_bytes[name])
    before = sorted(p.name for p in tmp_path.iterdir())
    url = serve(bad_mirror_dir)
    with pytest.raises(MnistError) as err:
        load_mnist(tmp_path, mirrors=[url], progress=False)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte" in msg and "SHA-256 mismatch" in msg
    assert url in msg and str(tmp_path) in msg
    assert ".part" not in msg  # the temp file's name is not the user's business
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing new, no temp file


def test_corrupt_mirror_falls_back_to_next(tmp_path: Path, bad_mirror_dir: Path,
                                           mirror_dir: Path, serve,
                                           raw_bytes: dict[str, bytes]) -> None:
    for name in FILES[:3]:
        (tmp_path / name).write_bytes(raw_bytes[name])
    data = load_mnist(tmp_path, mirrors=[serve(bad_mirror_dir), serve(mirror_dir)],
                      progress=False)
    assert data.sha256 == DATASET_SHA256
    assert leftovers(tmp_path) == []


def test_mirror_404_is_reported(tmp_path: Path, serve) -> None:
    empty = tmp_path / "empty_mirror"
    empty.mkdir()
    target = tmp_path / "target"
    with pytest.raises(MnistError, match="HTTP 404") as err:
        load_mnist(target, mirrors=[serve(empty)], progress=False)
    for name in FILES:
        assert f"{name}.gz: HTTP 404" in str(err.value)
    assert list(target.iterdir()) == []


def test_download_of_crafted_files_with_override(tiny, tmp_path: Path, serve) -> None:
    directory, sums, arrays = tiny
    mirror = tmp_path / "tiny_mirror"
    mirror.mkdir()
    for name in FILES:
        (mirror / f"{name}.gz").write_bytes(gzip.compress((directory / name).read_bytes()))
    target = tmp_path / "target"
    data = load_mnist(target, mirrors=[serve(mirror)], progress=False, expected=sums)
    np.testing.assert_array_equal(data.x_test, arrays["t10k-images-idx3-ubyte"])
    assert leftovers(target) == []
    assert ((target / f"{FILES[0]}.gz").stat().st_mode & 0o777) == 0o644
