"""``multinet predict`` as a user runs it: pictures by ``--image`` (files and folders,
made as people make them, read by a network trained here: the ``network`` fixture), a
test image by ``--index``, what ``--show`` and ``--save-inputs`` write, and one line for
every picture it cannot read. How a picture becomes an MNIST digit is in
test_pictures.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'multinet[images]')")
from PIL import Image  # noqa: E402

from helpers import (assert_one_line_error, black_ink_on_transparent,  # noqa: E402
                     dark_ink_on_white_paper, data_args, encoded, float_tiff,
                     phone_jpeg_with_exif_orientation_6, red_ink_palette_gif, run_cli,
                     sixteen_bit_png, trained_checkpoint)
import multinet  # noqa: E402
from multinet import pictures  # noqa: E402
from multinet.evaluation import probabilities  # noqa: E402
from multinet.registry import get_backend  # noqa: E402


def test_predict_an_image_file(mnist, tmp_path):
    pytest.importorskip("PIL", reason="Pillow is not installed")
    from PIL import Image

    path, _ = trained_checkpoint(mnist, tmp_path, epochs=2)
    digit = mnist.test_images[0]  # a 7
    # Dark ink on white paper, four times the size: it is inverted and resized back.
    Image.fromarray(255 - digit).resize((112, 112)).save(tmp_path / "seven.png")
    result = run_cli("predict", str(path), "--image", str(tmp_path / "seven.png"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["prediction"] == 7
    bad = run_cli("predict", str(path), "--image", str(tmp_path / "c.safetensors"))
    assert bad.returncode == 2 and "cannot read the picture" in bad.stderr


# --- Pictures read by a network trained here --------------------------------------------

@pytest.fixture(scope="module")
def folder(network, tmp_path_factory):
    """A folder of mixed files: six pictures of test digits in six formats, an empty
    page, a broken PNG, a text file (not a picture: skipped), a hidden file."""
    _, _, digits, labels = network
    where = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(1)
    made = [("a.png", dark_ink_on_white_paper), ("b.png", black_ink_on_transparent),
            ("c.tif", float_tiff), ("d.jpg", phone_jpeg_with_exif_orientation_6),
            ("e.gif", red_ink_palette_gif), ("f.png", sixteen_bit_png)]
    for i, (name, variant) in enumerate(made):
        (where / name).write_bytes(variant(digits[i], rng).getvalue())
    (where / "blank.png").write_bytes(encoded(Image.new("L", (60, 80), 240), "PNG").getvalue())
    (where / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    (where / "notes.txt").write_text("these are my digits\n")
    (where / ".hidden.png").write_bytes(b"")
    return where, [where / name for name, _ in made], labels[:len(made)]


def test_predict_a_folder_of_mixed_files_as_json(network, folder):
    checkpoint, loaded, _, _ = network
    where, good, labels = folder
    result = run_cli("predict", str(checkpoint), "--image", str(where), "--json")
    assert result.returncode == 2  # some files failed
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("multinet: error: ") for e in errors)
    assert "blank.png: no ink" in errors[0] and "broken.jpg: cannot read" in errors[1]
    assert "Traceback" not in result.stderr
    rows = json.loads(result.stdout)
    assert [row["path"] for row in rows] == [str(p) for p in good]
    expected = probabilities(loaded.params, get_backend("numpy"),
                             np.stack([pictures.mnist_digit(p) for p in good]),
                             loaded.config.dtype)
    for row, probs in zip(rows, expected):
        assert isinstance(row["prediction"], int) and row["prediction"] == probs.argmax()
        assert row["probability"] == pytest.approx(probs.max())
        assert [n["prediction"] for n in row["next"]] == list(np.argsort(-probs)[1:3])
    assert sum(row["prediction"] == label for row, label in zip(rows, labels)) >= 5


def test_predict_prints_one_line_per_picture_with_the_next_two_guesses(network, folder):
    checkpoint = network[0]
    _, good, _ = folder
    result = run_cli("predict", str(checkpoint), "--image", *map(str, good[:3]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, path in zip(lines, good):
        fields = line.split()
        assert fields[0] == str(path) and fields[1] in "0123456789"
        assert fields[2].endswith("%") and fields[3] == "next:" and len(fields) == 8


def test_show_draws_and_save_inputs_writes_what_the_network_saw(network, folder, tmp_path):
    checkpoint = network[0]
    _, good, _ = folder
    twin = tmp_path / "again" / good[0].name  # the same name in another folder
    twin.parent.mkdir()
    twin.write_bytes(good[0].read_bytes())
    saved = tmp_path / "inputs"
    result = run_cli("predict", str(checkpoint), "--image", str(good[0]), str(twin),
                     "--show", "--save-inputs", str(saved))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 * 29 and all(len(line) == 56 for line in lines[:28])
    assert lines[28].startswith(str(good[0]))
    assert sorted(p.name for p in saved.iterdir()) == ["a-2.png", "a.png"]
    written = np.asarray(Image.open(saved / "a.png"))
    np.testing.assert_array_equal(written, pictures.mnist_digit(good[0]))


def test_save_inputs_with_index_writes_the_test_image(network, mnist, tmp_path):
    result = run_cli("predict", str(network[0]), "--index", "3", "--save-inputs",
                     str(tmp_path / "seen"), *data_args(mnist))
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "seen" / "test-3.png")),
                                  mnist.test_images[3])


def test_a_bad_picture_alone_is_one_line(network, tmp_path):
    checkpoint = network[0]
    junk = tmp_path / "scan.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n and then nothing")
    assert_one_line_error(run_cli("predict", str(checkpoint), "--image", str(junk)),
                          "scan.png", "cannot read the picture")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    assert_one_line_error(run_cli("predict", str(checkpoint), "--image", str(empty)),
                          "no picture files in this folder")
    assert_one_line_error(run_cli("predict", str(checkpoint), "--image", str(junk), "--show",
                                  "--json"), "--show", "--json")


def test_save_inputs_never_writes_over_the_pictures_themselves(network, folder, tmp_path):
    """``--save-inputs`` naming the pictures' own folder would have replaced a drawing
    by its 28x28 (a.png -> a.png), through a link too: refused before writing."""
    checkpoint = network[0]
    _, good, _ = folder
    photos = tmp_path / "photos"
    photos.mkdir()
    drawing = photos / "a.png"
    drawing.write_bytes(good[0].read_bytes())
    (photos / "d.jpg").write_bytes(good[3].read_bytes())
    before = drawing.read_bytes()
    assert_one_line_error(run_cli("predict", str(checkpoint), "--image", str(photos),
                                  "--save-inputs", str(photos)),
                          "--save-inputs", "is the picture a.png given", "would destroy it")
    linked = tmp_path / "linked"
    linked.mkdir()
    os.link(drawing, linked / "a.png")
    assert_one_line_error(run_cli("predict", str(checkpoint), "--image", str(drawing),
                                  "--save-inputs", str(linked)), "would destroy it")
    assert drawing.read_bytes() == before and sorted(p.name for p in photos.iterdir()) == [
        "a.png", "d.jpg"]
    result = run_cli("predict", str(checkpoint), "--image", str(photos / "d.jpg"),
                     "--save-inputs", str(photos))  # d.png is nobody's picture
    assert result.returncode == 0, result.stderr
    assert (photos / "d.png").exists() and drawing.read_bytes() == before


def test_a_named_pipe_given_or_in_a_folder_gets_its_own_line(network, folder, tmp_path):
    """``--image ff.png`` (a FIFO) hung for ever; in a folder, a FIFO was skipped
    without a word."""
    checkpoint = network[0]
    _, good, _ = folder
    os.mkfifo(tmp_path / "ff.png")
    assert_one_line_error(run_cli("predict", str(checkpoint), "--image",
                                  str(tmp_path / "ff.png"), timeout=120),
                          "ff.png: is a named pipe (FIFO), not a picture file")
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "a.png").write_bytes(good[0].read_bytes())
    os.mkfifo(pics / "b.png")
    result = run_cli("predict", str(checkpoint), "--image", str(pics), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"multinet: error: {pics / 'b.png'}: is a named pipe (FIFO), not a picture file"]
    assert [line.split()[0] for line in result.stdout.splitlines()] == [str(pics / "a.png")]


def test_save_inputs_replaces_another_kind_of_file_only_with_force(network, folder,
                                                                   tmp_path):
    """The refusal advised ``--force``, which predict did not have."""
    checkpoint = network[0]
    _, good, _ = folder
    seen = tmp_path / "seen"
    seen.mkdir()
    (seen / "a.png").write_bytes(checkpoint.read_bytes())
    args = ["predict", str(checkpoint), "--image", str(good[0]), "--save-inputs", str(seen)]
    assert_one_line_error(run_cli(*args), "a.png: exists and is not a PNG picture but a "
                                          "checkpoint (safetensors)", "--force to replace it")
    assert (seen / "a.png").read_bytes() == checkpoint.read_bytes()
    result = run_cli(*args, "--force")
    assert result.returncode == 0, result.stderr
    assert (seen / "a.png").read_bytes().startswith(b"\x89PNG")
    assert_one_line_error(run_cli("predict", str(checkpoint), "--image", str(good[0]),
                                  "--save-inputs", str(good[0].parent), "--force"),
                          "would destroy it")  # never the pictures given, forced or not


def test_an_empty_path_is_not_the_current_folder(network, folder, tmp_path):
    checkpoint = network[0]
    _, good, _ = folder
    (tmp_path / "cwd.png").write_bytes(good[0].read_bytes())
    result = subprocess.run([sys.executable, "-m", "multinet", "predict", str(checkpoint),
                             "--image", "", str(good[1])], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["multinet: error: --image: an empty path"]
    assert [line.split()[0] for line in result.stdout.splitlines()] == [str(good[1])]


def test_without_pillow_predict_says_which_extra_to_install(network, folder):
    code = ("import sys; sys.modules['PIL'] = None\n"
            "from multinet.cli import main\n"
            f"sys.exit(main(['predict', {str(network[0])!r}, '--image', "
            f"{str(folder[1][0])!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert_one_line_error(result, "needs Pillow", "multinet[images]")


def test_predict_from_an_onnx_model_answers_as_its_checkpoint(network, folder, mnist,
                                                               tmp_path):
    """``predict MODEL.onnx`` said "not a readable safetensors file ('header too large')"
    where ``evaluate`` took the same file."""
    pytest.importorskip("ndonnx")
    pytest.importorskip("onnxruntime")
    checkpoint = network[0]
    _, good, _ = folder
    model = tmp_path / "m.onnx"
    assert run_cli("export", str(checkpoint), "--onnx", str(model)).returncode == 0
    for args in (["--image", *map(str, good)], ["--index", "3", *data_args(mnist)]):
        own, exported = (run_cli("predict", str(path), *args, "--json")
                         for path in (checkpoint, model))
        assert own.returncode == exported.returncode == 0, exported.stderr
        ours, theirs = (json.loads(result.stdout) for result in (own, exported))
        for mine, its in zip(*(r if isinstance(r, list) else [r] for r in (ours, theirs))):
            assert mine["prediction"] == its["prediction"]
            # float32 logits from onnxruntime: the parity tolerance of one forward pass.
            np.testing.assert_allclose(its["probabilities"], mine["probabilities"],
                                       rtol=1e-5, atol=1e-7)
    text = run_cli("predict", str(model), "--index", "3", *data_args(mnist))
    assert text.returncode == 0 and "prediction: " in text.stdout
    assert_one_line_error(run_cli("predict", str(model), "--index", "3", "--backend", "jax",
                                  *data_args(mnist)),
                          "is an ONNX model, which runs in onnxruntime: leave --backend out")


def test_a_folder_of_heic_photos_says_what_reads_them(network, tmp_path):
    """Without pillow-heif, a folder holding only HEIC said "no picture files"."""
    for name in ("a.heic", "b.HEIF"):
        (tmp_path / name).write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    code = ("import sys; sys.modules['pillow_heif'] = None\n"
            "from multinet.cli import main\n"
            f"sys.exit(main(['predict', {str(network[0])!r}, '--image', {str(tmp_path)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.splitlines() == [
        f"multinet: error: {tmp_path / name}: HEIC/HEIF pictures need the pillow-heif "
        "plug-in: pip install pillow-heif" for name in ("a.heic", "b.HEIF")]


# --- Where CKPT goes, now that it may be left out (the pretrained network) --------------

def test_a_checkpoint_before_image_or_after_another_option_is_the_one_used(network, folder):
    checkpoint, loaded, _, _ = network
    _, good, _ = folder
    expected = probabilities(loaded.params, get_backend("numpy"),
                             pictures.mnist_digit(good[0])[None], loaded.config.dtype)[0]
    for args in ([str(checkpoint), "--image", str(good[0]), "--json"],
                 ["--image", str(good[0]), "--json", str(checkpoint)]):
        result = run_cli("predict", *args)
        assert result.returncode == 0, result.stderr
        np.testing.assert_allclose(json.loads(result.stdout)[0]["probabilities"], expected,
                                   rtol=1e-12)


def test_a_checkpoint_after_image_is_named_rather_than_read_as_a_picture(network, folder):
    """``--image`` takes every path after it: without this, the pretrained network would
    answer and the checkpoint would be a picture that cannot be read."""
    _, good, _ = folder
    assert_one_line_error(run_cli("predict", "--image", str(good[0]), str(network[0])),
                          f"--image {network[0]}: is a checkpoint, not a picture",
                          "give it before --image")


def test_the_help_says_ckpt_may_be_left_out_and_goes_before_image():
    text = " ".join(run_cli("predict", "--help").stdout.split())
    assert "[CKPT]" in text and "give it before --image" in text
    assert "(default: the pretrained network shipped with multinet" in text
    for command in ("evaluate", "plot"):  # they still need one
        assert_one_line_error(run_cli(command), "required: CKPT")


def test_predict_with_a_cnn_checkpoint_answers_as_its_run(cnn_checkpoint, mnist, tmp_path):
    """A test image by ``--index`` and a picture file by ``--image``, both run through
    the convolutional network the checkpoint holds."""
    run = multinet.load(cnn_checkpoint)
    result = run_cli("predict", str(cnn_checkpoint), *data_args(mnist), "--index", "3", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    expected = run.probabilities(mnist.test_images[3:4])[0]
    assert answer["label"] == int(mnist.test_labels[3])
    assert answer["prediction"] == int(expected.argmax())
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=0, atol=1e-12)
    picture = pictures.save_png(mnist.test_images[3], tmp_path / "three.png")
    result = run_cli("predict", str(cnn_checkpoint), "--image", str(picture), "--json")
    assert result.returncode == 0, result.stderr
    [seen] = json.loads(result.stdout)
    digit = pictures.mnist_digit(picture)
    np.testing.assert_allclose(seen["probabilities"], run.probabilities(digit[None])[0],
                               rtol=0, atol=1e-12)
