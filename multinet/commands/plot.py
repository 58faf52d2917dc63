"""``multinet plot``: a checkpoint's training curves, test predictions and confusion
matrix, as PNG files in ``--out``."""

from __future__ import annotations

from multinet import locks
from multinet.commands import COMMANDS, inputs, options
from multinet.files import FIGURES, OutputError, check_output_dir, reason
from multinet.plots import require_matplotlib

DESCRIPTION = COMMANDS["plot"].summary


def add_arguments(parser) -> None:
    """``CKPT``, the backend and data options, ``--out`` and ``--force``."""
    options.add_checkpoint_options(parser)
    parser.add_argument("--out", metavar="DIR", required=True,
                        help=f"folder for the PNGs ({', '.join(FIGURES)})")
    options.add_force_option(parser, "the PNGs")


def run(args) -> int:
    """Write the figures; print their paths. Matplotlib, the folder and the figures it
    holds are checked before the checkpoint and the data are loaded, and the folder is
    locked while they are written."""
    require_matplotlib()
    check_output_dir(args.out, "--out", figures=FIGURES,
                     inputs={"the checkpoint plotted": args.checkpoint}, force=args.force)
    with locks.hold({"--out": args.out}):
        trained, dataset = inputs.run_and_data(args)
        try:
            written = trained.save_plots(args.out, dataset, title=f"{args.checkpoint}",
                                         force=args.force)
        except OutputError:  # already one line naming the file
            raise
        except OSError as exc:
            raise OutputError(f"--out {args.out}: cannot write the plots ({reason(exc)})"
                              ) from None
    for path in written:
        print(path)
    return 0
