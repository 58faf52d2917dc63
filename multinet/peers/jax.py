"""The bench workloads written directly in JAX, the way a JAX user would write the same
math: ``multinet bench --peer jax``.

The loss is written once and differentiated by ``jax.value_and_grad`` (no hand-written
backprop), every step is ``jax.jit``-ed, the minibatch epoch is one ``lax.scan`` over
its batches, and Adam is the textbook expression over pytrees (``jax.tree.map``), as in
a hand-rolled training loop; same sizes, initialisation, batches and learning rates as
multinet's workloads (``multinet.bench``). The cnn epoch's layers are XLA's own:
``lax.conv_general_dilated`` (channels-last, NHWC with HWIO kernels, as multinet's) and
``lax.reduce_window`` for the pooling, as Flax's ``nn.Conv`` and ``nn.max_pool`` build them;
its steps are jitted one per batch rather than scanned, the faster of the two here. Beside the jax *backend* (multinet's own
network, hand-written gradients, through the array API) the ratio of the two is what
writing to the standard with hand-written gradients costs on JAX, or saves.

It runs on JAX's default device and matmul precision (what a user gets), except that on
a GPU the precision is "highest", as multinet's jax backend sets it, so both do the
same float32 arithmetic. JAX is imported inside ``bench`` only.
"""

from __future__ import annotations

import numpy as np

from multinet.bench import cnn_batches, cnn_network, measure, synthetic_data
from multinet.initializers import draw_params
from multinet.layers import SPATIAL, image_shape


