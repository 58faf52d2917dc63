"""Plain functions and constants shared by the test modules (fixtures live in
conftest.py): the committed sample and the command line, short training runs and their
checkpoints, checkpoints made by hand, made-up datasets for the data and download tests,
and pictures of digits made the ways people make them."""

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from multinet import checkpoint as ckpt
from multinet import parity
from multinet.catalog import FILES, DatasetSpec, dataset_spec
from multinet.cli import main
from multinet.registry import get_backend
from multinet.training.config import TrainConfig
from multinet.training.loop import initial_state, train

try:
    from PIL import Image, ImageFilter
except ImportError:  # Pillow is an extra: the tests of pictures skip without it
    Image = ImageFilter = None


# --- The committed sample and the command line ------------------------------------------

#: The committed sample of MNIST (see its README.md): not MNIST's checksums, so it is read
#: with ``--no-verify`` / ``verify=False``.
SAMPLE_MNIST = Path(__file__).resolve().parent / "data" / "mnist-sample"

#: The options that read the committed sample (2,048 training images, of which 1,000
#: are held out as dev by default).
DATA = ["--data-dir", str(SAMPLE_MNIST), "--no-verify"]

#: A run long enough to be interrupted, logging (and saving) every few steps.
LONG = ["train", *DATA, "--iterations", "1000000", "--log-every", "5"]


def is_sample(dataset) -> bool:
    """Whether ``dataset`` is the committed sample rather than the full files."""
    return Path(dataset.directory).resolve() == SAMPLE_MNIST


def data_args(dataset) -> list[str]:
    """The CLI options that read ``dataset``'s files (the full ones, or the sample)."""
    return ["--data-dir", str(dataset.directory), *(["--no-verify"] if is_sample(dataset) else [])]


def load_code(dataset) -> str:
    """Python source of a ``load_dataset`` call reading ``dataset``'s files, for tests
    that run code in a fresh process."""
    return f"load_dataset(data_dir={str(dataset.directory)!r}, verify={not is_sample(dataset)})"


