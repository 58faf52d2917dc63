"""The bench workloads written directly in PyTorch (eager, no autograd), the way a PyTorch
user would write the same math: ``multinet bench --peer torch``.

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

from multinet.bench import measure, synthetic_data
from multinet.initializers import draw_params


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

    def row(workload, samples, timing, dtype="float32", variant=None):
        rows.append({"backend": f"torch ({variant or 'native'})", "peer": "torch",
                     **({"variant": variant} if variant else {}),
                     "version": torch.__version__, "device": str(device),
                     "platform": "cpu" if device.type == "cpu" else "gpu",
                     "workload": workload, "dtype": dtype, "samples": samples, **timing,
                     "samples_per_second": samples / timing["median_seconds"],
                     "peak_device_bytes": (torch.cuda.max_memory_allocated(device)
                                           if device.type == "cuda" else None)})

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
