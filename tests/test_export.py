"""ONNX export (``multinet/export.py``): the inference graph agrees with multinet on
every test image, its metadata carries the checkpoint (every key docs/export.md lists),
the training graph continues a run as multinet does, ``export`` names its bad arguments
as Python arguments, and the core imports no ONNX library.

Checkpoints are trained here, briefly (20 steps on a slice of MNIST): agreement is about
the arithmetic of the exported graph, which does not depend on how good the network is.
The command line is in test_cli_export.py.
"""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ndonnx")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import helpers  # noqa: E402
from helpers import train_and_save  # noqa: E402
from multinet import checkpoint as ckpt  # noqa: E402
from multinet import export, optim, parity  # noqa: E402
from multinet.backends import onnx as onnx_backend  # noqa: E402
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


@pytest.fixture(scope="module", params=[(preset, backend) for preset in PRESET_RUNS
                                        for backend in ("numpy", "jax")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def trained(request, full_mnist, tmp_path_factory):
    """``(checkpoint, backend, model)``: a preset trained briefly on a backend, saved and
    loaded, and its inference graph (serialized)."""
    preset, name = request.param
    backend = _backend(name)
    config = TrainConfig.from_preset(preset, **PRESET_RUNS[preset])
    path = train_and_save(tmp_path_factory.mktemp("ckpt"), f"{preset}-{name}", config, backend,
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
    checkpoint = ckpt.load(train_and_save(tmp_path, "f64", config, numpy,
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
    checkpoint = ckpt.load(train_and_save(tmp_path, "run", config, numpy, data))
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


def test_the_core_imports_no_onnx_library():
    code = ("import sys, multinet.export, multinet.cli; "
            "print(sorted(m for m in ('ndonnx', 'onnx', 'onnxruntime', 'spox') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