def run_cli(*args, env=None, timeout=600):
    """Run ``multinet`` in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "multinet", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def run_python(code, **env):
    """Run Python ``code`` (dedented) in a fresh process, ``env`` added to the environment."""
    import os

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def assert_one_line_error(result, *fragments):
    """Exit status 2 and exactly one line on stderr, naming every fragment; no traceback."""
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multinet: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def one_line_error(code, captured, *fragments):
    """``main``'s exit status 2 with one ``multinet: error:`` line naming the fragments."""
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith("multinet: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def records(path: Path) -> list[dict]:
    """The records of a metrics file (JSON lines)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- Short training runs and their checkpoints ------------------------------------------

def mnist_slice(dataset, n_train=2048, n_test=500):
    """The first ``n_train`` training and ``n_test`` test images of a dataset. By default
    2,048 training images (the committed sample's all, the full files' first), so a run
    is the same with either: less a dev split of 200, 1,848 images, 28 batches of 64 an
    epoch."""
    return dataclasses.replace(
        dataset,
        train_images=dataset.train_images[:n_train], train_labels=dataset.train_labels[:n_train],
        test_images=dataset.test_images[:n_test], test_labels=dataset.test_labels[:n_test])


def small(mnist):
    """1,200 training and 300 test images: a run of the Python API in a second or two."""
    return mnist_slice(mnist, 1200, 300)


#: A short mlp run (``TrainConfig.from_preset`` keywords): 28 batches an epoch on
#: ``mnist_slice``'s default slice.
SMALL = dict(preset="mlp", hidden=(32,), batch_size=64, epochs=4, dev_size=200, log_every=1)


#: A tiny convolutional network's hidden layers (two 3x3 filters, 2x2 max-pooling): the
#: network of the tests of everything that runs one, a few milliseconds a step.
TINY_CNN = ("conv:2:3x3", "relu", "maxpool:2", "flatten")


def small_config(**overrides):
    """``SMALL``'s configuration, with ``overrides``."""
    return TrainConfig.from_preset(**{**SMALL, **overrides})


def assert_same_run(actual, expected, dtype, steps):
    """Equal within the parity policy's tolerance for ``steps`` steps. Not bit for bit:
    BLAS may round differently depending on where arrays happen to sit in memory, which
    differs between a resumed process and an uninterrupted one."""
    error = parity.max_relative_error(actual, expected)
    assert error <= parity.tolerance(dtype, steps), error


def host(params, backend):
    """``params`` as NumPy arrays on the host."""
    return {k: np.asarray(backend.to_numpy(v)) for k, v in params.items()}


def trained_checkpoint(mnist, tmp_path, epochs, dataset_sha256=None):
    """A short numpy run on the MNIST slice, saved: ``(path, result)``."""
    numpy = get_backend("numpy")
    config = small_config(epochs=epochs)
    result = train(config, numpy, mnist_slice(mnist), progress=False)
    path = ckpt.save(tmp_path / "c.safetensors", config, result.state, backend=numpy,
                     dataset_name="mnist", dataset_sha256=dataset_sha256 or {})
    return path, result


def train_and_save(tmp_path, name, config, backend, dataset):
    """Train ``config`` on ``dataset`` and save it as ``tmp_path/NAME.safetensors``, with
    the dataset's known content checksums."""
    result = train(config, backend, dataset, progress=False)
    sha256 = dict(dataset_spec(dataset.name).content_sha256)
    return ckpt.save(tmp_path / f"{name}.safetensors", config, result.state, backend=backend,
                     dataset_name=dataset.name, dataset_sha256=sha256)


# --- Checkpoints made by hand -----------------------------------------------------------

#: The NumPy backend, which the checkpoints made by hand are written with.
NUMPY = get_backend("numpy")


def valid_parts(optimizer="adam", dtype="float32"):
    """``(tensors, metadata)`` of a valid checkpoint: 784-16-10, two full-batch steps done
    of five."""
    config = TrainConfig(hidden=(16,), optimizer=optimizer, dtype=dtype, epochs=5,
                         log_every=1)
    state = initial_state(config, NUMPY, 784)
    state.opt_state = {**state.opt_state, "t": np.asarray(2.0, dtype=dtype)}
    state.epoch = state.step = 2
    state.history = [{"epoch": e, "step": e, "lr": 0.2, "loss": 2.0, "train_accuracy": 0.1,
                      "dev_accuracy": 0.1, "seconds": 0.1 * e} for e in (1, 2)]
    raw = ckpt.encode(config, state, backend=NUMPY, dataset_name="mnist",
                      dataset_sha256={"train_images": "0" * 64})
    from safetensors.numpy import load

    with_metadata = raw[8:8 + int.from_bytes(raw[:8], "little")]
    metadata = json.loads(json.loads(with_metadata)["__metadata__"]["multinet"])
    return load(raw), metadata


def write(path, tensors, metadata) -> Path:
    """A checkpoint file of ``tensors`` and ``metadata`` (a dict, or any text)."""
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    save_file(tensors, str(path), metadata={"multinet": text})
    return path


#: A valid checkpoint's tensors and metadata (``valid_parts``), to be damaged.
T, M = valid_parts()


def with_weights(value, W2=None) -> dict:
    """``T`` with every parameter ``value`` (``W2``: that second layer instead)."""
    tensors = {k: np.full_like(v, value) if k.startswith("params/") else v
               for k, v in T.items()}
    return tensors if W2 is None else {**tensors, "params/W2": W2}


# --- Files and the environment ----------------------------------------------------------

@contextlib.contextmanager
def unwritable_dir(path, *, size=None):
    """``path`` made a folder that refuses writes: read-only, or with ``size`` (bytes), a
    writable but nearly full one. As root (for whom permissions mean nothing) a tmpfs is
    mounted there; otherwise a read-only folder is a ``chmod 555`` one, and a full one
    cannot be made (skipped)."""
    import pytest

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        if size is not None:
            pytest.skip("a full disk needs a small tmpfs, which needs root")
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    options = f"size={size}" if size is not None else "ro,size=64k"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def clean_malloc_env() -> dict:
    """This process's environment less glibc's malloc settings (``multinet.heap`` leaves
    a user's own alone), so a child runs with glibc's defaults."""
    from multinet.heap import USER_SETTINGS

    return {k: v for k, v in os.environ.items()
            if k not in USER_SETTINGS and k != "GLIBC_TUNABLES"}


# --- Made-up datasets, and the command run in this process to see them ------------------

def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of ``array``'s values as uint8 (test_idx.py has one for every element
    type)."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.astype(np.uint8).tobytes()


