"""The datasets multinet knows, and where they are kept: each one's four IDX files,
their checksums, the mirrors that serve them, its class names, and the folders a
dataset is looked for in (``data``) and downloaded into (``download``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from multinet.errors import DatasetError

#: The folder a user points multinet at (as ``--data-dir`` / ``data_dir=`` do).
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
    classes: tuple[str, ...] = field(default=tuple(str(i) for i in range(CLASSES)))


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


def cache_dir() -> Path:
    """The per-user cache root (``$XDG_CACHE_HOME/multinet`` or ``~/.cache/multinet`` on
    Linux; the platform's convention elsewhere)."""
    return Path(platformdirs.user_cache_dir("multinet", appauthor=False))


def file_names() -> str:
    """The four ``.gz`` file names, for messages that tell the user what to put where."""
    return ", ".join(f"{stem}.gz" for stem in FILES.values())


def identify(sha256: str) -> tuple[str, str] | None:
    """``(dataset, role)`` of the known file whose uncompressed contents have this
    SHA-256, or None."""
    return next(((spec.name, role) for spec in DATASETS.values()
                 for role, known in spec.content_sha256.items() if known == sha256), None)
