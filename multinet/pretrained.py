"""The pretrained network shipped inside the package: which file it is, how it was made
and how well it does, and ``path()``, which hands it out only after checking its bytes.

It is a checkpoint like any other (``multinet train --save`` wrote it, optimizer state
included), trained by multinet itself on the full MNIST with ``RECIPE``. ``multinet.load()``
with no path, ``multinet predict`` with no ``CKPT`` and ``multinet serve`` use it.
docs/pretrained.md says where it derives from (MNIST, CC BY-SA 3.0) and how closely a
retraining lands.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from multinet.errors import MultinetError

#: The file, in ``multinet/weights/`` (package data of the wheel and the sdist).
NAME = "mnist-mlp-256.safetensors"
#: The arguments of ``multinet`` that trained it (``--save NAME`` added), on the full
#: MNIST training set found by ``--data-dir`` or ``$MULTINET_DATA``.
ARGUMENTS = ("train", "--preset", "mlp", "--hidden", "256", "--seed", "0", "--backend", "jax")
#: The command line that made it.
RECIPE = "multinet " + " ".join(ARGUMENTS) + " --save " + NAME
#: The preset, its one override, and the seed (for the weights, the dev split and the
#: shuffling): 784-256-10, ReLU, Adam with a cosine schedule, 10 epochs of batches of 128.
PRESET, HIDDEN, SEED = "mlp", (256,), 0
#: What it was trained and tested on: MNIST's 60,000 training images (1,000 of them held
#: out as the dev split) and its 10,000 test images.
DATASET = "mnist"
#: Its accuracy on MNIST's 10,000 test images (a fraction), measured when training ended
#: and recorded in the checkpoint; ``multinet evaluate`` measures it again.
TEST_ACCURACY = 0.9802
#: The SHA-256 of the file's bytes: what ``path()`` checks.
SHA256 = "e7065061843549da3f8ff78503d7c33c942b4f45d8e68965b8acb134fb495fec"

_FOLDER = Path(__file__).resolve().parent / "weights"
_REINSTALL = "reinstall multinet (pip install --force-reinstall multinet)"


class PretrainedError(MultinetError):
    """The pretrained weights shipped with the package are missing, unreadable or altered."""


def path() -> Path:
    """The pretrained checkpoint's file, once its bytes are checked against ``SHA256``.

    Returns
    -------
    pathlib.Path
        ``multinet/weights/mnist-mlp-256.safetensors`` in the installed package: a
        checkpoint that ``multinet.load`` reads.

    Raises
    ------
    PretrainedError
        If the file is missing or unreadable, or its SHA-256 is not ``SHA256`` (the
        message, one line, says which and how to get it back).
    """
    where = _FOLDER / NAME
    try:
        data = where.read_bytes()
    except FileNotFoundError:
        raise PretrainedError(f"the pretrained weights are missing ({where}): "
                              f"{_REINSTALL}") from None
    except OSError as exc:
        raise PretrainedError(f"the pretrained weights cannot be read ({where}: "
                              f"{exc.strerror or exc}): {_REINSTALL}") from None
    found = hashlib.sha256(data).hexdigest()
    if found != SHA256:
        raise PretrainedError(f"the pretrained weights have been altered ({where}: SHA-256 "
                              f"{found[:16]}..., expected {SHA256[:16]}...): {_REINSTALL}")
    return where
