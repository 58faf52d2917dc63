"""MNIST-format datasets: where the four IDX files are, reading and checking them,
splitting, and moving them to a device.

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

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from array_api_compat import array_namespace

from multinet.errors import DatasetError, DatasetNotFound, argument, download_advice
from multinet.idx import content_sha256, parse_idx, read_idx_bytes

ENV_VAR = "MULTINET_DATA"

#: The four files of an MNIST-format dataset, by role, without the ``.gz``.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = 10


@dataclass(frozen=True)
class DatasetSpec:
    """What identifies a dataset and where it can come from."""

    name: str
    torchvision_name: str
    #: SHA-256 of each file's *uncompressed* IDX bytes: the dataset's identity.
    content_sha256: dict[str, str]
    #: The hashes of the ``.gz`` files that mirrors serve, as pooch wants them.
    download_hashes: dict[str, str]
    #: Base URLs, tried in order; each serves ``<stem>.gz``.
    mirrors: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    classes: tuple[str, ...] = field(default=tuple(str(i) for i in range(10)))


DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        torchvision_name="MNIST",
        content_sha256={
            "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        download_hashes={
            "train_images": "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train_labels": "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "test_images": "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "test_labels": "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        torchvision_name="FashionMNIST",
        # Computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1.
        content_sha256={
            "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        # The upstream MD5s published with the dataset (and used by torchvision).
        download_hashes={
            "train_images": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "md5:25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "md5:bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "md5:bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


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


def cache_dir() -> Path:
    """The per-user cache root (``$XDG_CACHE_HOME/multinet`` or ``~/.cache/multinet`` on
    Linux; the platform's convention elsewhere)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("multinet", appauthor=False))


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


def locate(data_dir: str | os.PathLike | None = None, name: str = "mnist") -> dict[str, Path]:
    """The dataset's four files, or ``DatasetNotFound`` saying where it looked
    (``DatasetError`` if a folder on the way cannot be read)."""
    spec = dataset_spec(name)
    for directory in search_dirs(spec, data_dir):
        files = find_files(directory)
        if files is not None:
            return files
    raise not_found_error(spec, search_roots(spec, data_dir))


def file_names() -> str:
    """The four ``.gz`` file names, for messages that tell the user what to put where."""
    return ", ".join(f"{stem}.gz" for stem in FILES.values())


def not_found_error(spec: DatasetSpec, roots: list[Path]) -> DatasetNotFound:
    names = file_names()
    return DatasetNotFound(
        f"{spec.name} files not found; searched {', '.join(map(str, roots))} (and their "
        f"{spec.name}/ and {spec.torchvision_name}/raw/ subfolders). Put {names} in a "
        f"folder and pass {argument('data_dir', meta='FOLDER')} or set {ENV_VAR}=FOLDER, "
        f"or {download_advice(spec.name)}"
    )


def _check_pair(images: np.ndarray, labels: np.ndarray, image_path, label_path) -> None:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"{image_path}: expected uint8 images of shape (n, rows, cols), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(
            f"{label_path}: expected uint8 labels of shape (n,), got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= CLASSES:
        raise DatasetError(
            f"{label_path}: label {int(labels.max())} outside 0-{CLASSES - 1}"
        )


def identify(sha256: str) -> tuple[str, str] | None:
    """``(dataset, role)`` of the known file whose uncompressed contents have this
    SHA-256, or None."""
    return next(((spec.name, role) for spec in DATASETS.values()
                 for role, known in spec.content_sha256.items() if known == sha256), None)


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
    for split in ("train", "test"):
        _check_pair(arrays[f"{split}_images"], arrays[f"{split}_labels"],
                    files[f"{split}_images"], files[f"{split}_labels"])
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DatasetError(
            f"train images are {arrays['train_images'].shape[1:]} but test images are "
            f"{arrays['test_images'].shape[1:]}"
        )
    return Dataset(name=name, directory=files["train_images"].parent, **arrays)


def load_dataset(data_dir: str | os.PathLike | None = None, name: str = "mnist", *,
                 verify: bool = True) -> Dataset:
    """Find, read and validate a dataset (see the module docstring for where it looks).

    ``verify=False`` skips the content checksums, for MNIST-format data of your own.
    """
    spec = dataset_spec(name)
    return read_files(locate(data_dir, name), name, spec.content_sha256 if verify else None)


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
    return Dataset(name=name, directory=root / spec.torchvision_name / "raw", **arrays)


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
