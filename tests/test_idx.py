"""The IDX reader (``multinet/idx.py``): real files, every malformed case, gzip bombs
read no further than their header declares, and fuzzing."""

import gzip
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import gzip_bomb
from multinet.errors import DatasetError
from multinet.idx import parse_idx, read_idx, read_idx_bytes


def idx_bytes(array: np.ndarray, code=0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_real_mnist_shapes_and_dtypes(full_mnist):
    mnist = full_mnist
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.train_labels.shape == (60000,) and mnist.train_labels.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.test_labels.shape == (10000,)
    assert np.bincount(mnist.test_labels).tolist()[:2] == [980, 1135]  # the known class counts


@pytest.mark.parametrize("code, dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                         (0x0C, np.int32), (0x0D, np.float32),
                                         (0x0E, np.float64)])
def test_round_trip_every_element_type(code, dtype, tmp_path):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(array, code)
    np.testing.assert_array_equal(parse_idx(raw), array)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(path), array)


GOOD = idx_bytes(np.zeros((2, 28, 28), np.uint8))


@pytest.mark.parametrize("raw, message", [
    (b"", "empty file"),
    (b"\x08\x03\x00\x00" + GOOD[4:], "bad magic"),
    (b"\x00\x00\x07\x03" + GOOD[4:], "unknown element type"),
    (GOOD[:10], "truncated IDX header"),
    (GOOD[:-1], "truncated"),
    (GOOD + b"\x00", "trailing bytes"),
    (b"\x00\x00\x08\x00", "zero dimensions"),
])
def test_malformed_bytes_name_the_problem(raw, message):
    with pytest.raises(DatasetError, match=message):
        parse_idx(raw, "file.idx")


def test_gz_that_is_not_gzip_and_truncated_gzip(tmp_path):
    not_gzip = tmp_path / "a.gz"
    not_gzip.write_bytes(GOOD)
    with pytest.raises(DatasetError, match="a.gz: named .gz but is not gzip"):
        read_idx(not_gzip)
    truncated = tmp_path / "b.gz"
    truncated.write_bytes(gzip.compress(GOOD)[:-12])
    with pytest.raises(DatasetError, match="b.gz: corrupt or truncated gzip"):
        read_idx(truncated)


def test_a_gzip_bomb_is_read_no_further_than_its_header_declares(tmp_path):
    bomb = tmp_path / "train-labels-idx1-ubyte.gz"
    bomb.write_bytes(gzip_bomb((8,), 3 << 30))  # 3 GiB of zeros after 8 labels
    assert bomb.stat().st_size < 4 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="has trailing bytes.*not read further"):
            read_idx_bytes(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak  # megabytes, not the 3 GiB it expands to


def test_a_header_declaring_more_than_the_limit_is_refused_before_reading(tmp_path):
    huge = tmp_path / "huge.gz"
    huge.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**6, 10**3, 10**3)
                                   + bytes(1 << 20)))
    with pytest.raises(DatasetError, match=r"declares shape \(1000000, 1000, 1000\).*over the"):
        read_idx_bytes(huge)
    small_limit = tmp_path / "small-limit.gz"
    small_limit.write_bytes(gzip_bomb((2000, 28, 28), 0))
    with pytest.raises(DatasetError, match="over the 1000000 bytes"):
        read_idx_bytes(small_limit, max_bytes=10**6)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_nothing_but_dataset_error(raw):
    try:
        parse_idx(raw)
    except DatasetError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_random_gz_files_raise_nothing_but_dataset_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "f.gz"
    path.write_bytes(b"\x1f\x8b" + raw)
    try:
        read_idx(path)
    except DatasetError:
        pass
