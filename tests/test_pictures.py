"""Pictures as MNIST would have made them (``multinet/pictures.py``).

Each preprocessing step is checked on a known input with its exact output. Then MNIST
test digits are rendered the ways people make pictures (``helpers.VARIANTS``: on paper,
transparent, 16-bit, float, rotated by EXIF, cropped wide or tall, small on a page, grey
paper, chalk on a board, coloured, JPEG noise...) and a network trained here (the
``network`` fixture) must read every variant within 5 points of the plain 28x28 digits.
``predict --image`` is in test_cli_predict.py.
"""

import os
import re
import signal
import struct
import sys
import tracemalloc
import zlib

import numpy as np
import pytest

pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'multinet[images]')")
from PIL import Image, ImageDraw  # noqa: E402

from helpers import VARIANTS, encoded  # noqa: E402
from multinet import pictures  # noqa: E402
from multinet.evaluation import probabilities  # noqa: E402
from multinet.pictures import PictureError  # noqa: E402
from multinet.registry import get_backend  # noqa: E402

#: How far (in accuracy) a variant may fall from the plain 28x28 digits.
TOLERANCE = 0.05


def com(image):
    return pictures.centre_of_mass(np.asarray(image, dtype=np.float64))


# --- reading: modes, bit depths, alpha, orientation, limits -----------------------------

def test_sixteen_bit_keeps_every_level():
    ramp = np.arange(0, 65535, 65, dtype=np.uint16).reshape(1, -1)  # 1009 levels
    values = pictures.intensity(pictures.read_picture(encoded(Image.fromarray(ramp), "PNG")))
    np.testing.assert_array_equal(values, ramp / 65535.0)
    assert len(np.unique(values)) == ramp.size


@pytest.mark.parametrize("mode, dtype", [("F", np.float32), ("I", np.int32)])
def test_float_and_32_bit_pictures_span_their_own_range(mode, dtype):
    raw = np.array([[-3, 2, 7], [0, 1, 4]], dtype=dtype)
    img = Image.fromarray(raw)
    assert img.mode == mode
    read = pictures.read_picture(encoded(img, "TIFF"))
    np.testing.assert_allclose(pictures.intensity(read), (raw.astype(np.float64) + 3) / 10,
                               rtol=1e-12)


def test_a_float_picture_with_nan_is_refused():
    raw = np.array([[0.0, np.nan], [1.0, 0.5]], dtype=np.float32)
    with pytest.raises(PictureError, match="not finite"):
        pictures.intensity(Image.fromarray(raw))


def test_colour_is_rec601_luma_and_bilevel_is_0_or_1():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    np.testing.assert_allclose(pictures.intensity(Image.fromarray(rgb)),
                               [[0.299, 0.587, 0.114, 1.0]], rtol=1e-12)
    bilevel = Image.fromarray(np.array([[True, False]]))
    assert bilevel.mode == "1"
    np.testing.assert_array_equal(pictures.intensity(bilevel), [[1.0, 0.0]])
    cmyk = Image.fromarray(rgb).convert("CMYK")
    np.testing.assert_allclose(pictures.intensity(cmyk), [[0.299, 0.587, 0.114, 1.0]],
                               atol=1e-12)


def test_alpha_is_composited_onto_a_background_that_shows_the_ink():
    # Black ink, half-transparent ink, and fully transparent pixels whose colour
    # (black, as drawing programs leave it) must not show.
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 255, 51
    np.testing.assert_allclose(pictures.intensity(Image.fromarray(rgba)),
                               [[0.0, 0.8, 1.0]], rtol=1e-12)
    # White ink on transparency goes onto black.
    rgba[..., :3] = 255
    np.testing.assert_allclose(pictures.intensity(Image.fromarray(rgba)),
                               [[1.0, 0.2, 0.0]], rtol=1e-12)
    # A palette picture with a transparent index is composited the same way.
    palette = Image.fromarray(np.array([[0, 1, 1]], np.uint8)).convert("P")
    palette.info["transparency"] = 1
    assert pictures.intensity(palette)[0, 1] == 1.0
    assert pictures.intensity(palette)[0, 0] == 0.0
    everywhere = np.zeros((2, 2, 4), np.uint8)
    assert not pictures.intensity(Image.fromarray(everywhere)).any()


