"""``multinet evaluate`` as a user reads it: the per-class table, and what an exported
model (``evaluate MODEL.onnx``) does with ``--backend``. Agreement with ``--against``
and the checks of a model file are in test_cli_export.py and test_export.py."""

import json
import re

import pytest

import multinet
from helpers import assert_one_line_error, data_args, run_cli
from multinet.cli import main
from multinet.commands import evaluate


def _rows(text):
    """The table's rows: ``(label, accuracy, counts)``, read from evaluate's text."""
    rows = []
    for line in text.splitlines():
        found = re.fullmatch(r"(\d+(?: \S.*?)?)\s+(\d\.\d{4})  ((?:\s*\d+){10})", line)
        if found:
            rows.append((found[1], float(found[2]), [int(n) for n in found[3].split()]))
    return rows


def test_the_per_class_table_names_each_class_once(small_checkpoint, mnist):
    """MNIST's classes are named by their digits: the table printed ``0 0   0.9908``."""
    result = run_cli("evaluate", str(small_checkpoint), *data_args(mnist))
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert [label for label, _, _ in rows] == [str(i) for i in range(10)]
    assert sum(sum(counts) for _, _, counts in rows) == len(mnist.test_labels)
    header = next(line for line in result.stdout.splitlines() if "accuracy" in line
                  and "test accuracy" not in line)
    assert header.split() == ["class", "accuracy", *map(str, range(10))]


def test_classes_with_names_show_the_number_and_the_name(capsys):
    report = {"per_class_accuracy": [0.5] * 10,
              "confusion_matrix": [[1 if i == j else 0 for j in range(10)]
                                   for i in range(10)]}
    evaluate._print_per_class("fashion-mnist", report)
    rows = _rows(capsys.readouterr().out)
    assert [label for label, _, _ in rows][:2] == ["0 T-shirt/top", "1 Trouser"]
    assert len(rows) == 10


def test_backend_for_an_onnx_model_needs_against(small_checkpoint, mnist, tmp_path):
    """The model runs in onnxruntime; ``--backend`` only says where ``--against``'s
    checkpoint runs, and was ignored without a word."""
    pytest.importorskip("ndonnx")
    pytest.importorskip("onnxruntime")
    model = tmp_path / "m.onnx"
    assert run_cli("export", str(small_checkpoint), "--onnx", str(model)).returncode == 0
    assert_one_line_error(run_cli("evaluate", str(model), "--backend", "numpy",
                                  *data_args(mnist)),
                          "--backend chooses where multinet runs the --against checkpoint",
                          "give --against CKPT, or leave --backend out")
    both = run_cli("evaluate", str(model), "--backend", "numpy", "--against",
                   str(small_checkpoint), *data_args(mnist))
    assert both.returncode == 0, both.stderr
    assert "agrees with" in both.stdout and "on backend numpy" in both.stdout


def test_a_checkpoint_named_onnx_is_read_as_the_checkpoint_it_is(small_checkpoint, mnist,
                                                                 tmp_path):
    """``evaluate ckpt.onnx`` refused a real checkpoint as 'not an ONNX model' (the
    suffix decided), where plot, export and --resume took it: its bytes decide."""
    named = tmp_path / "ckpt.onnx"
    named.write_bytes(small_checkpoint.read_bytes())
    plain = run_cli("evaluate", str(small_checkpoint), *data_args(mnist))
    result = run_cli("evaluate", str(named), *data_args(mnist))
    assert result.returncode == 0, result.stderr
    assert result.stdout == plain.stdout.replace(str(small_checkpoint), str(named))
    predicted = run_cli("predict", str(named), "--index", "3", *data_args(mnist))
    assert predicted.returncode == 0, predicted.stderr


def test_evaluate_a_cnn_checkpoint_reports_what_its_run_measures(cnn_checkpoint, mnist, capsys):
    assert main(["evaluate", str(cnn_checkpoint), *data_args(mnist), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    measured = multinet.load(cnn_checkpoint).evaluate(mnist)
    assert printed["test_samples"] == len(mnist.test_labels) > 0
    assert printed["test_accuracy"] == measured["test_accuracy"] > 0.4  # chance: 0.1
    assert printed["confusion_matrix"] == measured["confusion_matrix"]
