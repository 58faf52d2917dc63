"""ONNX export: the inference graph agrees with multinet on every test image, the training
graph continues a run as multinet does, and the command line fails in one line.

Checkpoints are trained here, briefly (20 steps on a slice of MNIST): agreement is about
the arithmetic of the exported graph, which does not depend on how good the network is.
"""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("ndonnx")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import helpers  # noqa: E402
from helpers import assert_one_line_error, data_args, run_cli  # noqa: E402
from multinet import checkpoint as ckpt  # noqa: E402
from multinet import export, optim, parity  # noqa: E402
from multinet.backends import onnx as onnx_backend  # noqa: E402
from multinet.cli import main  # noqa: E402
from multinet.catalog import dataset_spec  # noqa: E402
from multinet.data import split_indices  # noqa: E402
from multinet.errors import BackendUnavailable, MultinetError  # noqa: E402
from multinet.registry import get_backend  # noqa: E402
from multinet.training.config import TrainConfig  # noqa: E402
from multinet.training.loop import train  # noqa: E402
from multinet.training.steps import epoch_order  # noqa: E402

#: 20 steps of each preset on 2,200 training images (200 of them the dev split).
PRESET_RUNS = {"notebook": dict(epochs=20, dev_size=200),
               "mlp": dict(epochs=1, batch_size=100, dev_size=200)}


def _backend(name):
    try:
        return get_backend(name)
    except BackendUnavailable as exc:
        pytest.skip(f"{name}: {exc}")


def _save(tmp_path, name, config, backend, dataset):
    result = train(config, backend, dataset, progress=False)
    sha256 = dict(dataset_spec(dataset.name).content_sha256)
    return ckpt.save(tmp_path / f"{name}.safetensors", config, result.state, backend=backend,
                     dataset_name=dataset.name, dataset_sha256=sha256)