def test_a_key_colour_is_the_paper_not_a_hole():
    """"White is transparent" (PNG ``tRNS``, GIF's transparent index): the transparent
    pixels are the white paper. Composited by the opaque pixels' mean, a pale fringe
    outnumbering the ink chose black, and each stroke became a hollow outline."""
    fringe = np.array([[255, 255, 250, 250, 250, 0, 255]], np.uint8)
    keyed = Image.fromarray(fringe)
    keyed.info["transparency"] = 255
    np.testing.assert_allclose(pictures.intensity(keyed), fringe / 255.0, rtol=1e-12)
    rgb = Image.fromarray(np.stack([fringe] * 3, axis=-1))
    rgb.info["transparency"] = (255, 255, 255)
    np.testing.assert_allclose(pictures.intensity(rgb), fringe / 255.0, rtol=1e-12)
    # A palette whose one fully transparent entry is white, as a PNG tRNS writes it.
    palette = keyed.convert("P")
    white = palette.getpalette("RGB").index(255) // 3
    alphas = bytearray([255] * 256)
    alphas[white] = 0
    palette.info["transparency"] = bytes(alphas)
    np.testing.assert_allclose(pictures.intensity(palette), fringe / 255.0, rtol=1e-12)
    # Ink drawn in the key colour itself (black on a black key): the contrasting
    # background, as for an alpha channel.
    ink = Image.fromarray(np.array([[0, 1, 1]], np.uint8)).convert("P")
    ink.putpalette([0, 0, 0] * 256)
    ink.info["transparency"] = 1
    assert pictures.intensity(ink).tolist() == [[0.0, 1.0, 1.0]]


def test_exif_orientation_is_applied():
    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    read = pictures.read_picture(encoded(Image.fromarray(stored), "PNG", exif=exif.tobytes()))
    np.testing.assert_array_equal(np.asarray(read), np.rot90(stored, k=-1))
    photo = encoded(Image.fromarray(stored).convert("RGB"), "JPEG", exif=exif.tobytes())
    assert pictures.read_picture(photo).size == (2, 3)


