"""``multinet plot``: a checkpoint's training curves, test predictions and confusion
matrix, as PNG files in ``--out``."""

from __future__ import annotations

from multinet.commands import COMMANDS, inputs, options
from multinet.files import OutputError, check_output_dir, reason
from multinet.plots import require_matplotlib

DESCRIPTION = COMMANDS["plot"].summary


def add_arguments(parser) -> None:
    """``CKPT``, the backend and data options, and ``--out``."""
    options.add_checkpoint_options(parser)
    parser.add_argument("--out", metavar="DIR", required=True, help="folder for the PNGs")


def run(args) -> int:
    """Write the figures; print their paths. Matplotlib and the folder are checked
    before the checkpoint and the data are loaded."""
    require_matplotlib()
    check_output_dir(args.out, "--out")
    trained, dataset = inputs.run_and_data(args)
    try:
        written = trained.save_plots(args.out, dataset, title=f"{args.checkpoint}")
    except OSError as exc:
        raise OutputError(f"--out {args.out}: cannot write the plots ({reason(exc)})") from None
    for path in written:
        print(path)
    return 0