@pytest.fixture(scope="module", params=[(preset, backend) for preset in PRESET_RUNS
                                        for backend in ("numpy", "jax")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def trained(request, full_mnist, tmp_path_factory):
    """``(checkpoint, backend, model)``: a preset trained briefly on a backend, saved and
    loaded, and its inference graph (serialized)."""
    preset, name = request.param
    backend = _backend(name)
    config = TrainConfig.from_preset(preset, **PRESET_RUNS[preset])
    path = _save(tmp_path_factory.mktemp("ckpt"), f"{preset}-{name}", config, backend,
                 helpers.mnist_slice(full_mnist, 2200, 100))
    checkpoint = ckpt.load(path)
    return checkpoint, backend, export.inference_model(checkpoint)


def test_exported_model_agrees_with_multinet_on_every_test_image(trained, full_mnist):
    checkpoint, backend, model_bytes = trained
    assert onnx_backend.node_domains(model_bytes) == {""}  # standard operators only
    model = export.open_model(model_bytes)
    assert model.inputs == {"images": (("N", 28, 28), "tensor(uint8)")}
    assert {name: (shape[1:], kind) for name, (shape, kind) in model.outputs.items()} == {
        "logits": ((10,), "tensor(float)"), "labels": ((), "tensor(int64)")}

    images = full_mnist.test_images
    assert len(images) == 10_000
    own = export.multinet_outputs(checkpoint.params, backend, images, checkpoint.config.dtype)
    for batch_size in (1, 77, 10_000):
        logits, labels = export.run_inference(model, images, batch_size)
        assert logits.dtype == np.float32 and labels.dtype == np.int64
        np.testing.assert_array_equal(labels, own[1])
        assert parity.relative_error(logits, own[0]) <= export.LOGIT_TOLERANCE
        assert export.agreement((logits, labels), own)["agrees"]
    empty_logits, empty_labels = export.run_inference(model, images[:0])
    assert empty_logits.shape == (0, 10) and empty_labels.shape == (0,)


def test_metadata_carries_the_checkpoint(trained):
    checkpoint, backend, model_bytes = trained
    meta = export.open_model(model_bytes).metadata
    sizes = "784-10-10" if checkpoint.config.preset == "notebook" else "784-512-256-10"
    assert meta["multinet_graph"] == "inference" and meta["sizes"] == sizes
    assert meta["dataset"] == "mnist" and meta["trained_on"] == backend.name
    assert json.loads(meta["dataset_content_sha256"]) == dict(
        dataset_spec("mnist").content_sha256)
    assert float(meta["dev_accuracy"]) == checkpoint.metadata["history"][-1]["dev_accuracy"]
    assert meta["steps"] == "20" and meta["dtype"] == "float32"
    saved = json.loads(meta["checkpoint"])
    assert saved["config"] == checkpoint.metadata["config"]
    assert saved["multinet_version"] == meta["multinet_version"]
    assert set(json.loads(meta["exported_with"])) == {"ndonnx", "onnx", "onnxruntime"}


def test_docs_list_every_metadata_key_a_model_carries(small_checkpoint):
    """docs/export.md's metadata table: its first column's keys are exactly those of a
    training model (which carries every key the inference model does, and ``optimizer``)."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "export.md").read_text()
    table = page.split("\n## Metadata\n", 1)[1].split("\n## ", 1)[0]
    documented = {key for line in table.splitlines() if line.startswith("| `")
                  for key in re.findall(r"`(\w+)`", line.split("|")[1])}
    checkpoint = ckpt.load(small_checkpoint)
    inference = export.open_model(export.inference_model(checkpoint)).metadata
    training = export.open_model(export.training_model(checkpoint)).metadata
    assert set(inference) <= set(training)
    assert documented == set(training)


def test_a_float64_checkpoint_exports_float32_logits_of_float64_arithmetic(mnist, tmp_path):
    numpy = get_backend("numpy")
    config = TrainConfig.from_preset("notebook", epochs=5, dev_size=200, dtype="float64")
    checkpoint = ckpt.load(_save(tmp_path, "f64", config, numpy,
                                 helpers.mnist_slice(mnist, 1200, 100)))
    model = export.open_model(export.inference_model(checkpoint))
    images = mnist.test_images[:500]
    logits, labels = export.run_inference(model, images)
    own_logits, own_labels = export.multinet_outputs(checkpoint.params, numpy, images,
                                                     "float64")
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(labels, own_labels)
    # float64 arithmetic: the only error left is rounding the logits to float32 once.
    assert parity.relative_error(logits, own_logits) <= np.finfo(np.float32).eps


def _largest_stored_tensor(model_bytes):
    """Elements of the largest initializer or constant, subgraphs included."""
    import onnx

    sizes = [0]

    def walk(graph):
        sizes.extend(int(np.prod(t.dims)) for t in graph.initializer)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    sizes.append(int(np.prod(attribute.t.dims)))
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(
                        attribute.graphs):
                    walk(sub)

    walk(onnx.load_from_string(model_bytes).graph)
    return max(sizes)


# Each optimizer, in float32 and (once) float64, with a symbolic and a fixed batch.
TRAINING_CASES = [("sgd", "float32", None, dict(lr=0.1)),
                  ("momentum", "float32", 50, dict(lr=0.05)),
                  ("adam", "float32", None, dict(weight_decay=1e-4)),
                  ("adam", "float64", 50, {})]


@pytest.mark.parametrize("optimizer,dtype,batch_size,overrides", TRAINING_CASES,
                         ids=[f"{o}-{d}-{'B' if b is None else b}"
                              for o, d, b, _ in TRAINING_CASES])
def test_training_graph_continues_a_run_as_multinet_does(mnist, tmp_path, optimizer, dtype,
                                                        batch_size, overrides):
    numpy = get_backend("numpy")
    data = helpers.mnist_slice(mnist, 1200, 100)  # 1,000 training images: 20 batches of 50
    config = TrainConfig.from_preset("mlp", hidden=(32,), optimizer=optimizer, batch_size=50,
                                     epochs=1, dev_size=200, dtype=dtype, **overrides)
    checkpoint = ckpt.load(_save(tmp_path, "run", config, numpy, data))
    model_bytes = export.training_model(checkpoint, batch_size)
    model = export.open_model(model_bytes)
    expected_batch = "N" if batch_size is None else batch_size
    assert model.inputs["images"][0] == (expected_batch, 28, 28)
    # The parameters are inputs: simplification stored no tensor of a weight's size.
    assert _largest_stored_tensor(model_bytes) < checkpoint.params["W2"].size

    # multinet on NumPy continues the run for its second epoch: 20 more steps.
    continued = dataclasses.replace(checkpoint.config, epochs=2)
    reference = train(continued, numpy, data, progress=False, state=checkpoint.state_on(numpy))

    # The same 20 steps in onnxruntime: the epoch's batches and the schedule's rates.
    train_idx, _ = split_indices(len(data.train_labels), continued.dev_size, continued.seed)
    images = data.train_images[train_idx]
    labels = data.train_labels[train_idx].astype(np.int64)
    rows = epoch_order(len(train_idx), continued.batch_size, continued.seed, epoch=1)
    state = export.state_inputs(checkpoint)
    losses = []
    for i, row in enumerate(rows):
        lr = optim.learning_rate(continued.lr, continued.schedule, len(rows) + i,
                                 2 * len(rows))
        out = model.run({"images": images[row], "labels": labels[row],
                         "lr": np.asarray(lr, dtype=dtype), **state})
        losses.append(out["loss"])
        state = {name.removeprefix("next/"): value for name, value in out.items()
                 if name.startswith("next/")}
    params, opt_state = export.unflatten_state(state)

    steps = len(rows)
    assert steps == 20 and float(opt_state["t"]) == 40
    expected = {k: np.asarray(v) for k, v in reference.state.params.items()}
    assert all(params[k].dtype == np.dtype(dtype) for k in expected)
    assert parity.max_relative_error(params, expected) <= parity.tolerance(dtype, steps)
    if optimizer != "sgd":
        expected_m = {k: np.asarray(v) for k, v in reference.state.opt_state["m"].items()}
        assert parity.max_relative_error(opt_state["m"], expected_m) <= parity.tolerance(
            dtype, steps)
    assert abs(np.mean(losses) - reference.history[-1]["loss"]) <= parity.tolerance(
        dtype, steps) * reference.history[-1]["loss"]


def test_export_and_evaluate_from_the_command_line(full_mnist, tmp_path):
    numpy = get_backend("numpy")
    data = helpers.mnist_slice(full_mnist, 1200, 100)
    path = _save(tmp_path, "mlp", TrainConfig.from_preset(
        "mlp", hidden=(32,), epochs=1, batch_size=50, dev_size=200), numpy, data)
    other = _save(tmp_path, "other", TrainConfig.from_preset(
        "mlp", hidden=(32,), epochs=1, batch_size=50, dev_size=200, seed=1), numpy, data)
    model, step = tmp_path / "out" / "mlp.onnx", tmp_path / "out" / "step.onnx"
    exported = run_cli("export", str(path), "--onnx", str(model), "--onnx-train", str(step),
                       "--batch-size", "64")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.split() == [str(model), str(step)]
    assert export.open_model(step).inputs["images"][0] == (64, 28, 28)

    agree = run_cli("evaluate", str(model), "--against", str(path), *data_args(full_mnist))
    assert agree.returncode == 0, agree.stderr
    assert "test accuracy" in agree.stdout and "confusion matrix" in agree.stdout
    assert "agrees with" in agree.stdout and "10000 of 10000" in agree.stdout

    # Another network's outputs do not agree: exit 1, and the JSON says why.
    differ = run_cli("evaluate", str(model), "--against", str(other), "--json",
                     *data_args(full_mnist))
    assert differ.returncode == 1, differ.stderr
    report = json.loads(differ.stdout)
    assert report["test_samples"] == 10_000 and not report["against"]["agrees"]
    assert report["against"]["logit_error"] > export.LOGIT_TOLERANCE


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory, mnist):
    config = TrainConfig.from_preset("notebook", epochs=2, dev_size=200)
    return _save(tmp_path_factory.mktemp("small"), "small", config, get_backend("numpy"),
                 helpers.mnist_slice(mnist, 600, 100))


def test_bad_checkpoints_and_unwritable_outputs_are_one_line_errors(small_checkpoint,
                                                                    tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = str(tmp_path / "m.onnx")
    for args, fragment in (
            (["export", str(tmp_path / "missing.safetensors"), "--onnx", out],
             "no such checkpoint"),
            (["export", str(garbage), "--onnx", out], "garbage.safetensors"),
            (["export", str(small_checkpoint), "--onnx", str(blocker / "m.onnx")],
             f"--onnx {blocker / 'm.onnx'}"),
            (["export", str(small_checkpoint), "--onnx", out, "--onnx-train", str(tmp_path)],
             f"--onnx-train {tmp_path}"),
            (["export", str(small_checkpoint)], "--onnx"),
            (["export", str(small_checkpoint), "--onnx", out, "--batch-size", "8"],
             "--onnx-train"),
            (["evaluate", str(garbage.with_suffix(".onnx"))], "no such ONNX model"),
            (["evaluate", str(blocker), "--against", str(small_checkpoint)], "--against")):
        assert_one_line_error(run_cli(*args), fragment)
    assert not (tmp_path / "m.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "garbage.safetensors"]


def test_both_models_onto_one_file_is_refused_before_any_work(small_checkpoint, tmp_path):
    same = tmp_path / "m.onnx"
    result = run_cli("export", str(small_checkpoint), "--onnx", str(same), "--onnx-train",
                     str(tmp_path / "." / "m.onnx"))
    assert_one_line_error(result, "--onnx and --onnx-train name the same file")
    assert not same.exists()


@pytest.mark.parametrize("arguments, message", [
    (dict(), "nothing to export: give onnx=OUT.onnx, onnx_train=OUT.onnx, or both"),
    (dict(onnx="m.onnx", batch_size=8), "batch_size= fixes the training graph's batch: it "
                                        "needs onnx_train="),
    (dict(onnx_train="s.onnx", batch_size=0), "batch_size= must be an integer >= 1 (or "
                                              "None: any batch size), got 0"),
    (dict(onnx_train="s.onnx", batch_size=-5), "got -5"),
    (dict(onnx_train="s.onnx", batch_size="64"), "got '64'"),
    (dict(onnx_train="s.onnx", batch_size=True), "got True"),
    (dict(onnx_train="s.onnx", batch_size=1.5), "got 1.5"),
    (dict(onnx="m.onnx", onnx_train="./m.onnx"), "onnx= and onnx_train= name the same file"),
    (dict(onnx="a-file/m.onnx"), "onnx= a-file/m.onnx: "),
])
def test_export_from_python_names_its_arguments(small_checkpoint, tmp_path, monkeypatch,
                                                arguments, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(MultinetError, match=re.escape(message)) as info:
        export.export(small_checkpoint, **arguments)
    assert "--" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_file_that_is_no_model_is_a_one_line_error(small_checkpoint, tmp_path):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x08\x07 definitely not protobuf" * 4)
    assert_one_line_error(run_cli("evaluate", str(fake)), "onnxruntime cannot load it")
    # A training graph is an ONNX model, but not one that evaluate can run.
    step = export.write(export.training_model(ckpt.load(small_checkpoint)),
                        tmp_path / "step.onnx")
    assert_one_line_error(run_cli("evaluate", str(step)), "not a multinet inference model")


def test_an_overflowing_model_and_its_checkpoint_are_one_line_errors(tmp_path):
    """Weights of 1e30 export (the file is a valid model), but their logits are inf and
    NaN: ``evaluate`` reported labels read from them as accuracies, and ``--against``
    printed NumPy's overflow warnings and "logits relative error inf"."""
    from test_faults_checkpoint import M, _with_weights, write

    huge = write(tmp_path / "huge.st", _with_weights(1e30), M)
    model = tmp_path / "m.onnx"
    assert run_cli("export", str(huge), "--onnx", str(model)).returncode == 0
    sample = ["--data-dir", str(helpers.SAMPLE_MNIST), "--no-verify"]
    assert_one_line_error(run_cli("evaluate", str(model), *sample),
                          "logits are inf or NaN on 512 of 512 images")
    assert_one_line_error(run_cli("evaluate", str(model), "--against", str(huge), *sample),
                          "logits are inf or NaN")
    from multinet.evaluation import OutputsNotFinite

    images = np.full((3, 28, 28), 255, dtype=np.uint8)
    with pytest.raises(OutputsNotFinite, match="3 of 3 images"):  # multinet's own side
        export.multinet_outputs(ckpt.load(huge).params, get_backend("numpy"), images,
                                "float32")


def _main_result(argv, capsys):
    code = main(argv)
    return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


@pytest.mark.parametrize("library", ["ndonnx", "onnx", "onnxruntime"])
def test_without_the_extra_export_says_what_to_install(library, small_checkpoint, tmp_path,
                                                      monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, library, None)  # makes `import library` fail
    out = tmp_path / "m.onnx"
    result = _main_result(["export", str(small_checkpoint), "--onnx", str(out)], capsys)
    assert_one_line_error(result, library, "pip install 'multinet[onnx]'")
    assert not out.exists()


def test_without_onnxruntime_evaluate_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = _main_result(["evaluate", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(result, "onnxruntime", "pip install 'multinet[onnx]'")


def test_the_core_imports_no_onnx_library():
    code = ("import sys, multinet.export, multinet.cli; "
            "print(sorted(m for m in ('ndonnx', 'onnx', 'onnxruntime', 'spox') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
