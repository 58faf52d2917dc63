"""Reading IDX files, the format of MNIST and Fashion-MNIST, with every header checked.

An IDX file is a 4-byte magic number (two zero bytes, an element-type code, the number
of dimensions), one big-endian uint32 per dimension, then the elements, big-endian, in
C order. Files may be gzip-compressed. Anything that does not add up raises
``DatasetError`` naming the file and the problem, never a bare ``struct.error``.

Files are decompressed as a stream and never read past the size their header declares,
so a small ``.gz`` that expands to gigabytes (a "gzip bomb", or just a damaged file)
costs no more memory than the array it claims to hold, and a header that claims more
than ``MAX_BYTES`` is refused before anything else is read.
"""

from __future__ import annotations

import contextlib
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
#: The most one file may declare. MNIST's largest file holds 47 MB and EMNIST's 0.64 GB,
#: so a header claiming more is damaged or hostile.
MAX_BYTES = 2 << 30
#: Bytes decompressed per read: memory grows with the data that actually arrives, not
#: with what a header claims.
CHUNK_BYTES = 1 << 20


def _header(raw: bytes, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, shape, header length)`` from the first bytes of an IDX file."""
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
    return ELEMENT_TYPES[code], shape, header


def _body_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * dtype.itemsize  # Python ints: no overflow


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array held in the bytes of an (uncompressed) IDX file, in native byte order."""
    dtype, shape, header = _header(raw, name)
    expected = _body_bytes(dtype, shape)
    body = len(raw) - header
    if body != expected:
        problem = "truncated" if body < expected else "has trailing bytes"
        raise DatasetError(
            f"{name}: {problem}: header says shape {shape} ({expected} bytes), "
            f"body has {body} bytes"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def _read_up_to(stream, size: int, into: bytearray) -> None:
    """Append up to ``size`` bytes of ``stream`` to ``into``, fewer at its end."""
    end = len(into) + size
    while len(into) < end:
        chunk = stream.read(min(CHUNK_BYTES, end - len(into)))
        if not chunk:
            return
        into += chunk


@contextlib.contextmanager
def _uncompressed(path: Path):
    """``(stream, compressed)``: the file's uncompressed bytes as a stream."""
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(open(path, "rb"))
            magic = f.read(2)
            f.seek(0)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if path.suffix == ".gz" and magic != GZIP_MAGIC:
            raise DatasetError(f"{path}: named .gz but is not gzip data")
        compressed = magic == GZIP_MAGIC
        yield (stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb")) if compressed
               else f), compressed


def read_idx_bytes(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> bytearray:
    """The uncompressed bytes of a ``.gz`` or raw IDX file: its header and at most the
    body that header declares. Raises ``DatasetError`` if the header is malformed or
    declares more than ``max_bytes``, if the data goes on past the declared size (read
    one byte past it, no further), and for corrupt gzip data; a short body is returned
    as it is, for ``parse_idx`` to report."""
    path = Path(path)
    raw = bytearray()
    with _uncompressed(path) as (stream, compressed):
        try:
            _read_up_to(stream, 4, raw)
            _read_up_to(stream, 4 * raw[3] if len(raw) == 4 else 0, raw)
            dtype, shape, header = _header(bytes(raw), str(path))
            expected = _body_bytes(dtype, shape)
            if expected > max_bytes:
                raise DatasetError(
                    f"{path}: header declares shape {shape} ({expected} bytes), over the "
                    f"{max_bytes} bytes multinet reads from one file: a damaged file?"
                )
            _read_up_to(stream, expected, raw)
            if len(raw) == header + expected and stream.read(1):
                raise DatasetError(
                    f"{path}: has trailing bytes: header says shape {shape} ({expected} "
                    f"bytes), the data goes on past that (not read further)"
                )
        except MemoryError:
            raise DatasetError(f"{path}: not enough memory to read it") from None
        except (OSError, EOFError, zlib.error) as exc:
            if compressed:
                raise DatasetError(f"{path}: corrupt or truncated gzip data ({exc})") from None
            raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return raw


def read_idx(path: str | os.PathLike, sha256: str | None = None) -> np.ndarray:
    """Read a ``.gz`` or raw IDX file. Images stay ``uint8``: no float copy on the host.

    ``sha256``: the expected SHA-256 of the uncompressed IDX bytes. Checking the content
    rather than the file accepts the same data however it was compressed (Debian's
    Fashion-MNIST ``.gz`` files differ byte-wise from the upstream ones, not in content).
    """
    path = Path(path)
    raw = read_idx_bytes(path)
    if sha256 is not None and content_sha256(raw) != sha256:
        raise DatasetError(f"{path}: content checksum mismatch (a damaged or different file)")
    return parse_idx(raw, str(path))


def content_sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def file_content_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a ``.gz`` or raw IDX file's uncompressed bytes (see ``read_idx_bytes``:
    a file that is not IDX data raises ``DatasetError``)."""
    return content_sha256(read_idx_bytes(Path(path)))