def made_up_dataset(name: str, seed: int) -> tuple[DatasetSpec, dict[str, bytes]]:
    """A four-file MNIST-format dataset (12 images) and its ``.gz`` files by name."""
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (8, 28, 28)),
              "train_labels": rng.integers(0, 10, 8),
              "test_images": rng.integers(0, 256, (4, 28, 28)),
              "test_labels": rng.integers(0, 10, 4)}
    raw = {role: idx_bytes(array) for role, array in arrays.items()}
    gz = {role: gzip.compress(data, mtime=0) for role, data in raw.items()}
    spec = DatasetSpec(
        name=name, torchvision_name=name.title(),
        content_sha256={role: hashlib.sha256(data).hexdigest() for role, data in raw.items()},
        download_hashes={role: "sha256:" + hashlib.sha256(data).hexdigest()
                         for role, data in gz.items()},
        mirrors=("http://127.0.0.1:9/",))
    return spec, {f"{FILES[role]}.gz": data for role, data in gz.items()}


#: Two made-up datasets (their ``DatasetSpec`` and their ``.gz`` files by name),
#: registered in ``DATASETS`` by the ``isolated`` fixture.
TINY, TINY_FILES = made_up_dataset("tiny", 1)

OTHER, OTHER_FILES = made_up_dataset("other", 2)

#: The names of an MNIST-format dataset's four files.
GZ_NAMES = sorted(f"{stem}.gz" for stem in FILES.values())


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    """``files`` (name -> bytes) written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def gzip_bomb(shape: tuple[int, ...], expansion: int) -> bytes:
    """A gzip file holding an IDX file of ``shape`` followed by ``expansion`` zero bytes,
    built small: one member for the file, then a 1 MiB member of zeros repeated."""
    zeros = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)
    return gzip.compress(idx_bytes(np.zeros(shape, np.uint8)), mtime=0) \
        + zeros * (expansion >> 20)


def cli(capsys, *argv):
    """``multinet ARGV`` in this process (so the made-up datasets are known):
    ``(status, stdout, stderr lines)``."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err.strip().splitlines()


def assert_error(status, lines, *fragments):
    """Exit 2, and one error line, last, after at most the lines naming each download."""
    assert status == 2, lines
    assert lines and lines[-1].startswith("multinet: error: "), lines
    assert all(line.startswith("multinet: downloading ") for line in lines[:-1]), lines
    assert not any("Traceback" in line for line in lines)
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


# --- Pictures of digits, made the ways people make them (Pillow) ------------------------

def encoded(img, fmt, **options):
    """``img`` written to an in-memory file in ``fmt``, ready to be read."""
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    buffer.seek(0)
    return buffer


def grey(values):
    """A float array in 0..255 as an 8-bit Pillow image (L, or RGB(A) for 3-4 channels)."""
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))


def enlarged(digit, factor):
    """An MNIST digit drawn ``factor`` times larger: ink 0..1 (``float64``)."""
    size = 28 * factor
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float64) / 255.0


def on_paper(ink, paper, pen):
    """Paper where the ink is 0, pen where it is 1; grey levels or RGB triples."""
    paper, pen = np.asarray(paper, np.float64), np.asarray(pen, np.float64)
    return paper + (pen - paper) * (ink[..., None] if paper.ndim else ink)


