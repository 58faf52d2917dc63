"""The networks a server answers with: one checkpoint, loaded once on each backend.

``Answers.open`` loads the checkpoint as a ``multinet.api.run.Run`` on every backend
asked for (by default every registered backend that can run here, the default backend
first), and ``Answers.answer`` reads a picture's bytes the way ``multinet predict
--image`` reads a file (``multinet.pictures.mnist_digit``, then ``Run.probabilities``),
so the server's numbers are the command's, bit for bit.

A server answers from several threads at once; the array libraries do not all promise
that one network may be used from two threads, so each backend's ``Run`` is used under
its own lock. Decoding pictures needs no lock, but a large photo takes hundreds of
megabytes while it is read, so at most ``DECODERS`` are read at a time.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from multinet import pictures, pretrained
from multinet.api.run import Run, load
from multinet.errors import BackendUnavailable, InvalidArgument, MultinetError
from multinet.registry import backend_names, resolve_name

#: Pictures decoded at the same time.
DECODERS = 2
#: The largest picture a server decodes, in pixels: a phone's 12-megapixel photo fits;
#: a small file declaring a huge one (8000x8000 RGBA: 1.2 GB while decoded) is refused
#: before it is decoded. ``predict --image`` takes up to ``pictures.MAX_PIXELS``.
MAX_PIXELS = 16_000_000
#: How error messages name the picture a client sent.
UPLOAD_NAME = "the picture sent"


class _Upload(io.BytesIO):
    """A picture's bytes as the binary file ``mnist_digit`` reads, named in its errors as
    the client's picture (Pillow shows a file object's ``repr``: a memory address)."""

    name = UPLOAD_NAME

    def __repr__(self) -> str:
        return repr(UPLOAD_NAME)


@dataclass(frozen=True)
class Network:
    """One backend's copy of the checkpoint, and the lock it is used under."""

    #: The backend's name, as given (or as registered, for the default set).
    name: str
    run: Run
    lock: threading.Lock = field(default_factory=threading.Lock)

    def probabilities(self, digit: np.ndarray) -> np.ndarray:
        """The ten probabilities of one 28x28 ``uint8`` digit, as ``predict --image``
        computes them (a batch of one)."""
        with self.lock:
            return self.run.probabilities(digit[None])[0]


def _opened(path, name: str) -> Network:
    """The checkpoint on backend ``name``, having answered once: the first answer
    compiles (JAX) and allocates, paid before serving, and shows whether the library
    can run the network at all (``BackendUnavailable`` with the reason where not)."""
    network = Network(name, load(path, name))
    try:
        network.probabilities(np.zeros((28, 28), dtype=np.uint8))
    except MultinetError:
        raise
    except Exception as exc:  # noqa: BLE001 - a library that loads but cannot run it
        raise BackendUnavailable(f"backend {name!r} failed to run the network: "
                                 f"{type(exc).__name__}: {exc}") from exc
    return network


