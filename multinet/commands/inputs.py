"""What a command reads, from its options: the dataset (``--dataset``, ``--data-dir``...)
and the checkpoint (``CKPT`` on ``--backend``), loaded through the Python API."""

from __future__ import annotations

from multinet.api.run import load
from multinet.data import load_dataset


def load_data(args):
    """The dataset the data options name (``--dataset``, else mnist), found, downloaded
    unless ``--offline``, and checked unless ``--no-verify``; ``args.dataset`` is set to
    its name.

    Returns
    -------
    multinet.data.Dataset
        Its images and labels, train and test.

    Raises
    ------
    multinet.errors.DatasetError
        If it is not found, cannot be downloaded, or is not what it claims to be.
    """
    args.dataset = args.dataset or "mnist"
    return load_dataset(args.dataset, args.data_dir, download=not args.offline,
                        verify=args.verify, mirrors=args.mirror,
                        source=getattr(args, "data_source", "multinet"))


def run_and_data(args):
    """The checkpoint (``CKPT``) as a run on ``--backend``, and the data to look at it
    with: the dataset it was trained on, unless ``--dataset``.

    Returns
    -------
    trained : multinet.api.run.Run
        The checkpoint, loaded on the backend.
    dataset : multinet.data.Dataset
        The data, as ``load_data`` gives it.
    """
    trained = load(args.checkpoint, args.backend)
    args.dataset = args.dataset or trained.dataset_name
    args.data_source = "multinet"
    return trained, load_data(args)
