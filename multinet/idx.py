"""Reading IDX files, the format of MNIST and Fashion-MNIST, with every header checked.

An IDX file is a 4-byte magic number (two zero bytes, an element-type code, the number
of dimensions), one big-endian uint32 per dimension, then the elements, big-endian, in
C order. Files may be gzip-compressed. Anything that does not add up raises
``DatasetError`` naming the file and the problem, never a bare ``struct.error``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

from multinet.errors import DatasetError

#: IDX element-type code -> big-endian NumPy dtype.
ELEMENT_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.suffix == ".gz" or raw[:2] == GZIP_MAGIC:
        if raw[:2] != GZIP_MAGIC:
            raise DatasetError(f"{path}: named .gz but is not gzip data")
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return raw


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array held in the bytes of an (uncompressed) IDX file, in native byte order."""
    if len(raw) == 0:
        raise DatasetError(f"{name}: empty file")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{name}: not an IDX file (bad magic number {raw[:4].hex()})")
    code, ndim = raw[2], raw[3]
    if code not in ELEMENT_TYPES:
        raise DatasetError(f"{name}: not an IDX file (unknown element type 0x{code:02x})")
    if ndim == 0:
        raise DatasetError(f"{name}: IDX header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{name}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = ELEMENT_TYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    body = len(raw) - header
    if body != expected:
        problem = "truncated" if body < expected else "has trailing bytes"
        raise DatasetError(
            f"{name}: {problem}: header says shape {shape} ({expected} bytes), "
            f"body has {body} bytes"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, sha256: str | None = None) -> np.ndarray:
    """Read a ``.gz`` or raw IDX file. Images stay ``uint8``: no float copy on the host.

    ``sha256``: the expected SHA-256 of the uncompressed IDX bytes. Checking the content
    rather than the file accepts the same data however it was compressed (Debian's
    Fashion-MNIST ``.gz`` files differ byte-wise from the upstream ones, not in content).
    """
    path = Path(path)
    raw = _read_bytes(path)
    if sha256 is not None and content_sha256(raw) != sha256:
        raise DatasetError(f"{path}: content checksum mismatch (a damaged or different file)")
    return parse_idx(raw, str(path))


def content_sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def file_content_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a ``.gz`` or raw file's uncompressed bytes."""
    return content_sha256(_read_bytes(Path(path)))
