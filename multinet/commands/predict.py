"""``multinet predict``: a test image (``--index``), or pictures of digits (``--image``),
with what the checkpoint predicts, as ``evaluate`` and ``plot`` look at it: loaded as a
``multinet.api.run.Run`` on ``--backend``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from multinet import pictures
from multinet.api.run import load
from multinet.catalog import dataset_spec
from multinet.checks import NON_NEGATIVE_INTEGER
from multinet.commands import COMMANDS, EXIT_USAGE, inputs, options
from multinet.errors import MultinetError

DESCRIPTION = COMMANDS["predict"].summary


def add_arguments(parser) -> None:
    """``CKPT``, the backend and data options, ``--index`` or ``--image``, ``--show``,
    ``--save-inputs`` and ``--json``."""
    options.add_checkpoint_options(parser)
    parser.add_argument("--index", type=options.in_range(NON_NEGATIVE_INTEGER),
                        help="test image number (give this or --image)")
    parser.add_argument("--image", nargs="+", metavar="PATH",
                        help="pictures instead: files, or folders (the picture files "
                             "directly in them), prepared as MNIST's digits were "
                             "(PNG, JPEG, TIFF...; needs Pillow); with --json, an "
                             "array of one object per picture")
    parser.add_argument("--show", action="store_true",
                        help="also draw each 28x28 the network saw, as text")
    parser.add_argument("--save-inputs", metavar="DIR",
                        help="write each 28x28 the network saw into DIR as a PNG")
    options.add_json_option(parser)


def run(args) -> int:
    """The prediction for one test image, or for every picture given (exit status 2
    when any of them could not be read, after the others' predictions)."""
    if (args.index is None) == (args.image is None):
        raise MultinetError("give exactly one of --index N (a test image) or --image PATH")
    if args.show and args.json:
        raise MultinetError("--show draws text; it cannot go with --json")
    if args.image is not None:
        return _predict_pictures(args)
    trained, dataset = inputs.run_and_data(args)
    if not 0 <= args.index < len(dataset.test_labels):
        raise MultinetError(f"--index must be 0-{len(dataset.test_labels) - 1}")
    image, true = dataset.test_images[args.index], int(dataset.test_labels[args.index])
    if args.save_inputs:
        _save_inputs(args.save_inputs, [Path(f"test-{args.index}")], [image])
    probs = trained.probabilities(image[None])[0]
    predicted = int(np.argmax(probs))
    result = {"prediction": predicted, "label": true, "probabilities": probs.tolist()}
    if args.json:
        print(json.dumps(result))
        return 0
    name = _class_namer(dataset_spec(dataset.name).classes)
    print(pictures.render(image))
    verdict = "  right" if predicted == true else "  WRONG"
    print(f"prediction: {name(predicted)}, {probs[predicted]:.1%}   label: {name(true)}"
          + verdict)
    return 0


def _class_namer(names):
    """``name(i)``: the class number, with its name where it is not the number itself."""
    return lambda i: str(i) if names[i] == str(i) else f"{i} ({names[i]})"


def _file_identity(path):
    """``(device, inode)`` of an existing file (links included), else None."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def _save_inputs(folder, paths, images, keep=()) -> list[Path]:
    """Write each 28x28 image as ``folder/<stem>.png`` (``<stem>-2.png``... when two
    pictures share a name); the paths written. Before writing anything, refuses to
    write over any file in ``keep`` (the pictures given: ``--save-inputs`` naming their
    own folder must not replace a drawing by its 28x28)."""
    folder = Path(folder)
    targets, taken = [], set()
    for path in paths:
        stem, n = path.stem, 1
        while f"{stem}.png".lower() in taken:
            n += 1
            stem = f"{path.stem}-{n}"
        taken.add(f"{stem}.png".lower())
        targets.append(folder / f"{stem}.png")
    kept = {_file_identity(path) for path in keep} - {None}
    for target in targets:
        if _file_identity(target) in kept:
            raise MultinetError(f"--save-inputs {folder}: would write over the picture "
                                f"{target}; choose another folder")
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target, image in zip(targets, images):
            written.append(pictures.save_png(image, target))
    except OSError as exc:
        raise MultinetError(f"--save-inputs {folder}: cannot write ({exc.strerror or exc})"
                            ) from None
    return written


def _predict_pictures(args) -> int:
    """``predict --image``: every picture prepared as MNIST's digits were, predicted in
    one batch; a picture that fails is reported on its own line and the rest go on."""
    trained = load(args.checkpoint, args.backend)
    name = _class_namer(dataset_spec(args.dataset or trained.dataset_name).classes)
    pictures.require_pillow()
    failed = 0

    def report(exc):
        nonlocal failed
        failed += 1
        print(f"multinet: error: {exc}", file=sys.stderr)

    paths = []
    for text in args.image:
        given = Path(text)
        if not text:  # Path("") is ".": the current folder, which was not asked for
            report("--image: an empty path")
            continue
        if not given.is_dir():
            paths.append(given)
            continue
        try:
            found = pictures.image_files(given)
        except OSError as exc:
            report(f"{given}: cannot list the folder ({exc.strerror or exc})")
            continue
        if not found:
            report(f"{given}: no picture files in this folder")
        paths.extend(found)
    read, images = [], []
    for path in paths:
        try:
            images.append(pictures.mnist_digit(path))
            read.append(path)
        except pictures.PictureError as exc:
            report(exc)
    saved = (_save_inputs(args.save_inputs, read, images, keep=paths)
             if args.save_inputs else [])
    probs = trained.probabilities(np.stack(images)) if images else np.zeros((0, 0))
    results = []
    for i, (path, p) in enumerate(zip(read, probs)):
        order = [int(c) for c in np.argsort(-p, kind="stable")[:3]]
        results.append({
            "path": str(path), "prediction": order[0], "probability": float(p[order[0]]),
            "next": [{"prediction": c, "probability": float(p[c])} for c in order[1:]],
            "probabilities": p.tolist(), **({"input": str(saved[i])} if saved else {})})
    if args.json:
        print(json.dumps(results))
    for result, image in zip([] if args.json else results, images):
        if args.show:
            print(pictures.render(image))
        others = ", ".join(f"{name(n['prediction'])} {n['probability']:.1%}"
                           for n in result["next"])
        print(f"{result['path']}  {name(result['prediction'])}  "
              f"{result['probability']:.1%}   next: {others}")
    return EXIT_USAGE if failed else 0
