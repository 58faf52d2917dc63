"""The bench workloads written directly in PyTorch (eager), the way a PyTorch user would
write the same math: ``multinet bench --peer torch``. The perceptron's gradients are
written out (as multinet's are, with no autograd); the cnn epoch is what a PyTorch user
trains a convolutional network with: ``torch.nn.functional`` (``conv2d``, oneDNN's
convolution on a CPU; ``max_pool2d``), images channels-first (NCHW, weights OIHW),
``loss.backward()`` and ``torch.optim.Adam`` (the same update as multinet's Adam).

Beside the torch *backend* (multinet's own network, through the array API, on PyTorch)
the ratio of the two is what writing to the standard costs. The peer runs on the device
the torch backend picks (CUDA, else MPS, else the CPU) and waits for it the same way.
PyTorch is imported inside ``bench`` only, and is never a dependency of multinet.

For the full-batch workloads it also times what a careful PyTorch user would write
(rows ``torch (careful)``, ``"variant": "careful"``): the images transposed once into a
contiguous copy for the gradient's product, and the parameters updated in place.
``multinet.bench.add_ratios`` counts it among the peers for ``x_best_peer`` but not for
``x_peer``, which stays the ratio to plain eager PyTorch.
"""

from __future__ import annotations

from multinet.bench import cnn_batches, cnn_network, measure, synthetic_data
from multinet.initializers import draw_params
from multinet.layers import SPATIAL, image_shape, shapes
from multinet.training.config import FEATURES


