"""MNIST-format datasets: finding the four IDX files (downloading them if need be),
reading and checking them, splitting them, and scaling images on a device.

Where files are looked for, in order (the first folder holding all four wins):

1. ``--data-dir`` (``data_dir=``), else ``$MULTINET_DATA``: an explicit choice; if it
   lacks the files, nothing else is tried.
2. the per-user cache, ``platformdirs.user_cache_dir("multinet")`` (on Linux
   ``$XDG_CACHE_HOME/multinet``, else ``~/.cache/multinet``), where ``multinet data
   fetch`` downloads to;
3. system folders where a distribution installs the data (Debian's
   ``dataset-fashion-mnist`` package: ``/usr/share/datasets/fashion-mnist``).

Each folder ``D`` is searched as ``D/<name>/`` (``D/mnist``), as a torchvision root
``D/<TorchvisionName>/raw/`` (``D/MNIST/raw``, so files torchvision downloaded are
reused) and as ``D`` itself. Every file read is checked against the SHA-256 of its
uncompressed contents, so a damaged file, or another dataset's, is an error, not data
(another dataset's file is named as such). A folder that cannot be read is an error
naming it, not a reason to look elsewhere.

Images stay ``uint8`` on the host. They travel to the device as ``uint8`` (a quarter of
float32's bytes) and are scaled to [0, 1] there, so every backend sees the same values.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from array_api_compat import array_namespace

from multinet.catalog import (CLASSES, ENV_VAR, FILES, DatasetSpec, cache_dir, dataset_spec,
                              file_names, identify)
from multinet.download import fetch
from multinet.errors import (DatasetError, DatasetNotFound, InvalidArgument, argument,
                             download_advice)
from multinet.idx import content_sha256, parse_idx, read_idx_bytes


@dataclass(frozen=True)
class Dataset:
    """Host copies of a dataset: images ``(n, 28, 28)`` uint8, labels ``(n,)`` uint8."""

    name: str
    directory: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __repr__(self) -> str:  # shapes, not 70,000 images' worth of numbers
        shape = "x".join(map(str, self.train_images.shape[1:]))
        return (f"Dataset({self.name!r}: {len(self.train_labels)} training and "
                f"{len(self.test_labels)} test images of {shape} "
                f"{self.train_images.dtype}, from {str(self.directory)!r})")


#: The shape of one image in every dataset of ``multinet.catalog.DATASETS``: the network's
#: first layer takes its pixels.
IMAGE_SHAPE = (28, 28)


def validate(dataset: Dataset, where: dict[str, str] | None = None) -> Dataset:
    """``dataset``, if multinet can train on it and evaluate with it; else one error naming
    the array and what is wrong. Files read and datasets given to the API pass here.

    Parameters
    ----------
    dataset : Dataset
        The data to check.
    where : dict of str to str, optional
        How the messages name each array, by role (``read_files`` names the files); None:
        as an attribute of the Python argument, ``dataset.train_images``.

    Returns
    -------
    Dataset
        ``dataset`` itself.

    Raises
    ------
    InvalidArgument
        For something that is not a ``Dataset``.
    DatasetError
        For an unknown name; arrays that are no NumPy arrays; images not uint8 ``(n, 28,
        28)`` (or already scaled to [0, 1]); labels not integers 0-9 of shape ``(n,)``;
        image and label counts that differ; an empty train or test set.
    """
    if not isinstance(dataset, Dataset):
        raise InvalidArgument(f"dataset must be a Dataset from multinet.load_dataset, got "
                              f"{type(dataset).__name__}")
    dataset_spec(dataset.name)
    named = where or {role: f"dataset.{role}" for role in FILES}
    for split in ("train", "test"):
        images, labels = f"{split}_images", f"{split}_labels"
        count = _check_images(getattr(dataset, images), named[images])
        labelled = _check_labels(getattr(dataset, labels), named[labels])
        if count != labelled:
            raise DatasetError(f"{named[images]} holds {count} images but {named[labels]} "
                               f"holds {labelled} labels")
        if count == 0:
            raise DatasetError(f"{named[images]} holds no images: the {split} set needs at "
                               "least one")
    return dataset


def _check_array(value, name: str, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise DatasetError(f"{name} must be a NumPy array of {what}, got "
                           f"{type(value).__name__} (numpy.asarray makes one)")
    return value


def _check_images(images, name: str) -> int:
    shape = f"(n, {', '.join(map(str, IMAGE_SHAPE))})"
    images = _check_array(images, name, f"uint8 pixel values 0-255, shape {shape}")
    if images.dtype != np.uint8:
        if (images.dtype.kind == "f" and images.size  # fmin skips NaN, silently if all
                and 0 <= np.fmin.reduce(images, None) and np.fmax.reduce(images, None) <= 1):
            raise DatasetError(
                f"{name} holds {images.dtype} values in [0, 1], images already scaled: pass "
                f"the uint8 pixel values 0-255 as read from the files (multinet scales them "
                f"itself); (images * 255).round().astype(numpy.uint8) undoes the scaling")
        raise DatasetError(f"{name} must be uint8 pixel values 0-255 as read from the "
                           f"files, got {images.dtype}")
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DatasetError(f"{name} must be images of shape {shape}, got {images.shape}")
    return len(images)


def _check_labels(labels, name: str) -> int:
    labels = _check_array(labels, name, f"integer labels 0-{CLASSES - 1}, shape (n,)")
    if labels.dtype.kind not in "iu":
        raise DatasetError(f"{name} must be integer class labels 0-{CLASSES - 1}, got "
                           f"{labels.dtype}")
    if labels.ndim != 1:
        raise DatasetError(f"{name} must be labels of shape (n,), got {labels.shape}")
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= CLASSES:
            raise DatasetError(f"{name}: label {high if high >= CLASSES else low} outside "
                               f"0-{CLASSES - 1}")
    return len(labels)


def check_flags(**flags) -> None:
    """``InvalidArgument`` naming the first of ``flags`` that is no bool (``"no"`` is true)."""
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidArgument(f"{name} must be True or False, got {value!r}")


def content_sha256s(dataset: Dataset) -> dict[str, str]:
    """What a checkpoint records of the data a run was trained on: the SHA-256 of each
    array as an IDX file holds it, by role. For arrays read unchanged from a dataset's
    files these are the files' own content checksums (``multinet.catalog``), which
    ``identify`` names; a subset, or data of one's own, has others.

    Parameters
    ----------
    dataset : Dataset
        Checked by ``validate``.

    Returns
    -------
    dict of str to str
        Hexadecimal digests by role (``train_images``, ...).
    """
    return {role: _idx_sha256(getattr(dataset, role)) for role in FILES}


def _idx_sha256(array: np.ndarray) -> str:
    # An IDX file of unsigned bytes: magic 0, 0, 0x08, the number of dimensions, each
    # dimension as a big-endian uint32, then the values (labels 0-9 fit a byte whatever
    # their integer type).
    array = np.ascontiguousarray(array, dtype=np.uint8)
    digest = hashlib.sha256(bytes([0, 0, 0x08, array.ndim])
                            + struct.pack(f">{array.ndim}I", *array.shape))
    digest.update(array.reshape(-1).data)
    return digest.hexdigest()


def _blocking_folder(path: Path) -> Path:
    """The folder whose permissions hide ``path``: its nearest ancestor that can be
    looked at (whose entries, then, cannot)."""
    for folder in path.parents:
        try:
            folder.stat()
            return folder
        except OSError:
            continue
    return path.parent


def _file_in(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        try:
            if candidate.is_file():
                return candidate
        except OSError as exc:  # a folder without search permission (chmod 000)
            raise DatasetError(f"{_blocking_folder(candidate)}: cannot read this folder "
                               f"({exc.strerror or exc})") from None
    return None


def find_files(directory: str | os.PathLike) -> dict[str, Path] | None:
    """The four files in exactly ``directory`` (``.gz`` or raw), or None if any is missing.
    Raises ``DatasetError`` if the folder cannot be searched (no permission)."""
    directory = Path(directory)
    found = {role: _file_in(directory, stem) for role, stem in FILES.items()}
    return None if None in found.values() else found


def explicit_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``data_dir`` (``--data-dir``), else ``$MULTINET_DATA``, else None."""
    chosen = data_dir or os.environ.get(ENV_VAR)
    return Path(chosen).expanduser() if chosen else None


