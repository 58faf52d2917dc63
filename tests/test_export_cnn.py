"""ONNX export of a convolutional network (``multinet/export.py``): the graphs are traced
from the same layer functions with the checkpoint's layers, use standard ONNX operators
only, and agree with multinet in onnxruntime (labels equal, logits and a training step
within the parity tolerance); a model's metadata records its layers, and a model or
checkpoint that does not fit them is refused.

Small networks keep this cheap: ``helpers.TINY_CNN`` trained briefly (``tiny``), and
``RICH``, drawn weights of a stack that takes every path of the layers (both paddings,
an even kernel, both pools, windows that do not tile the image, a convolution below a
pool, whose input gradient is then needed).
"""

import dataclasses
import json
import re

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
from multinet.data import flatten, scale_images  # noqa: E402
from multinet.errors import OutputsNotFinite  # noqa: E402
from multinet.layers import param_shapes  # noqa: E402
from multinet.registry import get_backend  # noqa: E402
from multinet.training.config import FEATURES, TrainConfig  # noqa: E402
from multinet.training.steps import make_step  # noqa: E402

#: 28x28x1 -> 28x28x2 -> 9x9x2 (a row and a column dropped) -> 9x9x3 -> 4x4x3 (dropped
#: again) -> 48 -> 10.
RICH = ("conv:2:3x3:same", "relu", "maxpool:3", "conv:3:2x2:same", "relu", "avgpool:2",
        "flatten")


@pytest.fixture(scope="module")
def tiny(mnist, tmp_path_factory):
    """``(checkpoint, model bytes)``: ``helpers.TINY_CNN`` trained for 40 Adam steps (lr
    0.01) on 1,000 images on NumPy, exported by ``export.export`` (the checks, the
    tracing and the atomic write of ``multinet export``). Trained, because a network
    barely trained has near-ties that rounding alone decides (measured: one test image's
    two largest logits 1.5e-8 apart at 19% accuracy); this one (1 to 2 s, 75% test
    accuracy) has none closer than 1.4e-4, and its exported logits are within 3.8e-6 of
    multinet's."""
    folder = tmp_path_factory.mktemp("cnn")
    config = TrainConfig.from_preset("cnn", layers=helpers.TINY_CNN, lr=1e-2, batch_size=50,
                                     epochs=2, dev_size=200)
    saved = train_and_save(folder, "tiny", config, get_backend("numpy"),
                           helpers.mnist_slice(mnist, 1200, 100))
    assert export.export(saved, onnx=folder / "cnn.onnx") == [folder / "cnn.onnx"]
    return ckpt.load(saved), (folder / "cnn.onnx").read_bytes()


