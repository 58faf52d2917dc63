"""Not a backend: the bench workloads written directly in PyTorch (eager, no autograd),
the way a PyTorch user would write the same math, so ``multinet bench --peer torch`` can
compare against it. PyTorch is never a dependency of multinet."""

from __future__ import annotations

import math

import numpy as np


def bench_torch(config) -> list[dict]:
    import torch

    from multinet.bench import measure, synthetic_data

    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = synthetic_data(config)
    images_u8 = torch.from_numpy(data["images"])
    labels = torch.from_numpy(data["labels"]).long()
    rows = []

    def row(workload, samples, timing, dtype="float32"):
        rows.append({"backend": f"torch {torch.__version__}", "device": "cpu",
                     "platform": "cpu", "workload": workload, "dtype": dtype,
                     "samples": samples, **timing,
                     "samples_per_second": samples / timing["median_seconds"],
                     "peak_device_bytes": None})

    def init(sizes, dtype, he=False):
        rng = np.random.default_rng(0)
        params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            if he:
                w = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2 / fan_in)
                b = np.zeros(fan_out)
            else:
                w, b = rng.random((fan_in, fan_out)) - 0.5, rng.random(fan_out) - 0.5
            params += [torch.from_numpy(w).to(dtype), torch.from_numpy(b).to(dtype)]
        return params

    def backprop(params, x, y):
        inputs, a = [x], x
        layers = len(params) // 2
        for i in range(layers - 1):
            a = torch.relu(a @ params[2 * i] + params[2 * i + 1])
            inputs.append(a)
        logits = a @ params[-2] + params[-1]
        probs = torch.softmax(logits, dim=1)
        delta = probs
        delta[torch.arange(len(y)), y] -= 1
        delta /= len(y)
        grads = [None] * len(params)
        for i in reversed(range(layers)):
            grads[2 * i] = inputs[i].T @ delta
            grads[2 * i + 1] = delta.sum(0)
            if i:
                delta = (delta @ params[2 * i].T) * (inputs[i] > 0)
        return grads

    no_sync = lambda result: None  # eager CPU: the work is done when the call returns

    for workload in config.workloads:
        if workload == "floor":
            x = images_u8.float() / 255
            row("floor", config.samples, measure(lambda: x.sum(), no_sync, config.repeats))
        elif workload.startswith("notebook-"):
            dtype_name = workload.split("-", 1)[1]
            dtype = getattr(torch, dtype_name)
            x = images_u8.to(dtype) / 255
            params = init(config.notebook_sizes, dtype)

            def step():
                grads = backprop(params, x, labels)
                return [p - 0.2 * g for p, g in zip(params, grads)]

            row(workload, config.samples, measure(step, no_sync, config.repeats), dtype_name)
        elif workload == "mlp-epoch":
            order = torch.from_numpy(data["order"]).long()

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

            row("mlp-epoch", order.numel(), measure(epoch, no_sync, config.epoch_repeats))
        elif workload == "inference":
            params = init(config.mlp_sizes, torch.float32, he=True)
            test = torch.from_numpy(data["test_images"])

            def predict():
                a = test.float() / 255
                for i in range(len(params) // 2 - 1):
                    a = torch.relu(a @ params[2 * i] + params[2 * i + 1])
                return (a @ params[-2] + params[-1]).argmax(1).numpy()

            row("inference", config.test_samples, measure(predict, no_sync, config.repeats))
    return rows
