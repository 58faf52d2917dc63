"""The notebook's run from a script, through multinet's Python API, on any backend.

    python examples/train_notebook.py [--backend jax] [--iterations 500] [--data-dir DIR]

Without --data-dir, MNIST is looked for in $MULTINET_DATA, then the per-user cache, and
downloaded there once. Any problem (no data, an unknown backend) is one line on stderr.
"""

import argparse
import sys

import multinet


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", help="numpy, jax, cupy, torch, ... (default: numpy)")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--data-dir", help="folder with the four MNIST files")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="MNIST-format files of your own: skip the checksums")
    args = parser.parse_args(argv)
    try:
        data = multinet.load_dataset("mnist", args.data_dir, verify=args.verify)
        run = multinet.fit(data, preset="notebook", backend=args.backend,
                           iterations=args.iterations)
    except multinet.MultinetError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    for record in run.history[:: max(1, len(run.history) // 10)]:
        print(f"iteration {record['step']:4d}  loss {record['loss']:.4f}  "
              f"dev accuracy {record['dev_accuracy']:.4f}")
    s = run.summary
    print(f"{s['backend']}: accuracy train {s['train_accuracy']:.4f}  "
          f"dev {s['dev_accuracy']:.4f}  test {s['test_accuracy']:.4f}  ({s['seconds']:.1f} s)")
    # The notebook's last cell: the first four test images, predicted.
    print("first four test images: predicted", run.predict(data.test_images[:4]).tolist(),
          "labels", data.test_labels[:4].tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