def search_roots(spec: DatasetSpec, data_dir=None) -> list[Path]:
    """The folders searched, in order (see the module docstring)."""
    chosen = explicit_dir(data_dir)
    if chosen is not None:
        return [chosen]
    return [cache_dir(), *(Path(d) for d in spec.system_dirs)]


def search_dirs(spec: DatasetSpec, data_dir=None) -> list[Path]:
    """Every folder looked in, in order: each root as ``<name>/``, ``<Torchvision>/raw/``
    and itself."""
    return [directory for root in search_roots(spec, data_dir)
            for directory in (root / spec.name, root / spec.torchvision_name / "raw", root)]


def locate(name: str = "mnist", data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The dataset's four files, or ``DatasetNotFound`` saying where it looked
    (``DatasetError`` if a folder on the way cannot be read)."""
    spec = dataset_spec(name)
    for directory in search_dirs(spec, data_dir):
        files = find_files(directory)
        if files is not None:
            return files
    raise not_found_error(spec, search_roots(spec, data_dir))


def not_found_error(spec: DatasetSpec, roots: list[Path]) -> DatasetNotFound:
    names = file_names()
    return DatasetNotFound(
        f"{spec.name} files not found; searched {', '.join(map(str, roots))} (and their "
        f"{spec.name}/ and {spec.torchvision_name}/raw/ subfolders). Put {names} in a "
        f"folder and pass {argument('data_dir', meta='FOLDER')} or set {ENV_VAR}=FOLDER, "
        f"or {download_advice(spec.name)}"
    )


def _mismatch(path: Path, name: str, role: str, sha256: str) -> str:
    """Why a file's contents are not the expected ones, in words for the user."""
    owner = identify(sha256)
    if owner is None:
        return f"{path}: content checksum mismatch (a damaged or different file)"
    dataset, its_role = owner
    what = its_role.replace("_", " ")
    if dataset == name:
        return (f"{path}: content checksum mismatch: it holds {name}'s {what}, not its "
                f"{role.replace('_', ' ')} (files renamed?)")
    return (f"{path}: content checksum mismatch: it holds {dataset}'s {what}, not "
            f"{name}'s (pass {argument('name', dataset)})")


def _read_checked(path: Path, name: str, role: str, sha256: str | None) -> np.ndarray:
    raw = read_idx_bytes(path)
    if sha256 is not None:
        actual = content_sha256(raw)
        if actual != sha256:
            raise DatasetError(_mismatch(path, name, role, actual))
    return parse_idx(raw, str(path))


def read_files(files: dict[str, Path], name: str, expected_sha256=None) -> Dataset:
    """Read and validate four IDX files (checking contents against ``expected_sha256``,
    a dict by role, when given)."""
    arrays = {role: _read_checked(path, name, role, (expected_sha256 or {}).get(role))
              for role, path in files.items()}
    return validate(Dataset(name=name, directory=files["train_images"].parent, **arrays),
                    {role: str(path) for role, path in files.items()})


def ensure_dataset(name: str = "mnist", data_dir=None, *, download: bool = True,
                   mirrors=None, progress: bool = True) -> dict[str, Path]:
    """The dataset's four files (by role), found where ``locate`` looks, else downloaded
    into the cache (when no folder was chosen explicitly, ``data_dir`` or
    ``$MULTINET_DATA``, and ``download``). A folder that cannot be read is an error, not
    a reason to download."""
    try:
        return locate(name, data_dir)
    except DatasetNotFound:
        if not download or explicit_dir(data_dir) is not None:
            raise
    return fetch(name, mirrors=mirrors, progress=progress)


def load_dataset(name: str = "mnist", data_dir: str | os.PathLike | None = None, *,
                 download: bool = True, verify: bool = True, mirrors=None,
                 source: str = "multinet", progress: bool = True) -> Dataset:
    """Find, read and check an MNIST-format dataset; download it first if need be.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
        The dataset.
    data_dir : str or os.PathLike, optional
        The folder to read (its ``<name>/`` and ``<Torchvision>/raw/`` subfolders too).
        None searches ``$MULTINET_DATA``, then the per-user cache, then system folders
        (see the module docstring).
    download : bool
        When nothing is found and no folder was named (``data_dir`` or
        ``$MULTINET_DATA``), download the files into the cache. False never touches the
        network.
    verify : bool
        Check every file's uncompressed contents against the dataset's known SHA-256.
        Pass False only for MNIST-format files of your own (the format is still checked).
    mirrors : str or sequence of str, optional
        Base URLs to download from, tried in order; None: ``$MULTINET_MIRRORS``, else the
        dataset's known mirrors.
    source : {"multinet", "torchvision"}
        ``"torchvision"`` loads through ``torchvision.datasets`` instead, as the original
        notebook did (``data_dir`` is then its root).
    progress : bool
        Show a progress bar while downloading.

    Returns
    -------
    Dataset
        Host arrays: ``train_images`` ``(60000, 28, 28)`` and ``test_images`` ``(10000,
        28, 28)`` uint8 (pixel values 0-255), ``train_labels`` ``(60000,)`` and
        ``test_labels`` ``(10000,)`` uint8 (0-9), with the dataset's ``name`` and the
        ``directory`` read.

    Raises
    ------
    DatasetNotFound
        The files are nowhere searched, and were not downloaded (saying where it looked).
    DatasetError
        An unknown ``name``; a damaged, truncated or foreign file (naming it), a folder
        that cannot be read, a download that failed on every mirror.
    InvalidArgument
        An unknown ``source``; a ``data_dir`` or ``mirrors`` that names no folder or URL;
        ``download``, ``verify`` or ``progress`` not a bool.
    """
    check_flags(download=download, verify=verify, progress=progress)
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise InvalidArgument(f"data_dir must be a folder (a str or a pathlib.Path) or None, "
                              f"got {type(data_dir).__name__}")
    if isinstance(mirrors, (str, os.PathLike)):
        mirrors = [mirrors]
    if mirrors is not None and not (isinstance(mirrors, (list, tuple)) and all(
            isinstance(m, (str, os.PathLike)) for m in mirrors)):
        raise InvalidArgument(f"mirrors must be a URL or a list of URLs, got {mirrors!r}")
    if source == "torchvision":
        return load_with_torchvision(name, data_dir, download=download)
    if source != "multinet":
        raise InvalidArgument(f"{argument('source', source)}: choose 'multinet' or "
                              "'torchvision'")
    spec = dataset_spec(name)
    files = ensure_dataset(name, data_dir, download=download, mirrors=mirrors,
                           progress=progress)
    return read_files(files, name, spec.content_sha256 if verify else None)


def load_with_torchvision(name: str = "mnist", root=None, *, download: bool = True) -> Dataset:
    """Load through ``torchvision.datasets`` exactly as the notebook did
    (``MNIST(root, download=True)``), for comparison; torchvision is optional."""
    try:
        from torchvision import datasets
    except ImportError:
        raise DatasetError(f"{argument('source', 'torchvision')} needs torchvision: "
                           "pip install torchvision") from None
    spec = dataset_spec(name)
    root = Path(root) if root else cache_dir()
    loader = getattr(datasets, spec.torchvision_name)
    try:
        train, test = (loader(str(root), train=flag, download=download) for flag in (True, False))
    except RuntimeError as exc:  # torchvision's "Dataset not found. You can use download=True"
        raise DatasetError(f"torchvision could not load {spec.name} from {root}: {exc}") from None
    arrays = {"train_images": train.data.numpy(), "train_labels": train.targets.numpy(),
              "test_images": test.data.numpy(), "test_labels": test.targets.numpy()}
    arrays = {role: np.asarray(a, dtype=np.uint8) for role, a in arrays.items()}
    return validate(Dataset(name=name, directory=root / spec.torchvision_name / "raw",
                            **arrays))


@dataclass(frozen=True)
class FileCheck:
    """What ``verify_files`` found in one file."""

    path: Path
    #: The uncompressed contents have the known SHA-256.
    ok: bool
    #: ``(dataset, role)`` of the known file it is instead, if it is one.
    belongs_to: tuple[str, str] | None = None
    #: Why it is not IDX data (not gzip, truncated, trailing bytes, ...), if it is not.
    problem: str | None = None


def verify_files(files: dict[str, Path], name: str) -> dict[str, FileCheck]:
    """For each role, whether the file's uncompressed contents have the known checksum,
    and if not, whose file it is or why it is not IDX data. A file that cannot be opened
    raises ``DatasetError``: deleting it, the advice for a damaged one, is not the cure."""
    spec = dataset_spec(name)
    checks = {}
    for role, path in files.items():
        try:
            open(path, "rb").close()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
        try:
            sha256 = content_sha256(read_idx_bytes(path))
        except DatasetError as exc:
            checks[role] = FileCheck(path, False, problem=str(exc).removeprefix(f"{path}: "))
            continue
        ok = sha256 == spec.content_sha256[role]
        checks[role] = FileCheck(path, ok, belongs_to=None if ok else identify(sha256))
    return checks


def split_indices(n: int, dev_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, dev)`` index arrays: a seeded shuffle, the first ``dev_size`` for dev.

    This is the notebook's split (shuffle, then ``data[0:1000]`` is dev) with a seed.
    """
    if not 0 <= dev_size < n:
        raise ValueError(f"dev split of {dev_size} needs at least {dev_size + 1} samples, have {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[dev_size:]), np.sort(order[:dev_size])


def flatten(images: np.ndarray) -> np.ndarray:
    """``(n, rows, cols)`` -> ``(n, rows * cols)`` without copying; ``n`` may be 0 (where
    ``-1`` could not be inferred)."""
    return images.reshape(len(images), int(np.prod(images.shape[1:])))


def scale_images(images, dtype):
    """uint8 pixel values -> ``dtype`` in [0, 1], on whatever device ``images`` live on."""
    xp = array_namespace(images)
    return xp.astype(images, dtype) / 255.0
