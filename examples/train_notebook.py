"""The notebook's network, trained with multinet's public functions on any backend.

    MULTINET_DATA=path/to/mnist python examples/train_notebook.py [numpy|jax|strict|cupy]

The same eight lines of training loop run unchanged on every array library.
"""

import sys

from multinet import get_backend, init_params, predict, train_step
from multinet.data import CLASSES, flatten, load_dataset, scale_images

backend = get_backend(sys.argv[1] if len(sys.argv) > 1 else None)
xp = backend.xp
data = load_dataset()  # from $MULTINET_DATA

# uint8 pixels travel to the device and are scaled to [0, 1] there.
x = scale_images(backend.asarray(flatten(data.train_images)), xp.float32)
y = backend.asarray(data.train_labels, "int32")
x_test = scale_images(backend.asarray(flatten(data.test_images)), xp.float32)
y_test = backend.asarray(data.test_labels, "int32")

params = init_params((784, 10, CLASSES), seed=0, backend=backend, dtype="float32")
step = backend.compile(train_step)
for i in range(500):
    params, loss, accuracy = step(params, x, y, 0.2)
    if i % 50 == 0:
        print(f"iteration {i:3d}  loss {float(loss):.4f}  train accuracy {float(accuracy):.4f}")

test_accuracy = xp.mean(xp.astype(predict(params, x_test) == y_test, xp.float32))
print(f"{backend.name}: test accuracy {float(test_accuracy):.4f}")
