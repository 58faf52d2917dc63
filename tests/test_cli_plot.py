"""``multinet plot`` as a user runs it: ``--out`` naming a file, and figures without
matplotlib (``plot``, and ``train --plots``), are refused in one line before any work;
the figures replace pictures, never the checkpoint plotted nor, unforced, another kind of
file."""

import os
import sys

from helpers import DATA, data_args, one_line_error
from multinet import files
from multinet.cli import main


def test_plot_out_naming_a_file_and_plots_without_matplotlib(tmp_path, capsys, no_work,
                                                             monkeypatch):
    (tmp_path / "file").write_text("x")
    code = main(["plot", "no-checkpoint-needed.st", "--out", str(tmp_path / "file")])
    one_line_error(code, capsys.readouterr(), "--out", "is a file")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    code = main(["train", *DATA, "--plots", str(tmp_path / "plots")])
    one_line_error(code, capsys.readouterr(), "matplotlib")


def test_plot_replaces_only_pictures_never_its_checkpoint_and_no_special_file(
        small_checkpoint, tmp_path, capsys):
    """``plot --out DIR`` replaced whatever DIR held under the figures' names (a
    checkpoint named predictions.png, the very checkpoint it plotted)."""
    out = tmp_path / "out"
    out.mkdir()
    stray = out / "predictions.png"
    stray.write_bytes(small_checkpoint.read_bytes())
    os.mkfifo(tmp_path / "fifo")
    plot = ["plot", *DATA]
    one_line_error(main([*plot, str(small_checkpoint), "--out", str(out)]),
                   capsys.readouterr(), f"--out {stray}: exists and is not a PNG picture but "
                   "a checkpoint (safetensors)", "--force")
    one_line_error(main([*plot, str(stray), "--out", str(out), "--force"]),
                   capsys.readouterr(), f"--out {stray}: is the checkpoint plotted; writing "
                   "there would destroy it")
    one_line_error(main([*plot, str(small_checkpoint), "--out", str(tmp_path / "fifo")]),
                   capsys.readouterr(), "is a named pipe (FIFO), not a folder")
    assert stray.read_bytes() == small_checkpoint.read_bytes()
    assert main([*plot, str(small_checkpoint), "--out", str(out), "--force"]) == 0
    assert capsys.readouterr().out.split() == [str(out / name) for name in files.FIGURES]
    assert sorted(p.name for p in out.iterdir()) == sorted(files.FIGURES)
    assert all(files.file_kind((out / name).read_bytes()[:64]) == "png"
               for name in files.FIGURES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "out"]  # no lock left


def test_plot_a_cnn_checkpoint_writes_its_three_figures(cnn_checkpoint, mnist, tmp_path,
                                                         capsys):
    assert main(["plot", str(cnn_checkpoint), *data_args(mnist), "--out",
                 str(tmp_path / "out")]) == 0
    written = capsys.readouterr().out.split()
    assert [os.path.basename(p) for p in written] == list(files.FIGURES)
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in written)
