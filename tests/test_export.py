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


def test_an_inference_graph_can_take_its_weights_as_inputs(small_checkpoint, mnist):
    checkpoint = ckpt.load(small_checkpoint)
    model_bytes = export.inference_model(checkpoint, weights_as_inputs=True)
    model = export.open_model(model_bytes)
    names = ["params/W1", "params/b1", "params/W2", "params/b2"]
    assert list(model.inputs) == ["images", *names]
    assert [model.inputs[n][0] for n in names] == [(784, 10), (10,), (10, 10), (10,)]
    assert _largest_stored_tensor(model_bytes) < checkpoint.params["W2"].size
    images = mnist.test_images[:300]
    own = export.open_model(export.inference_model(checkpoint)).run({"images": images})
    weights = {f"params/{k}": v for k, v in checkpoint.params.items()}
    out = model.run({"images": images, **weights})
    np.testing.assert_array_equal(out["labels"], own["labels"])
    assert parity.relative_error(out["logits"], own["logits"]) <= parity.tolerance("float32")
    # Other weights, another network: what the inputs say is what runs.
    other = {k: (v[::-1] * 0.5).astype(np.float32) for k, v in checkpoint.params.items()}
    logits, labels = export.multinet_outputs(other, get_backend("numpy"), images, "float32")
    out = model.run({"images": images, **{f"params/{k}": v for k, v in other.items()}})
    np.testing.assert_array_equal(out["labels"], labels)
    assert parity.relative_error(out["logits"], logits) <= parity.tolerance("float32")


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
    (dict(onnx="a-file/m.onnx"), "onnx='a-file/m.onnx': "),
])
def test_export_from_python_names_its_arguments(small_checkpoint, tmp_path, monkeypatch,
                                                arguments, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(MultinetError, match=re.escape(message)) as info:
        export.export(small_checkpoint, **arguments)
    assert "--" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


# --- A model read is checked as a checkpoint is; weights that overflow are not exported ---

def _tampered(model_bytes, change):
    """``model_bytes`` edited with the onnx package by ``change(model)``: the way anyone
    can rewrite a model file."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    change(model)
    return model.SerializeToString()


def _first_weight(model):
    import onnx

    return next(t for t in model.graph.initializer
                if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2)


def _poison(value, count):
    """Write ``value`` into the first ``count`` entries of the first weight matrix."""
    from onnx import numpy_helper

    def change(model):
        tensor = _first_weight(model)
        array = numpy_helper.to_array(tensor).copy()
        array.flat[:count] = value
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return change


def _metadata(**changes):
    def change(model):
        import onnx

        props = {p.key: p.value for p in model.metadata_props}
        props.update(changes)
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, {k: v for k, v in props.items() if v is not None})
    return change


def _checkpoint_config(**config):
    def change(model):
        props = {p.key: p for p in model.metadata_props}
        saved = json.loads(props["checkpoint"].value)
        saved["config"].update(config)
        props["checkpoint"].value = json.dumps(saved)
    return change


def _extra_float_constant(model):
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.ones(7, np.float32), "spare"))


@pytest.mark.parametrize("change, message", [
    (_poison(np.nan, 1000), "holds NaN or infinite values"),
    (_poison(np.inf, 1), "holds NaN or infinite values"),
    (_poison(-np.inf, 1), "holds NaN or infinite values"),
    (_extra_float_constant, "it stores weights shaped"),
    (_metadata(sizes="784-20-10"), "sizes '784-20-10'"),
    (_metadata(dtype="float64"), "dtype 'float64'"),
    (_metadata(multinet_graph="train_step"), "multinet_graph is 'train_step'"),
    (_metadata(checkpoint=None), "its metadata"),
    (_metadata(checkpoint="[1, 2]"), "its metadata"),
    (_metadata(dataset="imagenet"), "dataset 'imagenet'"),
    (_checkpoint_config(dtype="float16"), "its metadata: "),
    (_checkpoint_config(hidden=[20]), "sizes"),
], ids=["nan-weights", "inf-weight", "minus-inf-weight", "extra-constant", "sizes", "dtype",
        "graph", "no-checkpoint", "checkpoint-not-object", "dataset", "config-dtype",
        "config-hidden"])
def test_a_tampered_model_is_refused_as_a_checkpoint_is(small_checkpoint, mnist, change,
                                                        message):
    """A model rewritten with the onnx package, 1,000 NaN weights above all: ReLU turns
    NaN pre-activations into 0, so the logits stay finite and the model was evaluated
    (test accuracy 0.1135, every image a 1)."""
    good = export.inference_model(ckpt.load(small_checkpoint))
    model = export.open_model(_tampered(good, change))
    with pytest.raises(onnx_backend.ModelError, match=re.escape(message)) as info:
        export.evaluate_model(model, mnist)
    assert str(info.value).startswith("the model: not a") and "\n" not in str(info.value)
    with pytest.raises(onnx_backend.ModelError, match=re.escape(message)):
        export.run_inference(model, mnist.test_images[:5])
    export.check_inference_contract(export.open_model(good))  # the untouched model passes


def test_a_tampered_model_file_is_one_line_from_evaluate_and_predict(small_checkpoint,
                                                                      mnist, tmp_path):
    good = export.inference_model(ckpt.load(small_checkpoint))
    path = tmp_path / "nan.onnx"
    path.write_bytes(_tampered(good, _poison(np.nan, 1000)))
    for command in (["evaluate", str(path)], ["predict", str(path), "--index", "0"]):
        result = helpers.run_cli(*command, *helpers.data_args(mnist))
        helpers.assert_one_line_error(
            result, f"{path}: not a valid multinet model: ", "holds NaN or infinite values")
        assert not result.stdout


def test_a_model_path_that_is_no_regular_file_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)  # opened for reading, it would wait for a writer forever
    for path, message in ((fifo, r"is a named pipe \(FIFO\), not an ONNX model"), (tmp_path, "is a folder"),
                          (tmp_path / "none.onnx", "no such ONNX model file")):
        with pytest.raises(onnx_backend.ModelError, match=message):
            export.open_model(path)


def test_a_model_keeping_its_weights_in_another_file_is_refused(small_checkpoint, tmp_path):
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load_from_string(export.inference_model(ckpt.load(small_checkpoint)))
    convert_model_to_external_data(model, location="weights.bin", size_threshold=1024)
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(onnx_backend.ModelError, match="in another file"):
        export.open_model(tmp_path / "m.onnx")


def test_weights_whose_forward_pass_can_overflow_are_not_exported(tmp_path):
    """``evaluate``, ``predict`` and ``plot`` refuse weights of 1e30 (their forward pass
    overflows float32); ``export`` wrote a model of them, whose every answer was read from
    inf and NaN logits."""
    from multinet.errors import OutputsNotFinite

    huge = helpers.write(tmp_path / "huge.st", helpers.with_weights(1e30), helpers.M)
    with pytest.raises(OutputsNotFinite, match="weights are too large for float32: layer 2"):
        export.export(huge, onnx=tmp_path / "m.onnx", onnx_train=tmp_path / "s.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.st"]
    # float64 weights whose logits fit float64 but not the model's float32 logits.
    tensors, metadata = helpers.valid_parts(dtype="float64")
    big = {k: np.full_like(v, 1e18) if k.startswith("params/") else v
           for k, v in tensors.items()}
    f64 = helpers.write(tmp_path / "f64.st", big, metadata)
    with pytest.raises(OutputsNotFinite, match="too large for float32 logits: layer 2"):
        export.export(f64, onnx=tmp_path / "m.onnx")
    ordinary = {k: np.full_like(v, 1e-3) if k.startswith("params/") else v
                for k, v in tensors.items()}
    export.check_exportable(ckpt.load(helpers.write(tmp_path / "ok.st", ordinary, metadata)))


def test_the_core_imports_no_onnx_library():
    code = ("import sys, multinet.export, multinet.cli; "
            "print(sorted(m for m in ('ndonnx', 'onnx', 'onnxruntime', 'spox') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