def _device(torch):
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def bench(config) -> list[dict]:
    import torch

    device = _device(torch)
    data = synthetic_data(config)
    images_u8 = torch.from_numpy(data["images"]).to(device)
    labels = torch.from_numpy(data["labels"]).long().to(device)
    rows = []

    def synchronize(result):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    def row(workload, samples, timing, dtype="float32", variant=None, **extra):
        rows.append({"backend": f"torch ({variant or 'native'})", "peer": "torch",
                     **({"variant": variant} if variant else {}),
                     "version": torch.__version__, "device": str(device),
                     "platform": "cpu" if device.type == "cpu" else "gpu",
                     "workload": workload, "dtype": dtype, "samples": samples, **timing,
                     "samples_per_second": samples / timing["median_seconds"],
                     "peak_device_bytes": (torch.cuda.max_memory_allocated(device)
                                           if device.type == "cuda" else None), **extra})

    def init(sizes, dtype, he=False):
        # multinet's own draw (the same numbers as its backends start from), flattened.
        host = draw_params(sizes, seed=0, init="he" if he else "uniform")
        return [torch.from_numpy(host[f"{kind}{i}"]).to(device, dtype)
                for i in range(1, len(sizes)) for kind in ("W", "b")]

    def backprop(params, x, y, x_t=None):
        inputs, a = [x], x
        layers = len(params) // 2
        for i in range(layers - 1):
            a = torch.relu(a @ params[2 * i] + params[2 * i + 1])
            inputs.append(a)
        logits = a @ params[-2] + params[-1]
        probs = torch.softmax(logits, dim=1)
        delta = probs
        delta[torch.arange(len(y), device=device), y] -= 1
        delta /= len(y)
        grads = [None] * len(params)
        for i in reversed(range(layers)):
            grads[2 * i] = (x_t if i == 0 and x_t is not None else inputs[i].T) @ delta
            grads[2 * i + 1] = delta.sum(0)
            if i:
                delta = (delta @ params[2 * i].T) * (inputs[i] > 0)
        return grads

    for workload in config.workloads:
        if workload == "floor":
            x = images_u8.float() / 255
            row("floor", config.samples, measure(lambda: x.sum(), synchronize, config.repeats))
        elif workload.startswith("notebook-"):
            dtype_name = workload.split("-", 1)[1]
            if dtype_name == "float64" and device.type == "mps":
                rows.append({"backend": "torch (native)", "peer": "torch",
                             "workload": workload, "dtype": dtype_name,
                             "skipped": "MPS has no float64"})
                continue
            dtype = getattr(torch, dtype_name)
            x = images_u8.to(dtype) / 255
            params = init(config.notebook_sizes, dtype)

            def step():
                grads = backprop(params, x, labels)
                return [p - 0.2 * g for p, g in zip(params, grads)]

            row(workload, config.samples, measure(step, synchronize, config.repeats),
                dtype_name)
            # What a careful user does for a full batch that never changes: transpose
            # the images once into a contiguous copy, so the gradient's product reads
            # them row by row, and update the parameters in place.
            x_t = x.T.contiguous()

            def careful_step():
                for p, g in zip(params, backprop(params, x, labels, x_t)):
                    p.sub_(g, alpha=0.2)
                return params

            row(workload, config.samples, measure(careful_step, synchronize, config.repeats),
                dtype_name, variant="careful")
            del x_t
        elif workload == "mlp-epoch":
            order = torch.from_numpy(data["order"]).long().to(device)

            def epoch():
                params = init(config.mlp_sizes, torch.float32, he=True)
                m = [torch.zeros_like(p) for p in params]
                v = [torch.zeros_like(p) for p in params]
                for t in range(1, order.shape[0] + 1):
                    index = order[t - 1]
                    grads = backprop(params, images_u8[index].float() / 255, labels[index])
                    for j, g in enumerate(grads):
                        m[j].mul_(0.9).add_(g, alpha=0.1)
                        v[j].mul_(0.999).addcmul_(g, g, value=0.001)
                        step = (m[j] / (1 - 0.9 ** t)) / ((v[j] / (1 - 0.999 ** t)).sqrt() + 1e-8)
                        params[j] = params[j] - 1e-3 * step
                return params

            row("mlp-epoch", order.numel(), measure(epoch, synchronize, config.epoch_repeats))
        elif workload == "cnn-epoch":
            timed, whole = cnn_batches(config)
            order = torch.from_numpy(data["order"][:timed]).long().to(device)
            layers, host = cnn_network(config)
            epoch = _cnn_epoch(torch, device, layers, host, images_u8, labels, order)
            timing = measure(epoch, synchronize, config.epoch_repeats)
            row("cnn-epoch", order.numel(), timing, batches=timed, epoch_batches=whole,
                epoch_seconds=timing["median_seconds"] * whole / timed)
        elif workload == "inference":
            params = init(config.mlp_sizes, torch.float32, he=True)
            test = torch.from_numpy(data["test_images"]).to(device)

            def predict():
                a = test.float() / 255
                for i in range(len(params) // 2 - 1):
                    a = torch.relu(a @ params[2 * i] + params[2 * i + 1])
                return (a @ params[-2] + params[-1]).argmax(1).cpu().numpy()

            row("inference", config.test_samples,
                measure(predict, lambda result: None, config.repeats))
    return rows


def _cnn_model(torch, device, layers, host):
    """``(start, logits_of)`` of the network ``layers`` (multinet's ``Layer`` records):
    ``start()``, new leaf tensors of the starting parameters ``host`` (multinet's layout,
    ``multinet.bench.cnn_network``) in PyTorch's; ``logits_of(params, x)`` for flat rows
    ``x``."""
    import torch.nn.functional as F

    def start():
        # Channels-first: conv weights HWIO -> OIHW; a dense layer after a flatten reads
        # (c, h, w) where multinet's reads (h, w, c), so its rows are reordered once here
        # and both compute the same function.
        params, number, image = {}, 0, None
        for layer, shape in zip(layers, shapes(layers, FEATURES)):
            if layer.kind == "flatten" and len(shape) == 3:
                image = shape
            if not layer.has_params:
                continue
            number += 1
            W = host[f"W{number}"]
            if layer.kind == "conv":
                W = W.transpose(3, 2, 0, 1)
            elif image is not None:
                W = W.reshape(*image, -1).transpose(2, 0, 1, 3).reshape(W.shape)
                image = None
            for name, value in ((f"W{number}", W), (f"b{number}", host[f"b{number}"])):
                params[name] = torch.tensor(value, dtype=torch.float32, device=device,
                                            requires_grad=True)
        return params

    def logits_of(params, x):
        a, number = x, 0
        for layer in layers:
            if layer.kind in SPATIAL and a.ndim == 2:  # flat rows, as multinet reads them
                h, w, c = image_shape(a.shape[1])
                a = a.view(-1, c, h, w)
            if layer.has_params:
                number += 1
                W, b = params[f"W{number}"], params[f"b{number}"]
                a = (F.conv2d(a, W, b, padding=layer.padding) if layer.kind == "conv"
                     else a @ W + b)
            elif layer.kind == "relu":
                a = F.relu(a)
            elif layer.kind == "maxpool":
                a = F.max_pool2d(a, layer.size)
            elif layer.kind == "avgpool":
                a = F.avg_pool2d(a, layer.size)
            else:
                a = a.flatten(1)
        return a

    return start, logits_of


def _cnn_epoch(torch, device, layers, host, images_u8, labels, order):
    """``epoch()``: Adam steps over the batches of ``order`` from the starting parameters
    ``host``, for ``layers`` (as ``_cnn_model``)."""
    import torch.nn.functional as F

    start, logits_of = _cnn_model(torch, device, layers, host)

    def epoch():
        params = start()
        optimizer = torch.optim.Adam(params.values(), lr=1e-3)
        for index in order:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits_of(params, images_u8[index].float() / 255),
                                   labels[index])
            loss.backward()
            optimizer.step()
        return params

    return epoch