@dataclass(frozen=True)
class Answers:
    """A checkpoint on one or more backends, answering pictures.

    Attributes
    ----------
    checkpoint : Path
        The checkpoint file served.
    networks : tuple of Network
        In the order given; the first one's answer is the top-level one.
    unavailable : dict of str to str
        The default backends left out, each with the one-line reason.
    """

    checkpoint: Path
    networks: tuple
    unavailable: dict
    _decoding: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(DECODERS), repr=False)

    @classmethod
    def open(cls, checkpoint=None, backends=None, *, between=None) -> Answers:
        """Load ``checkpoint`` on each backend and make each answer once.

        Parameters
        ----------
        checkpoint : str, os.PathLike or None
            A checkpoint file; None: the pretrained weights
            (``multinet.pretrained.path()``).
        backends : sequence of str, or None
            Backend names, in the order to show them (a name given twice counts once);
            None: every registered backend that can run here, the default one
            (``$MULTINET_BACKEND``, else numpy) first, those that cannot run left out
            with their reason in ``unavailable``.
        between : callable, optional
            Called before each backend is loaded (``multinet serve`` stops there when
            asked to).

        Returns
        -------
        Answers

        Raises
        ------
        multinet.checkpoint.CheckpointError
            For a missing, unreadable or invalid checkpoint.
        multinet.pretrained.PretrainedError
            With no checkpoint, for pretrained weights that are missing or altered.
        UnknownBackend, BackendUnavailable
            For a backend named in ``backends`` that is not known or cannot run here.
        InvalidArgument
            For a ``checkpoint`` that is no file name, or ``backends`` that is no
            sequence of names, or an empty one.
        """
        path = pretrained.path() if checkpoint is None else checkpoint
        if backends is None:
            first = resolve_name(None)
            names = [first, *(name for name in backend_names() if name != first)]
            required = False
        else:
            if isinstance(backends, str) or not all(isinstance(b, str) for b in backends):
                raise InvalidArgument("backends must be a list of backend names")
            names, required = list(dict.fromkeys(backends)), True
            if not names:
                raise InvalidArgument("backends must name at least one backend")
        networks, unavailable = [], {}
        for name in names:
            if between is not None:
                between()
            try:
                networks.append(_opened(path, name))
            except BackendUnavailable as exc:
                if required:
                    raise
                unavailable[name] = str(exc)
        if not networks:
            raise BackendUnavailable("no backend can run here: "
                                     + "; ".join(unavailable.values()))
        return cls(Path(path), tuple(networks), unavailable)

    @property
    def names(self) -> list[str]:
        """The backends answering, in order."""
        return [network.name for network in self.networks]

    def describe(self) -> dict:
        """What ``/api/info`` says of the checkpoint: ``name`` (the file's), ``sizes``
        (a perceptron's widths, a list; any other network's layers, as text),
        ``dtype``, ``preset`` and ``test_accuracy`` (None where it records none)."""
        run = self.networks[0].run
        sizes = run.summary["sizes"]
        return {"name": self.checkpoint.name,
                "sizes": run.summary["network"] if sizes is None else list(sizes),
                "dtype": run.config.dtype, "preset": run.config.preset,
                "test_accuracy": run.summary.get("test_accuracy")}

    def answer(self, picture: bytes) -> dict:
        """What every backend predicts for a picture file's bytes.

        Parameters
        ----------
        picture : bytes
            A picture file, in any format ``multinet predict --image`` reads.

        Returns
        -------
        dict
            ``prediction`` (int) and ``probabilities`` (ten floats) of the first backend,
            named in ``backend``; ``backends``: each backend's name to its
            ``prediction`` and ``probabilities``; ``max_difference``: the largest
            ``|p - p_first|`` over backends and classes; ``input``: the 28x28 digit the
            networks saw, as 28 lists of 28 ints 0-255.

        Raises
        ------
        multinet.pictures.PictureError
            For no bytes, or bytes that are no readable picture of a digit (one line).
        InvalidArgument
            For a ``picture`` that is not bytes.
        """
        if not isinstance(picture, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"picture must be a picture file's bytes, got "
                                  f"{type(picture).__name__}")
        if not len(picture):
            raise pictures.PictureError(f"{UPLOAD_NAME}: empty (no bytes); send a picture "
                                        "file's bytes")
        with self._decoding:
            digit = pictures.mnist_digit(_Upload(picture), max_pixels=MAX_PIXELS)
        probabilities = [network.probabilities(digit) for network in self.networks]
        first = probabilities[0]
        backends = {network.name: {"prediction": int(np.argmax(p)),
                                   "probabilities": p.tolist()}
                    for network, p in zip(self.networks, probabilities)}
        return {"prediction": int(np.argmax(first)), "probabilities": first.tolist(),
                "backend": self.networks[0].name, "backends": backends,
                "max_difference": max(float(np.max(np.abs(p - first)))
                                      for p in probabilities),
                "input": digit.tolist()}
