"""Training: full-batch gradient descent, as in the notebook this project grew from.

The data are moved to the device once; the loop only reads a loss back to the host when
the progress bar is refreshed (every ``log_every`` iterations).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from multinet import network
from multinet.data import CLASSES, Dataset, flatten, scale_images, split_indices
from multinet.initializers import init_params
from multinet.registry import Backend


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters. The defaults are the notebook's run (784-10-10, lr 0.2, 500 steps)."""

    hidden: tuple[int, ...] = (10,)
    lr: float = 0.2
    iterations: int = 500
    seed: int = 0
    dtype: str = "float32"
    dev_size: int = 1000
    init: str = "uniform"
    log_every: int = 10

    def __post_init__(self):
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden layer sizes must be >= 1, got {self.hidden}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")


@dataclass
class TrainResult:
    params: dict
    summary: dict
    #: ``(iteration, loss, train accuracy)`` every ``log_every`` iterations, the loss and
    #: accuracy being those of the parameters *before* that iteration's update.
    history: list[tuple[int, float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class DeviceSplit:
    """One split of a dataset on the device: scaled images ``(n, features)`` and labels."""

    x: object
    y: object

    @classmethod
    def from_host(cls, backend: Backend, images, labels, dtype: str) -> "DeviceSplit":
        x = scale_images(backend.asarray(flatten(images)), backend.dtype(dtype))
        return cls(x=x, y=backend.asarray(labels, "int32"))

    def __len__(self) -> int:
        return self.x.shape[0]


def _to_float(backend: Backend, scalar) -> float:
    return float(backend.to_numpy(scalar))


def train(config: TrainConfig, backend: Backend, dataset: Dataset,
          *, progress: bool = True) -> TrainResult:
    """Train from scratch and evaluate on train, dev and the official test set."""
    backend.enable_dtype(config.dtype)
    train_idx, dev_idx = split_indices(len(dataset.train_labels), config.dev_size, config.seed)
    splits = {
        "train": DeviceSplit.from_host(backend, dataset.train_images[train_idx],
                                       dataset.train_labels[train_idx], config.dtype),
        "dev": DeviceSplit.from_host(backend, dataset.train_images[dev_idx],
                                     dataset.train_labels[dev_idx], config.dtype),
        "test": DeviceSplit.from_host(backend, dataset.test_images, dataset.test_labels,
                                      config.dtype),
    }
    train_split = splits["train"]
    sizes = (train_split.x.shape[1], *config.hidden, CLASSES)
    params = init_params(sizes, seed=config.seed, backend=backend, dtype=config.dtype,
                         init=config.init)
    step = backend.compile(network.train_step)
    evaluate = backend.compile(lambda p, x, y: network.accuracy(network.forward(p, x), y))

    history = []
    backend.synchronize(*params.values(), train_split.x)
    start = time.perf_counter()
    bar = tqdm(range(config.iterations), desc=f"train [{backend.name}]", unit="it",
               disable=not progress, leave=False)
    for iteration in bar:
        params, loss, acc = step(params, train_split.x, train_split.y, config.lr)
        if iteration % config.log_every == 0 or iteration == config.iterations - 1:
            record = (iteration, _to_float(backend, loss), _to_float(backend, acc))
            history.append(record)
            bar.set_postfix(loss=f"{record[1]:.4f}", acc=f"{record[2]:.4f}")
    backend.synchronize(*params.values())
    seconds = time.perf_counter() - start
    bar.close()

    accuracies = {f"{name}_accuracy": _to_float(backend, evaluate(params, split.x, split.y))
                  for name, split in splits.items()}
    summary = {
        "backend": backend.name,
        "device": str(backend.device),
        "dtype": config.dtype,
        **{k: v for k, v in asdict(config).items() if k not in ("dtype", "log_every")},
        "sizes": list(sizes),
        "train_samples": len(train_split),
        **accuracies,
        "final_loss": history[-1][1] if history else None,
        "seconds": seconds,
        "samples_per_second": config.iterations * len(train_split) / seconds if seconds else None,
    }
    summary["hidden"] = list(config.hidden)
    return TrainResult(params=params, summary=summary, history=history)