def bench(config) -> list[dict]:
    import jax
    import jax.numpy as jnp

    device = jax.devices()[0]
    if device.platform != "cpu":
        jax.config.update("jax_default_matmul_precision", "highest")
    data = synthetic_data(config)
    images_u8 = jax.device_put(data["images"], device)
    labels = jax.device_put(data["labels"], device)
    rows = []

    def row(workload, samples, timing, dtype="float32", **extra):
        stats = device.memory_stats()
        rows.append({"backend": "jax (native)", "peer": "jax", "version": jax.__version__,
                     "device": str(device), "platform": device.platform,
                     "workload": workload, "dtype": dtype, "samples": samples, **timing,
                     "samples_per_second": samples / timing["median_seconds"],
                     "peak_device_bytes": stats.get("peak_bytes_in_use") if stats else None,
                     **extra})

    def init(sizes, dtype, he=False):
        # multinet's own draw (the same numbers as its backends start from), as pairs.
        host = draw_params(sizes, seed=0, init="he" if he else "uniform")
        return [(jnp.asarray(host[f"W{i}"], dtype), jnp.asarray(host[f"b{i}"], dtype))
                for i in range(1, len(sizes))]

    def logits_of(params, x):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = params[-1]
        return x @ w + b

    def loss(params, x, y):
        log_probs = jax.nn.log_softmax(logits_of(params, x))
        return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))

    grad_fn = jax.value_and_grad(loss)

    def adam_epoch(grad_fn, scan=True):
        """``run(params, order, lrs) -> (params, losses)``: Adam steps, one per row of
        batch indices in ``order``, as one jitted ``lax.scan``; with ``scan=False`` as a
        jitted step per batch, called from Python."""
        b1, b2, eps = 0.9, 0.999, 1e-8

        def adam_step(carry, batch):
            params, m, v, t = carry
            index, lr = batch
            x = images_u8[index].astype(jnp.float32) / 255
            value, grads = grad_fn(params, x, labels[index])
            t = t + 1
            m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
            v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
            m_hat = jax.tree.map(lambda m: m / (1 - b1 ** t), m)
            v_hat = jax.tree.map(lambda v: v / (1 - b2 ** t), v)
            params = jax.tree.map(lambda p, m, v: p - lr * m / (jnp.sqrt(v) + eps),
                                  params, m_hat, v_hat)
            return (params, m, v, t), value

        def start(params):
            zeros = jax.tree.map(jnp.zeros_like, params)
            return (params, zeros, zeros, jnp.zeros((), jnp.float32))

        @jax.jit
        def run_epoch(params, order, lrs):
            (params, _, _, _), losses = jax.lax.scan(adam_step, start(params), (order, lrs))
            return params, losses

        if scan:
            return run_epoch
        step = jax.jit(adam_step)

        def run_steps(params, order, lrs):
            carry, losses = start(params), []
            for i in range(order.shape[0]):
                carry, loss = step(carry, (order[i], lrs[i]))
                losses.append(loss)
            return carry[0], losses

        return run_steps

    for workload in config.workloads:
        if workload == "floor":
            x = images_u8.astype(jnp.float32) / 255
            total = jax.jit(jnp.sum)
            row("floor", config.samples,
                measure(lambda: total(x), jax.block_until_ready, config.repeats))
            del x
        elif workload.startswith("notebook-"):
            dtype_name = workload.split("-", 1)[1]
            if dtype_name == "float64":
                jax.config.update("jax_enable_x64", True)
            dtype = jnp.dtype(dtype_name)
            x = images_u8.astype(dtype) / 255
            params = init(config.notebook_sizes, dtype)

            @jax.jit
            def step(params, x, y):
                value, grads = grad_fn(params, x, y)
                return jax.tree.map(lambda p, g: p - 0.2 * g, params, grads), value

            row(workload, config.samples,
                measure(lambda: step(params, x, labels), jax.block_until_ready,
                        config.repeats), dtype_name)
            del x
        elif workload == "mlp-epoch":
            order = jax.device_put(data["order"], device)
            lrs = jnp.full(order.shape[0], 1e-3, jnp.float32)
            run_epoch = adam_epoch(grad_fn)
            params = init(config.mlp_sizes, jnp.float32, he=True)
            row("mlp-epoch", order.size,
                measure(lambda: run_epoch(params, order, lrs), jax.block_until_ready,
                        config.epoch_repeats))
        elif workload == "cnn-epoch":
            timed, whole = cnn_batches(config)
            order = jax.device_put(data["order"][:timed], device)
            lrs = jnp.full(timed, 1e-3, jnp.float32)
            layers, host = cnn_network(config)
            # A jitted step per batch: the same epoch as one lax.scan took 3.2x the CPU
            # time (150 against 47 ms a step, one thread; XLA's CPU convolutions inside
            # a loop body), and a JAX user would keep the faster (docs/performance.md).
            run_epoch = adam_epoch(jax.value_and_grad(_cnn_loss(jax, layers)), scan=False)
            params = {name: jnp.asarray(value, jnp.float32) for name, value in host.items()}
            timing = measure(lambda: run_epoch(params, order, lrs), jax.block_until_ready,
                             config.epoch_repeats)
            row("cnn-epoch", order.size, timing, batches=timed, epoch_batches=whole,
                epoch_seconds=timing["median_seconds"] * whole / timed)
        elif workload == "inference":
            params = init(config.mlp_sizes, jnp.float32, he=True)
            test = jax.device_put(data["test_images"], device)

            @jax.jit
            def predict(params, images):
                return jnp.argmax(logits_of(params, images.astype(jnp.float32) / 255), axis=1)

            row("inference", config.test_samples,
                measure(lambda: np.asarray(predict(params, test)), lambda result: None,
                        config.repeats))
    return rows


def _cnn_loss(jax, layers):
    """``loss(params, x, y)``: mean cross-entropy of the network ``layers`` (multinet's
    ``Layer`` records) over flat rows ``x``, in channels-last images; ``params`` in
    multinet's layout (``W1``, ``b1``...)."""
    import jax.numpy as jnp
    from jax import lax

    def logits_of(params, x):
        a, number = x, 0
        for layer in layers:
            if layer.kind in SPATIAL and a.ndim == 2:  # flat rows, as multinet reads them
                a = a.reshape(-1, *image_shape(a.shape[1]))
            if layer.has_params:
                number += 1
                W, b = params[f"W{number}"], params[f"b{number}"]
                a = (lax.conv_general_dilated(a, W, (1, 1), layer.padding.upper(),
                                              dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
                     if layer.kind == "conv" else a @ W + b)
            elif layer.kind == "relu":
                a = jax.nn.relu(a)
            elif layer.kind in ("maxpool", "avgpool"):
                window = (1, layer.size, layer.size, 1)
                if layer.kind == "maxpool":
                    a = lax.reduce_window(a, -jnp.inf, lax.max, window, window, "VALID")
                else:
                    a = lax.reduce_window(a, 0.0, lax.add, window, window,
                                          "VALID") / layer.size ** 2
            else:
                a = a.reshape(a.shape[0], -1)
        return a

    def loss(params, x, y):
        log_probs = jax.nn.log_softmax(logits_of(params, x))
        return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))

    return loss