def placed(ink, shape, rng):
    """``ink`` at a random place on a blank sheet of ``shape``."""
    sheet = np.zeros(shape)
    top = rng.integers(0, shape[0] - ink.shape[0] + 1)
    left = rng.integers(0, shape[1] - ink.shape[1] + 1)
    sheet[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    return sheet


def plain_28x28_png(digit, rng):
    return encoded(Image.fromarray(digit), "PNG")


def dark_ink_on_white_paper(digit, rng):
    return encoded(grey(on_paper(enlarged(digit, 4), 255, 0)), "PNG")


def black_ink_on_transparent(digit, rng):
    rgba = np.zeros((112, 112, 4))
    rgba[..., 3] = 255 * enlarged(digit, 4)
    return encoded(grey(rgba), "PNG")


def sixteen_bit_png(digit, rng):
    values = on_paper(enlarged(digit, 4), 52000, 9000)
    return encoded(Image.fromarray(np.round(values).astype(np.uint16)), "PNG")


def float_tiff(digit, rng):
    values = on_paper(enlarged(digit, 4), 0.8, 0.05).astype(np.float32)
    return encoded(Image.fromarray(values), "TIFF")


def phone_jpeg_with_exif_orientation_6(digit, rng):
    photo = grey(on_paper(enlarged(digit, 4), (235, 230, 220), (30, 30, 45)))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: stored sideways, shown upright
    return encoded(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90,
                   exif=exif.tobytes())


def wide_crop_3_to_1(digit, rng):
    ink = enlarged(digit, 4)
    return encoded(grey(on_paper(placed(ink, (112, 336), rng), 255, 0)), "PNG")


def tall_crop_1_to_3(digit, rng):
    ink = enlarged(digit, 4)
    return encoded(grey(on_paper(placed(ink, (336, 112), rng), 255, 0)), "PNG")


def small_on_a_page(digit, rng):
    ink = enlarged(digit, 2)
    return encoded(grey(on_paper(placed(ink, (700, 500), rng), 250, 15)), "JPEG", quality=90)


def dark_ink_on_grey_paper(digit, rng):
    return encoded(grey(on_paper(enlarged(digit, 4), 110, 20)), "PNG")


def light_ink_on_dark(digit, rng):
    return encoded(grey(on_paper(enlarged(digit, 4), 45, 225)), "PNG")


def blue_ink_on_yellow_paper(digit, rng):
    return encoded(grey(on_paper(enlarged(digit, 4), (245, 225, 130), (40, 60, 170))), "PNG")


def noisy_jpeg(digit, rng):
    values = on_paper(enlarged(digit, 4), 230, 30) + rng.normal(0, 12, (112, 112))
    return encoded(grey(values), "JPEG", quality=25)


def bilevel_1_bit(digit, rng):
    return encoded(Image.fromarray(enlarged(digit, 4) < 0.5), "PNG")


def red_ink_palette_gif(digit, rng):
    rgb = grey(on_paper(enlarged(digit, 4), (250, 250, 250), (200, 20, 20)))
    return encoded(rgb.convert("P"), "GIF")


def cmyk_jpeg(digit, rng):
    rgb = grey(on_paper(enlarged(digit, 4), (250, 248, 240), (10, 10, 60)))
    return encoded(rgb.convert("CMYK"), "JPEG", quality=90)


def white_is_transparent_png(digit, rng):
    """Greyscale PNG drawn with a soft brush, its white the one transparent colour
    (``tRNS``): most opaque pixels are the brush's pale fringe."""
    soft = grey(on_paper(enlarged(digit, 4), 255, 0)).filter(ImageFilter.GaussianBlur(2))
    return encoded(soft, "PNG", transparency=255)


def white_is_transparent_blue_ink_png(digit, rng):
    """RGB PNG, blue ink, white its transparent colour (``tRNS``)."""
    rgb = grey(on_paper(enlarged(digit, 4), (255, 255, 255), (20, 30, 150)))
    return encoded(rgb, "PNG", transparency=(255, 255, 255))


def white_is_transparent_gif(digit, rng):
    """Palette GIF whose white entry is its transparent index."""
    img = grey(on_paper(enlarged(digit, 4), 255, 0)).convert("P")
    palette = img.getpalette("RGB")
    white = next(i for i in range(len(palette) // 3) if palette[3 * i:3 * i + 3] == [255] * 3)
    return encoded(img, "GIF", transparency=white)


VARIANTS = (plain_28x28_png, dark_ink_on_white_paper, black_ink_on_transparent,
            sixteen_bit_png, float_tiff, phone_jpeg_with_exif_orientation_6,
            wide_crop_3_to_1, tall_crop_1_to_3, small_on_a_page, dark_ink_on_grey_paper,
            light_ink_on_dark, blue_ink_on_yellow_paper, noisy_jpeg, bilevel_1_bit,
            red_ink_palette_gif, cmyk_jpeg, white_is_transparent_png,
            white_is_transparent_blue_ink_png, white_is_transparent_gif)