def _rich(checkpoint, seed=0):
    """``checkpoint`` made into ``RICH`` (config and metadata too), its weights drawn
    ``N(0, 2 / fan_in)`` and its biases ``N(0, 0.1 ** 2)``, Adam's state fresh."""
    config = dataclasses.replace(checkpoint.config, layers=RICH)
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config.network_layers(), FEATURES).items():
        scale = np.sqrt(2 / np.prod(shape[:-1])) if name[0] == "W" else 0.1
        params[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    return dataclasses.replace(checkpoint, config=config, params=params,
                               opt_state=optim.init_state(config.optimizer_spec(), params),
                               metadata={**checkpoint.metadata, "config": config.to_dict()})


def _own(checkpoint, images):
    """``(logits, labels)`` of multinet on NumPy."""
    return export.multinet_outputs(checkpoint.params, get_backend("numpy"), images, "float32",
                                   layers=checkpoint.config.network_layers())


def test_an_exported_cnn_gives_multinet_s_labels_on_all_10000_test_images(tiny, full_mnist):
    checkpoint, model_bytes = tiny
    model = export.open_model(model_bytes)
    images = full_mnist.test_images
    assert len(images) == 10_000
    logits, labels = export.run_inference(model, images)
    own = _own(checkpoint, images)
    np.testing.assert_array_equal(labels, own[1])
    assert parity.relative_error(logits, own[0]) <= export.LOGIT_TOLERANCE
    assert np.mean(labels == full_mnist.test_labels) > 0.6  # chance: 0.1


def test_an_exported_cnn_uses_standard_operators_and_records_its_layers(tiny):
    checkpoint, model_bytes = tiny
    assert onnx_backend.node_domains(model_bytes) == {""}
    model = export.open_model(model_bytes)
    assert model.inputs == {"images": (("N", 28, 28), "tensor(uint8)")}
    export.check_inference_contract(model)
    assert model.metadata["sizes"] == "conv:2:3x3:valid, relu, maxpool:2, flatten, dense:10"
    assert model.metadata["sizes"] == checkpoint.config.describe_network()
    saved = json.loads(model.metadata["checkpoint"])["config"]
    assert saved["layers"] == list(checkpoint.config.layers) and saved["hidden"] == []


def test_a_cnn_s_graphs_agree_with_multinet_at_every_layer_path(tiny, mnist):
    """``RICH``'s inference graph on the test images, batch by batch, one image and
    none; its training graph for three Adam steps (fixed batch of 20) against
    ``make_step`` on NumPy with the same batches: parameters, Adam's moments and the
    losses within the parity tolerance for three steps and the longest sum."""
    checkpoint = _rich(tiny[0])
    model = export.open_model(export.inference_model(checkpoint))
    export.check_inference_contract(model)
    images = mnist.test_images[:300]
    own = _own(checkpoint, images)
    for batch_size in (1, 64, 300):
        logits, labels = export.run_inference(model, images, batch_size)
        np.testing.assert_array_equal(labels, own[1])
        assert parity.relative_error(logits, own[0]) <= export.LOGIT_TOLERANCE
    assert export.run_inference(model, images[:0])[0].shape == (0, 10)

    batch, steps, lr = 20, 3, 1e-3
    step_bytes = export.training_model(checkpoint, batch_size=batch)
    assert onnx_backend.node_domains(step_bytes) == {""}
    step_model = export.open_model(step_bytes)
    layers = checkpoint.config.network_layers()
    step = make_step(checkpoint.config.optimizer_spec(), layers=layers)
    state = export.state_inputs(checkpoint)
    params, opt_state = checkpoint.params, checkpoint.opt_state
    for i in range(steps):
        x, y = mnist.train_images[i * batch:(i + 1) * batch], mnist.train_labels[
            i * batch:(i + 1) * batch].astype(np.int64)
        out = step_model.run({"images": x, "labels": y, "lr": np.asarray(lr, np.float32),
                              **state})
        state = {n.removeprefix("next/"): v for n, v in out.items() if n.startswith("next/")}
        params, opt_state, loss, _ = step(params, opt_state,
                                          scale_images(flatten(x), np.float32), y,
                                          np.float32(lr))
        assert abs(out["loss"] - loss) <= parity.tolerance("float32", i) * abs(loss)
    length = parity.reduction_lengths(layers, FEATURES, batch)["backward"]
    bound = parity.tolerance("float32", steps, length)
    exported_params, exported_state = export.unflatten_state(state)
    assert float(exported_state["t"]) == steps
    assert parity.max_relative_error(exported_params, params) <= bound
    for moment in ("m", "v"):
        assert parity.max_relative_error(exported_state[moment], opt_state[moment]) <= bound
    assert parity.max_relative_error(exported_params, checkpoint.params) > 100 * bound  # moved


def _with(model_bytes, change):
    import onnx

    model = onnx.load_from_string(model_bytes)
    change(model)
    return export.open_model(model.SerializeToString())


def _nan_kernel(model):
    """NaN in the first convolution's kernel (3 x 3 x 1 x 2, or folded to 9 x 2)."""
    from onnx import numpy_helper

    tensor = next(t for t in model.graph.initializer if np.prod(t.dims) == 18)
    value = numpy_helper.to_array(tensor).copy()
    value.flat[0] = np.nan
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))


def _sizes(text):
    def change(model):
        next(p for p in model.metadata_props if p.key == "sizes").value = text
    return change


@pytest.mark.parametrize("change, message", [
    (_nan_kernel, "holds NaN or infinite values"),
    (_sizes("784-10-10"), "sizes '784-10-10'"),
], ids=["nan-kernel", "perceptron-sizes"])
def test_a_tampered_cnn_model_is_refused(tiny, change, message):
    with pytest.raises(onnx_backend.ModelError, match=re.escape(message)):
        export.check_inference_contract(_with(tiny[1], change))


def test_a_cnn_whose_forward_pass_can_overflow_is_not_exported(tiny, tmp_path):
    checkpoint = tiny[0]
    huge = dataclasses.replace(checkpoint, params={**checkpoint.params,
                                                   "W1": np.full_like(checkpoint.params["W1"],
                                                                      1e38)})
    with pytest.raises(OutputsNotFinite, match="too large for float32: layer 1 "):
        export.export(huge, onnx=tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())
    export.check_exportable(checkpoint)
