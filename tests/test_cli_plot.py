"""``multinet plot`` as a user runs it: ``--out`` naming a file, and figures without
matplotlib (``plot``, and ``train --plots``), are refused in one line before any work."""

import sys

from helpers import DATA, one_line_error
from multinet.cli import main


def test_plot_out_naming_a_file_and_plots_without_matplotlib(tmp_path, capsys, no_work,
                                                             monkeypatch):
    (tmp_path / "file").write_text("x")
    code = main(["plot", "no-checkpoint-needed.st", "--out", str(tmp_path / "file")])
    one_line_error(code, capsys.readouterr(), "--out", "is a file")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    code = main(["train", *DATA, "--plots", str(tmp_path / "plots")])
    one_line_error(code, capsys.readouterr(), "matplotlib")
