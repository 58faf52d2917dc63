"""``multinet predict``: a test image (``--index``), or pictures of digits (``--image``),
with what the checkpoint predicts, as ``evaluate`` and ``plot`` look at it: loaded as a
``multinet.api.run.Run`` on ``--backend``; or what an exported ONNX model predicts
(``predict MODEL.onnx``, as ``evaluate`` takes one), run in onnxruntime. Without
``CKPT``, the pretrained network shipped with multinet (``multinet.pretrained``)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multinet import export, files, pictures
from multinet.api.run import load
from multinet.catalog import dataset_spec
from multinet.checks import NON_NEGATIVE_INTEGER
from multinet.commands import COMMANDS, EXIT_USAGE, inputs, options
from multinet.errors import MultinetError
from multinet.evaluation import softmax

DESCRIPTION = COMMANDS["predict"].summary


def add_arguments(parser) -> None:
    """``CKPT``, the backend and data options, ``--index`` or ``--image``, ``--show``,
    ``--save-inputs`` (with ``--force``) and ``--json``."""
    options.add_checkpoint_options(
        parser, "a checkpoint from train --save, or an ONNX model from export --onnx "
                "(OUT.onnx); give it before --image", optional=True)
    parser.add_argument("--index", type=options.in_range(NON_NEGATIVE_INTEGER),
                        help="test image number (give this or --image)")
    parser.add_argument("--image", nargs="+", metavar="PATH",
                        help="pictures instead: files, or folders (the picture files "
                             "directly in them), prepared as MNIST's digits were "
                             "(PNG, JPEG, TIFF...; needs Pillow); every path after it "
                             "is a picture; with --json, an array of one object per "
                             "picture")
    parser.add_argument("--show", action="store_true",
                        help="also draw each 28x28 the network saw, as text")
    parser.add_argument("--save-inputs", metavar="DIR",
                        help="write each 28x28 the network saw into DIR as a PNG")
    options.add_force_option(parser, "the pictures --save-inputs writes")
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
    trained = _network(args)
    args.dataset = args.dataset or trained.dataset_name
    args.data_source = "multinet"
    dataset = inputs.load_data(args)
    if not 0 <= args.index < len(dataset.test_labels):
        raise MultinetError(f"--index must be 0-{len(dataset.test_labels) - 1}")
    image, true = dataset.test_images[args.index], int(dataset.test_labels[args.index])
    if args.save_inputs:
        _save_inputs(args.save_inputs, [Path(f"test-{args.index}")], [image],
                     force=args.force)
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


@dataclass(frozen=True)
class _ExportedNetwork:
    """What predict asks of a network (``Run``'s ``dataset_name`` and ``probabilities``),
    of an exported model run in onnxruntime."""

    #: ``multinet.backends.onnx.Model``, checked by ``export.check_inference_contract``.
    model: Any

    @property
    def dataset_name(self) -> str:
        return self.model.metadata["dataset"]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return softmax(export.run_inference(self.model, images)[0])


def _network(args):
    """``CKPT`` as predict uses it: a checkpoint loaded as a ``Run`` on ``--backend``, or,
    for a ``.onnx`` file (``evaluate``'s rule), the exported model, checked as a
    checkpoint is; without ``CKPT``, the pretrained network (``load(None)``)."""
    if args.checkpoint is None or not files.is_onnx_model(args.checkpoint):
        return load(args.checkpoint, args.backend)
    if args.backend is not None:
        raise MultinetError(f"--backend chooses where multinet runs a checkpoint; "
                            f"{args.checkpoint} is an ONNX model, which runs in onnxruntime: "
                            "leave --backend out")
    model = export.open_model(args.checkpoint)
    export.check_inference_contract(model)
    return _ExportedNetwork(model)


def _refuse_a_network_among_the_pictures(paths) -> None:
    """``--image`` takes every path after it, so ``predict --image a.png CKPT`` reads CKPT
    as a picture and leaves ``CKPT`` out: rather than answer with the pretrained network
    and a picture that cannot be read, say where ``CKPT`` goes (told by its bytes)."""
    for text in paths:
        kind = files.file_kind(files.first_bytes(text) or b"") if text else None
        if kind in ("checkpoint", "onnx"):
            what = "a checkpoint" if kind == "checkpoint" else "an ONNX model"
            raise MultinetError(f"--image {text}: is {what}, not a picture: give it "
                                f"before --image (multinet predict CKPT --image PATH...)")


def _class_namer(names):
    """``name(i)``: the class number, with its name where it is not the number itself."""
    return lambda i: str(i) if names[i] == str(i) else f"{i} ({names[i]})"


def _save_inputs(folder, paths, images, keep=(), *, force=False) -> list[Path]:
    """Write each 28x28 image as ``folder/<stem>.png`` (``<stem>-2.png``... when two
    pictures share a name); the paths written. Before writing anything, checks them as
    every output is (``files.check_output_dir``): never over a file in ``keep`` (the
    pictures given: ``--save-inputs`` naming their own folder must not replace a drawing
    by its 28x28) or a special file; over a file of another kind only with ``force``."""
    folder = Path(folder)
    targets, taken = [], set()
    for path in paths:
        stem, n = path.stem, 1
        while f"{stem}.png".lower() in taken:
            n += 1
            stem = f"{path.stem}-{n}"
        taken.add(f"{stem}.png".lower())
        targets.append(folder / f"{stem}.png")
    files.check_output_dir(folder, "--save-inputs", figures=[t.name for t in targets],
                           inputs={f"the picture {path.name} given": path for path in keep},
                           force=force)
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
    if args.checkpoint is None:
        _refuse_a_network_among_the_pictures(args.image)
    trained = _network(args)
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
    saved = (_save_inputs(args.save_inputs, read, images, keep=paths, force=args.force)
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
