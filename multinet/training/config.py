"""What a training run is asked to do: the presets and every hyperparameter, checked.

``TrainConfig`` is one half of what a checkpoint holds (the other is ``TrainState``):
it is written to the checkpoint as JSON and read back with ``TrainConfig.from_dict``, so
every field is a plain JSON type and every value is checked when it is made, from
Python, from the command line or from a file. ``RANGES`` is where each number's range is
stated, once: the command line's options take theirs from it.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import asdict, dataclass

from multinet import optim
from multinet.catalog import CLASSES
from multinet.checks import (NON_NEGATIVE, NON_NEGATIVE_INTEGER, POSITIVE, POSITIVE_INTEGER,
                             Range, is_integer)
from multinet.errors import InvalidArgument, argument
from multinet.data import IMAGE_SHAPE
from multinet.initializers import SCHEMES
from multinet.layers import Layer, parse_layers, shapes
from multinet.network import mlp_layers
from multinet.registry import DTYPES

#: Inputs of the first layer: 28 x 28 pixels, the image size of every dataset in
#: ``multinet.catalog.DATASETS``.
FEATURES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

#: LeNet-5's sizes (LeCun et al. 1998: 6 and 16 feature maps of 5 x 5 kernels, then 120
#: and 84 units), with ReLU and max-pooling for its tanh and trained subsampling, and a
#: ``same`` first convolution for its 32 x 32 padded input: 61,706 weights, 99.10% on
#: MNIST's test set after the preset's 10 epochs on JAX (docs/cnn.md).
CNN_LAYERS = ("conv:6:5x5:same", "relu", "maxpool:2", "conv:16:5x5:valid", "relu",
              "maxpool:2", "flatten", "dense:120", "relu", "dense:84", "relu")

PRESETS = {
    # The notebook: 784-10-10, uniform(-0.5, 0.5) init, full-batch gradient descent.
    "notebook": dict(hidden=(10,), lr=0.2, optimizer="sgd", batch_size=0, epochs=500,
                     init="uniform", schedule="constant", log_every=10),
    # A stronger MLP: 784-512-256-10, He init, Adam with a cosine-decayed learning rate.
    "mlp": dict(hidden=(512, 256), lr=1e-3, optimizer="adam", batch_size=128, epochs=10,
                init="he", schedule="cosine", log_every=1),
    # LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling; He init, Adam, cosine.
    "cnn": dict(hidden=(), layers=CNN_LAYERS, lr=1e-3, optimizer="adam", batch_size=128,
                epochs=10, init="he", schedule="cosine", log_every=1),
}

#: The hyperparameters ``fit`` takes as keywords over the preset's values, by the names of
#: the ``multinet train`` options (``iterations`` is ``epochs`` for a full-batch run).
HYPERPARAMETERS = ("hidden", "layers", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                   "batch_size", "epochs", "iterations", "seed", "dtype", "init",
                   "log_every", "dev_size")

#: The range of every number (``hidden``: of each width).
RANGES = {
    "hidden": POSITIVE_INTEGER,
    "lr": POSITIVE,
    # mu >= 1 makes the velocity a sum that never forgets: it grows without bound.
    "momentum": Range(0, 1),
    "weight_decay": NON_NEGATIVE,
    "batch_size": NON_NEGATIVE_INTEGER,
    "epochs": NON_NEGATIVE_INTEGER,
    "iterations": NON_NEGATIVE_INTEGER,
    "seed": NON_NEGATIVE_INTEGER,
    "dev_size": NON_NEGATIVE_INTEGER,
    "log_every": POSITIVE_INTEGER,
}


def epochs_given(overrides: dict) -> int | None:
    """The number of epochs among ``fit``'s keyword arguments: ``epochs``, or
    ``iterations`` (its name for full-batch runs), or None where neither is given.
    Raises ``InvalidArgument`` for both at once, or a count that is not an integer."""
    epochs, iterations = overrides.get("epochs"), overrides.get("iterations")
    if epochs is not None and iterations is not None:
        raise InvalidArgument(f"{argument('iterations')} and {argument('epochs')} are the "
                              "same count (passes over the training set); give one")
    name, count = ("epochs", epochs) if epochs is not None else ("iterations", iterations)
    if count is not None and not is_integer(count):
        raise InvalidArgument(f"{argument(name)} must be an integer, got {count!r}")
    if count is not None and count not in RANGES["epochs"]:  # named as given
        raise InvalidArgument(f"{argument(name)} must be {RANGES['epochs']}, got {count}")
    return count


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters. The defaults are the notebook preset.

    Making one checks every field: its type (``TypeError`` naming the field: a bool, a
    fraction where a count is wanted, text where a number is) and its value
    (``ValueError``: a range of ``RANGES``, or a name that is not a choice).
    """

    preset: str = "notebook"
    #: The widths of a multilayer perceptron's hidden layers (dense, each with ReLU).
    hidden: tuple[int, ...] = (10,)
    #: Or the hidden layers as text (``multinet.layers.parse_layer``), when ``hidden``
    #: is empty: any stack of dense, conv, pooling, flatten and ReLU layers.
    layers: tuple[str, ...] = ()
    lr: float = 0.2
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    #: Images per step; 0 means the full training set (one step per epoch).
    batch_size: int = 0
    #: Passes over the training set; with ``batch_size=0``, gradient-descent iterations.
    epochs: int = 500
    seed: int = 0
    dtype: str = "float32"
    dev_size: int = 1000
    init: str = "uniform"
    #: Epochs between log records (progress bar, metrics, divergence check).
    log_every: int = 10

    def __post_init__(self):
        self._normalise_types()
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose {', '.join(PRESETS)}")
        for name, allowed in RANGES.items():
            if name == "hidden":
                if any(width not in allowed for width in self.hidden):
                    raise ValueError(f"hidden must be a list of widths, each {allowed}, "
                                     f"got {self.hidden}")
            elif name != "iterations":
                allowed.check(name, getattr(self, name))
        if self.schedule not in optim.SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.init not in SCHEMES:
            raise ValueError(f"unknown init {self.init!r}; choose {', '.join(SCHEMES)}")
        self.optimizer_spec()  # validates the optimizer fields
        if bool(self.hidden) == bool(self.layers):
            raise ValueError("give the network as hidden (the widths of a multilayer "
                             "perceptron) or as layers, one of them" if not self.hidden else
                             "hidden and layers both describe the network; give one")
        stack = self.network_layers()  # validates each layer's text and the stack
        if self.layers:  # kept as canonical text ("conv:6:5x5:valid" for "conv:6:5")
            object.__setattr__(self, "layers", tuple(map(str, stack[:-1])))

    def network_layers(self) -> tuple[Layer, ...]:
        """The whole network as ``Layer`` records, the output layer (``dense:10``)
        included: ``layers``, or the perceptron of ``hidden``. Raises ``ValueError``
        for layers that do not fit together on 28 x 28 images."""
        if self.hidden:
            return mlp_layers(self.hidden, CLASSES)
        try:
            stack = (*parse_layers(self.layers), Layer("dense", CLASSES))
            shapes(stack, FEATURES)
        except ValueError as error:
            raise ValueError(f"layers: {error}") from None
        return stack

    def describe_network(self) -> str:
        """``"784-512-256-10"`` for a perceptron, the layers as text otherwise."""
        if self.hidden:
            return "-".join(map(str, (FEATURES, *self.hidden, CLASSES)))
        return ", ".join(map(str, self.network_layers()))

    def _normalise_types(self) -> None:
        """Every field as the plain Python type of its default (``int`` from a NumPy
        integer, ``float`` from an ``int``, ``hidden`` a tuple of ints), so a configuration
        always writes as JSON and reads back from its own checkpoint. Any other type (a
        bool, a fraction where a count is wanted, text where a number is, ``hidden="32"``)
        raises ``TypeError`` naming the field: before the work, not at its first save."""
        for spec in dataclasses.fields(self):
            name, value, default = spec.name, getattr(self, spec.name), spec.default
            if name == "hidden":
                try:
                    items = None if isinstance(value, (str, bytes)) else tuple(value)
                except TypeError:  # not iterable
                    items = None
                if items is None or not all(map(is_integer, items)):
                    raise TypeError(f"hidden must be a sequence of integers (one width per "
                                    f"hidden layer), got {value!r}")
                value = tuple(int(h) for h in items)
            elif name == "layers":
                if isinstance(value, str):  # "conv:6:5x5, relu" from one option
                    value = [part for part in value.split(",") if part.strip()]
                if not isinstance(value, (list, tuple)) or not all(
                        isinstance(layer, (str, Layer)) for layer in value):
                    raise TypeError(f"layers must be a list of layer texts such as "
                                    f"['conv:6:5x5', 'relu'], got {value!r}")
                # Its text is checked with the values, below (a ValueError).
                value = tuple(str(layer) for layer in value)
            elif isinstance(default, str):
                if not isinstance(value, str):
                    raise TypeError(f"{name} must be a string, got {value!r}")
            elif isinstance(default, int):
                if not is_integer(value):
                    raise TypeError(f"{name} must be an integer, got {value!r}")
                value = int(value)
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise TypeError(f"{name} must be a number, got {value!r}")
                try:
                    value = float(value)
                except OverflowError:  # an integer too large: the range checks refuse it
                    pass
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, values) -> TrainConfig:
        """A configuration from JSON (a checkpoint's): exactly the fields, each of its
        JSON type (an integer where one is expected, never a boolean), then the value
        checks above. Raises ``ValueError`` naming the field."""
        if not isinstance(values, dict):
            raise ValueError(f"expected an object, got {type(values).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        # A perceptron's configuration is written without ``layers`` (as before there
        # were any), so older checkpoints and new ones read the same way.
        values = {"layers": [], **values}
        missing, unknown = set(fields) - set(values), set(values) - set(fields)
        if missing or unknown:
            raise ValueError(", ".join([*(f"{k} missing" for k in sorted(missing)),
                                        *(f"unknown field {k!r}" for k in sorted(unknown))]))
        for name, value in values.items():
            kind = (list if name == "hidden" else tuple if name == "layers" else
                    type(getattr(cls, name, None)))
            ok = (isinstance(value, str) if kind is str else
                  is_integer(value) if kind is int else
                  (is_integer(value) or isinstance(value, float)) if kind is float else
                  isinstance(value, list) and all(map(is_integer, value)) if kind is list else
                  isinstance(value, list) and all(isinstance(v, str) for v in value))
            if not ok:
                wanted = {str: "a string", int: "an integer", float: "a number",
                          list: "a list of integers", tuple: "a list of strings"}[kind]
                raise ValueError(f"{name} must be {wanted}, got {json.dumps(value)[:40]}")
        return cls(**values)

    @classmethod
    def from_preset(cls, preset: str = "notebook", **overrides) -> TrainConfig:
        """The preset's values, then every override that is not None."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        values = {**PRESETS[preset], **chosen}
        # Either one describes the whole network: giving one replaces the preset's other.
        if "hidden" in chosen and "layers" not in chosen:
            values["layers"] = ()
        elif "layers" in chosen and "hidden" not in chosen:
            values["hidden"] = ()
        return cls(preset=preset, **values)

    def optimizer_spec(self) -> optim.Optimizer:
        return optim.Optimizer(self.optimizer, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    def to_dict(self) -> dict:
        values = {**asdict(self), "hidden": list(self.hidden), "layers": list(self.layers)}
        if not self.layers:
            del values["layers"]  # a perceptron's, as before there were layers
        return values

    def describe_step(self) -> str:
        """The hyperparameters that decide how far a step goes, as set for this run:
        ``"optimizer momentum, lr 0.05 (cosine schedule), momentum 0.99, batch size 64"``."""
        parts = [f"optimizer {self.optimizer}", f"lr {self.lr:g} ({self.schedule} schedule)"]
        if self.optimizer == "momentum":
            parts.append(f"momentum {self.momentum:g}")
        if self.weight_decay:
            parts.append(f"weight decay {self.weight_decay:g}")
        parts.append(f"batch size {self.batch_size}" if self.batch_size else "full batch")
        return ", ".join(parts)