def test_a_large_picture_is_shrunk_by_a_whole_factor_first():
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 65536, (2100, 2200), dtype=np.uint16)
    values = pictures.intensity(Image.fromarray(raw))
    assert values.shape == (1050, 1100)  # 2100 // 1024 = 2
    expected = raw.astype(np.float64).reshape(1050, 2, 1100, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(values, expected / 65535, rtol=1e-12)
    photo = Image.new("RGB", (4100, 3100), (255, 0, 0))
    values = pictures.intensity(photo)
    assert values.shape == (1034, 1367)  # 3100 // 1024 = 3, the last block smaller
    np.testing.assert_allclose(values, 0.299, rtol=1e-12)
    assert pictures.intensity(photo.crop((0, 0, 2047, 2047))).shape == (2047, 2047)


def png_header_only(width, height):
    """A tiny PNG file claiming ``width`` x ``height`` pixels (and holding none)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(9000, 8000), (100_000, 100_000)])
def test_decompression_bombs_are_refused_before_decoding(width, height, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(width, height))  # a 67-byte file
    with pytest.raises(PictureError, match="too large") as raised:
        pictures.mnist_digit(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


#: The start of a HEIC file (an ISO base media ``ftyp`` box, brand ``heic``), and no more.
HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"


@pytest.fixture
def without_pillow_heif(monkeypatch):
    """As where pillow-heif is not installed (its import fails)."""
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    pictures.heif_supported.cache_clear()
    yield
    pictures.heif_supported.cache_clear()


def test_without_pillow_heif_a_heif_picture_says_what_to_install(tmp_path,
                                                                 without_pillow_heif):
    """HEIC photos were dropped from a folder without a word, and a folder of them alone
    said "no picture files"."""
    (tmp_path / "phone.HEIC").write_bytes(HEIC_HEAD)
    (tmp_path / "renamed.jpg").write_bytes(HEIC_HEAD)  # told by its content
    (tmp_path / "notes.txt").write_text("not a picture")
    assert [p.name for p in pictures.image_files(tmp_path)] == ["phone.HEIC", "renamed.jpg"]
    for name in ("phone.HEIC", "renamed.jpg"):
        with pytest.raises(PictureError) as raised:
            pictures.mnist_digit(tmp_path / name)
        assert str(raised.value) == (f"{tmp_path / name}: HEIC/HEIF pictures need the "
                                     "pillow-heif plug-in: pip install pillow-heif")
    with pytest.raises(PictureError, match="cannot read the picture"):  # not HEIF at all
        pictures.mnist_digit(tmp_path / "notes.txt")


def test_with_pillow_heif_a_heic_photo_reads_as_its_png(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    page = Image.fromarray(255 - digit).resize((112, 112))
    pillow_heif.register_heif_opener()
    page.save(tmp_path / "one.heic", quality=-1)  # lossless: the same pixels as the PNG
    assert [p.name for p in pictures.image_files(tmp_path)] == ["one.heic"]
    np.testing.assert_array_equal(pictures.mnist_digit(tmp_path / "one.heic"),
                                  pictures.mnist_digit(encoded(page, "PNG")))


def test_the_pixel_limit_can_be_lowered():
    small = encoded(Image.new("L", (100, 100), 255), "PNG")
    with pytest.raises(PictureError, match="100x100 pixels is too large"):
        pictures.read_picture(small, max_pixels=9999)


def test_unreadable_files_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture at all")
    with pytest.raises(PictureError, match="junk.png: cannot read the picture"):
        pictures.mnist_digit(junk)
    with pytest.raises(PictureError, match="missing.png: no such file"):
        pictures.mnist_digit(tmp_path / "missing.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(encoded(Image.new("L", (64, 64), 9), "PNG").getvalue()[:60])
    with pytest.raises(PictureError, match="truncated.png: cannot read the picture"):
        pictures.mnist_digit(truncated)


def test_a_named_pipe_or_a_device_is_refused_without_being_opened(tmp_path):
    """``predict --image ff.png`` (a FIFO) waited for a writer for ever, and a FIFO in a
    folder was left out without a word."""
    os.mkfifo(tmp_path / "ff.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    signal.alarm(10)  # a FIFO opened would wait for a writer: fail rather than hang
    try:
        for path, said in ((tmp_path / "ff.png", "is a named pipe (FIFO), not a picture file"),
                           ("/dev/zero", "is a device, not a picture file"),
                           (tmp_path / "folder.png", "is a folder, not a picture file")):
            with pytest.raises(PictureError, match=re.escape(f"{path}: {said}")):
                pictures.mnist_digit(path)
    finally:
        signal.alarm(0)
    # Listed, so that each gets its own line; a folder is no picture file to list.
    assert [p.name for p in pictures.image_files(tmp_path)] == ["ff.png", "gone.png"]
    with pytest.raises(PictureError, match="gone.png: no such file"):
        pictures.mnist_digit(tmp_path / "gone.png")


# --- ink: polarity from the border, contrast stretch ------------------------------------

def paper_with_block(paper, pen, shape=(40, 40)):
    values = np.full(shape, paper / 255)
    values[10:30, 15:25] = pen / 255
    return values


def test_dark_ink_on_grey_paper_whose_mean_is_dark():
    values = paper_with_block(110, 20)
    values[5, 5] = 65 / 255  # half-way between paper and ink
    assert values.mean() < 0.5  # the old rule (invert if the mean is bright) fails here
    ink = pictures.ink_map(values)
    expected = np.zeros_like(values)
    expected[10:30, 15:25], expected[5, 5] = 1.0, 0.5
    np.testing.assert_allclose(ink, expected, rtol=1e-12, atol=1e-15)


def test_light_ink_on_dark_is_read_as_ink():
    values = paper_with_block(45, 225)
    expected = np.zeros_like(values)
    expected[10:30, 15:25] = 1.0
    np.testing.assert_allclose(pictures.ink_map(values), expected, rtol=1e-12)


def test_a_white_speck_does_not_turn_the_picture_over():
    values = paper_with_block(110, 20)
    values[36, 3] = 1.0  # brighter than the ink is dark, but one pixel
    ink = pictures.ink_map(values)
    assert ink[36, 3] == 0.0 and (ink[10:30, 15:25] == 1.0).all()


def test_paper_noise_becomes_background(rng):
    values = paper_with_block(230, 25) + rng.uniform(-0.01, 0.01, (40, 40))
    ink = pictures.ink_map(values)
    outside = np.ones(values.shape, bool)
    outside[10:30, 15:25] = False
    assert (ink[outside] == 0.0).all()
    # Off by at most the noise of the pixel, of the background and of the ink level
    # (0.01 each) over the contrast (205 / 255).
    assert np.abs(ink[10:30, 15:25] - 1.0).max() <= 0.03 / (205 / 255)


@pytest.mark.parametrize("faint", [0.0, 0.03])
def test_a_picture_without_ink_is_refused(faint):
    values = np.full((30, 30), 0.7)
    values[10:20, 10:20] += faint
    with pytest.raises(PictureError, match="no ink"):
        pictures.ink_map(values)


# --- the box, size normalisation, centring ----------------------------------------------

def test_ink_box_ignores_faint_pixels():
    ink = np.zeros((30, 40))
    ink[5:15, 8:30] = 1.0
    ink[25, 35] = 0.3   # faint: outside the box
    ink[16, 8] = 0.5    # half ink: inside
    assert pictures.ink_box(ink) == (5, 8, 17, 30)


@pytest.mark.parametrize("block, inner", [
    ((slice(50, 250), slice(60, 160)), (20, 10)),   # tall, shrunk ten times
    ((slice(40, 70), slice(10, 190)), (3, 20)),     # wide
    ((slice(100, 105), slice(30, 33)), (20, 12)),   # small, enlarged four times
])
def test_the_box_becomes_20_pixels_on_its_longer_side_keeping_its_shape(block, inner):
    ink = np.zeros((300, 200))
    ink[block] = 1.0
    box = pictures.ink_box(ink)
    patch, got = pictures.size_normalise(ink, box, size=20, margin=4)
    assert got == inner
    assert patch.shape == (inner[0] + 8, inner[1] + 8)
    assert pictures.ink_box(patch) == (4, 4, 4 + inner[0], 4 + inner[1])
    assert patch.min() >= 0.0 and patch.max() <= 1.0


def test_a_long_box_is_shrunk_in_little_memory(monkeypatch):
    """A line across a panorama: the padded region around its box used to be about
    (1.5 x 8000)^2 floats (190 MB here; 11 GB for a 60000-pixel-wide picture); blocks
    are now averaged first, and the patch stays what plain Lanczos makes of it."""
    ink = np.zeros((43, 8007))
    ink[13:33, 7:] = 1.0
    box = pictures.ink_box(ink)
    tracemalloc.start()
    try:
        patch, inner = pictures.size_normalise(ink, box, size=20, margin=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12e6  # the ink itself is 2.8 MB
    assert inner == (1, 20) and patch.shape == (9, 28)
    monkeypatch.setattr(pictures, "REDUCING_GAP", 1e9)  # no blocks: Lanczos alone
    plain, _ = pictures.size_normalise(ink, box, size=20, margin=4)
    np.testing.assert_allclose(patch, plain, atol=0.005)


def test_a_large_box_reads_the_same_with_and_without_block_averaging(monkeypatch):
    seven = np.asarray(draw((900, 800), [(150, 100), (700, 120), (300, 700)], width=60,
                            ink=255, paper=0), dtype=np.float64) / 255
    box = pictures.ink_box(seven)
    patch, inner = pictures.size_normalise(seven, box)
    monkeypatch.setattr(pictures, "REDUCING_GAP", 1e9)
    plain, plain_inner = pictures.size_normalise(seven, box)
    assert inner == plain_inner and pictures.ink_box(patch) == pictures.ink_box(plain)
    np.testing.assert_allclose(patch, plain, atol=0.005)


def test_the_box_can_touch_the_edge_of_the_picture():
    ink = np.zeros((50, 30))
    ink[:, :12] = 1.0
    patch, inner = pictures.size_normalise(ink, pictures.ink_box(ink), size=20, margin=4)
    assert inner == (20, 5) and pictures.ink_box(patch) == (4, 4, 24, 9)


def test_centre_of_mass_lands_within_half_a_pixel_of_14_14():
    ink = np.zeros((300, 200))
    ink[50:250, 60:160] = 1.0
    ink[50:80, 60:100] = 0.0  # a notch, so the centre of mass is off the box's centre
    patch, inner = pictures.size_normalise(ink, pictures.ink_box(ink), 20, 4)
    field = pictures.centre_by_mass(patch, inner, 4)
    assert field.shape == (28, 28)
    assert field.sum() == pytest.approx(patch.sum())  # nothing cut off
    row, col = com(field)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5


def test_a_lopsided_digit_keeps_its_whole_box_in_the_field():
    patch = np.zeros((28, 28))
    patch[4:6, 4:24] = 1.0   # a heavy bar on top...
    patch[6:24, 13] = 0.05   # ...and a faint stem: the centre of mass is near the top
    field = pictures.centre_by_mass(patch, (20, 20), 4)
    assert field.sum() == pytest.approx(patch.sum())
    assert pictures.ink_box(field, 0.01)[2] == 28  # pushed as far down as the box allows


def test_mnist_itself_has_its_centre_of_mass_at_14_14(mnist):
    images = mnist.train_images[:2048].astype(np.float64)
    rows, cols = np.indices((28, 28))
    total = images.sum(axis=(1, 2))
    for weights in (rows, cols):
        centres = (images * weights).sum(axis=(1, 2)) / total
        assert abs(centres.mean() - 14.0) < 0.02
        assert np.abs(centres - 14.0).max() < 0.53


def draw(shape, lines, width, *, ink=0, paper=255):
    img = Image.new("L", shape, paper)
    ImageDraw.Draw(img).line(lines, fill=ink, width=width)
    return img


def test_a_drawn_digit_comes_out_20_pixels_tall_centred_by_mass():
    seven = draw((400, 300), [(60, 40), (250, 40), (120, 260)], width=24)
    field = pictures.mnist_digit(encoded(seven, "PNG"))
    assert field.dtype == np.uint8 and field.shape == (28, 28) and field.max() == 255
    top, left, bottom, right = pictures.ink_box(field / 255.0)
    assert bottom - top == 20 and right - left < 20
    row, col = com(field)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5


def test_a_digit_on_a_large_photo():
    seven = draw((4000, 3000), [(1400, 900), (2300, 900), (1700, 2200)], width=130,
                 ink=40, paper=200).convert("RGB")
    field = pictures.mnist_digit(encoded(seven, "JPEG", quality=90))
    top, left, bottom, right = pictures.ink_box(field / 255.0)
    assert bottom - top == 20 and right - left < 20
    row, col = com(field)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5


def test_a_wide_stroke_keeps_its_aspect_ratio():
    dash = draw((500, 300), [(100, 150), (400, 150)], width=60)
    top, left, bottom, right = pictures.ink_box(pictures.mnist_digit(encoded(dash, "PNG")) / 255)
    assert (bottom - top, right - left) == (round(60 * 20 / 300), 20)


def test_an_mnist_digit_comes_back_almost_unchanged(mnist):
    """MNIST's digits already are what the steps make, so they barely change."""
    for digit in mnist.test_images[:20]:
        again = pictures.mnist_digit(encoded(Image.fromarray(digit), "PNG"))
        assert np.abs(again.astype(int) - digit).mean() < 2.0


# --- every way of making a picture, read by a trained network ---------------------------

def rendered(variant, digits, seed=0):
    """Every digit made into a picture by ``variant`` and read back as MNIST would."""
    rng = np.random.default_rng(seed)
    return np.stack([pictures.mnist_digit(variant(digit, rng)) for digit in digits])


def accuracy(loaded, images, labels):
    probs = probabilities(loaded.params, get_backend("numpy"), images, loaded.config.dtype)
    return float(np.mean(probs.argmax(axis=1) == labels))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.__name__)
def test_every_kind_of_picture_reads_as_well_as_the_28x28_digits(network, variant):
    _, loaded, digits, labels = network
    control = accuracy(loaded, digits, labels)
    assert control > 0.8  # a network that reads digits, or the comparison means nothing
    got = accuracy(loaded, rendered(variant, digits), labels)
    assert abs(got - control) <= TOLERANCE, (variant.__name__, got, control)
