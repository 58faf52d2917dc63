"""Any picture of a digit as MNIST itself would have made it: 28x28, ink 1, centred.

A network trained on MNIST has only seen digits prepared one way, so a photo, a scan or
a drawing must be prepared the same way before it is asked. The recipe is MNIST's own, as
described by its authors (Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of
handwritten digits", http://yann.lecun.com/exdb/mnist/; Y. LeCun, L. Bottou, Y. Bengio,
P. Haffner, "Gradient-based learning applied to document recognition", Proc. IEEE 86(11),
1998, section III-A): the black-and-white NIST digits were size-normalised to fit a 20x20
pixel box keeping their aspect ratio (the anti-aliasing of that step makes the grey
levels), then placed in a 28x28 field so that their centre of mass is at its centre.

NIST's originals were clean bilevel scans; pictures people take are not, so the steps
before that recipe turn any picture into such an ink map:

1. ``read_picture``: Pillow opens the file; pictures over ``MAX_PIXELS`` are refused
   before they are decoded (decompression bombs); the EXIF orientation is applied.
   HEIC/HEIF photos are read through pillow-heif where it is installed, and otherwise
   refused with the line that installs it.
   Very large ones are then shrunk by a whole factor (``SHRINK_TO``).
2. ``intensity``: any mode and bit depth becomes one float per pixel in 0..1 without
   clipping: 8-bit and 16-bit by their full scale, 32-bit integer and float pictures
   (which carry no full scale) by their own range; colour by Rec. 601 luma (Pillow's
   own weights); an alpha channel is composited onto a background that contrasts with
   the opaque pixels, not dropped, and a key colour (PNG ``tRNS``, GIF transparency)
   stays the paper it was.
3. ``ink_map``: the background level is the median of the picture's border; whichever
   side of it holds the stronger deviations is the ink (dark on light or light on dark,
   whatever the mean); the contrast is stretched so the background is 0 and the ink 1.
4. ``ink_box``: the bounding box of the pixels at least half ink (the bilevel
   original's box), so faint noise and the anti-aliased fringe do not widen it.
5. ``size_normalise``: that box scaled, anti-aliased, so its longer side is 20 pixels.
6. ``centre_by_mass``: placed in 28x28 with its centre of mass at the centre, pixel
   (14, 14), where MNIST's own digits have theirs.

``mnist_digit`` runs them all. Errors are ``PictureError``: one line each. The other
way round, ``save_png`` writes a 28x28 digit as a picture and ``render`` draws it as
text for a terminal.
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np

from multinet.errors import MultinetError
from multinet.files import special, write_atomic

#: MNIST's field and the box its digits were scaled into (LeCun et al.).
FIELD = 28
BOX = 20
#: The largest picture read, in pixels: 64 megapixels (a 50-megapixel photo fits); a
#: larger one is refused before decoding (a small file can claim a huge size).
MAX_PIXELS = 64_000_000
#: Pictures at least twice this on their shorter side are shrunk by a whole factor.
SHRINK_TO = 1024
#: Ink must differ from the background by this much (of full scale) to count at all,
#: and by this many standard deviations of the border's noise.
MIN_CONTRAST = 0.04
NOISE_SIGMAS = 6.0
#: The ink level: this percentile of the ink pixels' contrast becomes 1.
INK_PERCENTILE = 90.0
#: Pixels at least this much ink make up the ink's bounding box.
BOX_LEVEL = 0.5
#: Boxes more than twice this times the 20-pixel box are first shrunk by averaging
#: whole blocks, so that Lanczos shrinks them this to twice this many times.
REDUCING_GAP = 8
#: Rec. 601 luma weights, as Pillow's ``convert("L")`` uses.
LUMA = np.array([0.299, 0.587, 0.114])

#: HEIC/HEIF, phones' photos: Pillow reads them only through the pillow-heif plug-in.
HEIF_EXTENSIONS = (".heic", ".heics", ".heif", ".heifs", ".hif")
#: The brands of an ISO base media file (bytes 8-12, after ``ftyp``) that are HEIF images.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
HEIF_NEEDS = "HEIC/HEIF pictures need the pillow-heif plug-in: pip install pillow-heif"

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


class PictureError(MultinetError, ValueError):
    """A picture that cannot be read or holds no digit; the message is one line."""


def require_pillow():
    """Pillow's ``Image`` and ``ImageOps`` modules, taught HEIC/HEIF where pillow-heif is
    installed (``heif_supported``); ``MultinetError`` naming the extra to install when
    Pillow is missing."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise MultinetError('reading pictures needs Pillow: pip install "multinet[images]"'
                            ) from None
    heif_supported()
    return Image, ImageOps


@functools.cache
def heif_supported() -> bool:
    """Whether Pillow reads HEIC/HEIF here: pillow-heif, where installed, registers its
    opener with Pillow (once)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _is_heif(source) -> bool:
    """Whether ``source`` (a path or a binary file) is named or made as a HEIF picture."""
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in HEIF_EXTENSIONS:
        return True
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as file:
                head = file.read(12)
        else:
            source.seek(0)
            head = source.read(12)
    except (OSError, AttributeError, ValueError):
        return False
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _name(source) -> str:
    """How errors name a picture: its path, or the file object's name."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", "picture"))


def read_picture(source, *, max_pixels: int = MAX_PIXELS):
    """Open ``source`` (a path or a binary file) as an upright, decoded Pillow image.

    Only the first frame of a multi-frame file is used. Raises ``PictureError`` for
    anything Pillow cannot decode, for pictures over ``max_pixels`` pixels (checked
    from the header, before decoding), and for a path that is a folder, a named pipe, a
    socket or a device (told from ``stat``, never opened: a FIFO would wait forever).
    """
    Image, ImageOps = require_pillow()
    name = _name(source)
    kind = special(source) if isinstance(source, (str, os.PathLike)) else None
    if kind is not None:
        raise PictureError(f"{name}: is {kind}, not a picture file")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past twice its limit refuses) on huge pictures; both are
            # refusals here, so that the limit is ours and never a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise PictureError(f"{name}: {width}x{height} pixels is too large to be "
                                       f"a sensible picture (limit {max_pixels:,} pixels)")
                img.load()
                # A transposed copy, or a plain copy when there is no orientation: it
                # outlives the file.
                return ImageOps.exif_transpose(img)
    except PictureError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise PictureError(f"{name}: too large to be a sensible picture ({exc})") from None
    except FileNotFoundError:
        raise PictureError(f"{name}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - decoders of untrusted files raise anything
        if not heif_supported() and _is_heif(source):
            raise PictureError(f"{name}: {HEIF_NEEDS}") from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PictureError(f"{name}: cannot read the picture ({reason})") from None


def _key_luma(img) -> float | None:
    """The luma of a picture's one transparent colour (PNG ``tRNS`` in a greyscale, RGB
    or palette picture, GIF's transparent index), or None: no key colour, or a palette
    whose entries are partly transparent (a real alpha channel)."""
    key = img.info.get("transparency")
    if img.mode == "P" and isinstance(key, bytes):
        clear = [i for i, a in enumerate(key) if a == 0]
        key = clear[0] if len(clear) == 1 and set(key) <= {0, 255} else None
    if img.mode == "P" and isinstance(key, int):
        palette = img.getpalette("RGB") or []
        key = tuple(palette[3 * key:3 * key + 3]) or None
    if isinstance(key, int) and img.mode in ("L", "1"):
        return key / (1.0 if img.mode == "1" and key <= 1 else 255.0)
    if isinstance(key, tuple) and len(key) == 3:
        return float(LUMA @ np.asarray(key, dtype=np.float64)) / 255.0
    return None


def _composite(luma: np.ndarray, alpha: np.ndarray, key: float | None = None) -> np.ndarray:
    """Alpha-composite the transparent pixels onto the background.

    Where transparency is one key colour (``key``, its luma: "white is transparent"),
    that colour was the paper: the transparent pixels keep it, since anti-aliased ink
    fades into it and any other background would outline every stroke. Otherwise (an
    alpha channel, or ink drawn in the key colour itself: no opaque pixel differs from
    it by ``MIN_CONTRAST``), onto white when the opaque pixels are dark, else onto
    black, so that ink drawn on a transparent background stays visible whatever its
    colour.
    """
    weight = alpha.sum()
    if weight == 0:
        return np.zeros_like(luma)
    opaque = luma[alpha > 0]
    if key is not None and np.any(np.abs(opaque - key) > MIN_CONTRAST):
        background = key
    else:
        background = 1.0 if float((luma * alpha).sum() / weight) < 0.5 else 0.0
    return alpha * luma + (1.0 - alpha) * background


def _shrink_factor(shape_or_size) -> int:
    """``shorter side // SHRINK_TO`` (at least 1): that side, divided by it, ends between
    ``SHRINK_TO`` and twice that."""
    return max(1, min(shape_or_size) // SHRINK_TO)


def _block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Each ``factor`` x ``factor`` block averaged, for the modes Pillow's
    ``Image.reduce`` does not take. The rows and columns left over at the bottom and
    right (background, at the very edge) are dropped, where ``reduce`` averages them
    as a smaller block."""
    if factor == 1:
        return values
    h, w = (n // factor * factor for n in values.shape)
    return values[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def intensity(img) -> np.ndarray:
    """A Pillow image as ``float64`` ``(height, width)`` intensity in 0..1.

    8-bit modes are divided by 255 and 16-bit ones by 65535; 32-bit integer (``I``) and
    float (``F``) pictures by their own range (min to max), since they carry no full
    scale. Colour becomes Rec. 601 luma. A picture whose shorter side is at least twice
    ``SHRINK_TO`` is first shrunk by a whole factor (each block averaged), down to
    between ``SHRINK_TO`` and twice that: the digit ends up 20 pixels tall anyway, and a
    camera's photo then takes tens of megabytes, not gigabytes. Raises ``PictureError``
    for non-finite values and modes Pillow cannot convert.
    """
    mode, factor = img.mode, _shrink_factor(img.size)
    if mode in _SIXTEEN_BIT:  # Image.reduce does not take 16-bit modes
        return _block_mean(np.asarray(img, dtype=np.float64), factor) / 65535.0
    if mode in ("I", "F"):
        values = np.asarray(img.reduce(factor) if factor > 1 else img, dtype=np.float64)
        if not np.isfinite(values).all():
            raise PictureError("the picture has pixels that are not finite numbers")
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    has_alpha = mode in _WITH_ALPHA or "transparency" in img.info
    key = None if mode in _WITH_ALPHA else _key_luma(img)
    try:
        img = img.convert("L" if mode in ("1", "L") and not has_alpha
                          else "RGBA" if has_alpha else "RGB")
    except ValueError as exc:  # a mode Pillow cannot convert to RGB
        raise PictureError(f"cannot use a picture in mode {mode} ({exc})") from None
    if factor > 1:
        img = img.reduce(factor)
    if img.mode == "L":
        return np.asarray(img, dtype=np.float64) / 255.0
    luma = sum(weight * np.asarray(img.getchannel(band), dtype=np.float64)
               for weight, band in zip(LUMA, "RGB")) / 255.0
    if not has_alpha:
        return luma
    return _composite(luma, np.asarray(img.getchannel("A"), dtype=np.float64) / 255.0, key)


def _border(values: np.ndarray) -> np.ndarray:
    """The pixels of a ring around the picture, 2% of its shorter side wide (at least 1)."""
    width = max(1, min(values.shape) // 50)
    ring = np.ones(values.shape, dtype=bool)
    ring[width:-width, width:-width] = False
    return values[ring]


def ink_map(values: np.ndarray) -> np.ndarray:
    """Intensity ``(h, w)`` in 0..1 -> ink ``(h, w)`` ``float64``: background 0, ink 1.

    The background is the border's median and its noise the border's median absolute
    deviation. A pixel deviates significantly if it is more than ``MIN_CONTRAST`` and
    ``NOISE_SIGMAS`` noise deviations away; the ink is the side (darker or lighter)
    whose significant deviations carry more energy (sum of squares), so a large area of
    mild shading loses to strong strokes. Deviations within the noise become 0; the
    ``INK_PERCENTILE`` of the ink's deviations becomes 1 (above it is clipped).
    Raises ``PictureError`` when nothing deviates: the picture has no ink.
    """
    border = _border(values)
    background = float(np.median(border))
    noise = NOISE_SIGMAS * 1.4826 * float(np.median(np.abs(border - background)))
    threshold = max(MIN_CONTRAST, noise)
    deviation = values - background
    significant = deviation[np.abs(deviation) > threshold]
    if significant.size == 0:
        raise PictureError(f"no ink: no pixel differs from the background "
                           f"({background:.2f}) by more than {threshold:.2f}")
    lighter = float(np.sum(np.square(significant[significant > 0])))
    darker = float(np.sum(np.square(significant[significant < 0])))
    ink = deviation if lighter > darker else -deviation
    level = float(np.percentile(ink[ink > threshold], INK_PERCENTILE))
    return np.clip(np.where(ink > noise, ink, 0.0) / level, 0.0, 1.0)


def ink_box(ink: np.ndarray, level: float = BOX_LEVEL) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)``, end-exclusive: the box of the pixels >= ``level``."""
    rows = np.flatnonzero((ink >= level).any(axis=1))
    cols = np.flatnonzero((ink >= level).any(axis=0))
    if rows.size == 0:
        raise PictureError("no ink: no pixel is half ink")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def size_normalise(ink: np.ndarray, box: tuple[int, int, int, int], size: int = BOX,
                   margin: int = (FIELD - BOX) // 2) -> tuple[np.ndarray, tuple[int, int]]:
    """Scale ``ink`` so that ``box`` becomes ``size`` pixels on its longer side.

    The aspect ratio is kept (the shorter side rounds to whole pixels, at least 1);
    resampling is Pillow's Lanczos on float data, which averages (anti-aliases) when it
    shrinks; a box over ``2 * REDUCING_GAP * size`` pixels is first shrunk by averaging
    whole blocks, so memory stays small whatever the box's shape. ``margin`` pixels are
    kept on every side so the anti-aliased fringe outside the box survives. Returns the
    patch ``(h, w)`` ``float64`` in 0..1 and the box's ``(height, width)`` inside it,
    the box starting at ``(margin, margin)``.
    """
    Image, _ = require_pillow()
    top, left, bottom, right = box
    height, width = bottom - top, right - left
    scale = size / max(height, width)
    inner = (max(1, round(height * scale)), max(1, round(width * scale)))
    # The source region of the output patch, margins included, is exact in floats; it
    # may run past the picture, so the box is cut out with background padding around it
    # (Pillow's resampling box must lie inside its image). That region is about
    # (1.5 x the box's longer side) squared whatever the box's shape, so a long box
    # (a line across a panorama) would need gigabytes: k x k blocks are averaged first,
    # as Pillow's own ``reducing_gap`` does, leaving Lanczos to shrink at most
    # ``REDUCING_GAP`` to 2 x ``REDUCING_GAP`` times.
    k = max(1, int(1 / (scale * REDUCING_GAP)))
    pad = k * math.ceil((math.ceil((margin + 1) / scale) + 1) / k)  # whole blocks
    region = np.zeros((-(-(height + 2 * pad) // k), -(-(width + 2 * pad) // k)),
                      dtype=np.float32)
    src = ink[max(0, top - pad):bottom + pad, max(0, left - pad):right + pad]
    y, x = max(0, pad - top), max(0, pad - left)  # where src starts in the region
    if k > 1:  # align src to the region's blocks, then average each block
        aligned = np.zeros((-(-(y % k + src.shape[0]) // k) * k,
                            -(-(x % k + src.shape[1]) // k) * k), dtype=np.float32)
        aligned[y % k:y % k + src.shape[0], x % k:x % k + src.shape[1]] = src
        src, y, x = _block_mean(aligned, k), y // k, x // k
    region[y:y + src.shape[0], x:x + src.shape[1]] = src
    scale *= k
    start = pad / k - margin / scale
    patch = Image.fromarray(region).resize(
        (inner[1] + 2 * margin, inner[0] + 2 * margin), Image.Resampling.LANCZOS,
        box=(start, start, start + (inner[1] + 2 * margin) / scale,
             start + (inner[0] + 2 * margin) / scale))
    return np.clip(np.asarray(patch, dtype=np.float64), 0.0, 1.0), inner


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """``(row, column)`` of the intensity-weighted mean pixel position (pixel centres)."""
    total = image.sum()
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def centre_by_mass(patch: np.ndarray, inner: tuple[int, int], margin: int,
                   field: int = FIELD) -> np.ndarray:
    """Place ``patch`` in a ``field`` x ``field`` square, its centre of mass at the centre.

    The centre is pixel ``(field // 2, field // 2)``, counting rows and columns from 0:
    MNIST's own digits have theirs there (over its 60,000 training digits the mean is
    (13.996, 14.007), and all but two lie within half a pixel of 14 on both axes), half
    a pixel past the geometric centre 13.5. The shift is in whole pixels (no further
    blurring), so the centre of mass lands within half a pixel of it, unless that would
    push part of the box (``inner`` at ``(margin, margin)`` in ``patch``) out of the
    field: then the box is kept whole and the centre of mass is as close as that allows.
    """
    out = np.zeros((field, field), dtype=np.float64)
    com = centre_of_mass(patch)
    offsets = []
    for axis in range(2):
        shift = math.floor(field // 2 - com[axis] + 0.5)
        lowest, highest = -margin, field - margin - inner[axis]
        offsets.append(min(max(shift, lowest), highest))
    dy, dx = offsets
    ys, xs = max(0, -dy), max(0, -dx)
    ye, xe = min(patch.shape[0], field - dy), min(patch.shape[1], field - dx)
    out[ys + dy:ye + dy, xs + dx:xe + dx] = patch[ys:ye, xs:xe]
    return out


def mnist_digit(source, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any picture of one digit (path or binary file) -> 28x28 ``uint8``, as in MNIST:
    ink 255 on a 0 background, the ink's box 20 pixels on its longer side, centred by
    its centre of mass. Raises ``PictureError`` (one line, naming the file) when the
    picture cannot be read, is too large, or has no ink."""
    name = _name(source)
    picture = read_picture(source, max_pixels=max_pixels)
    try:
        ink = ink_map(intensity(picture))
        box = ink_box(ink)
    except PictureError as exc:
        raise PictureError(f"{name}: {exc}") from None
    margin = (FIELD - BOX) // 2
    patch, inner = size_normalise(ink, box, BOX, margin)
    return np.round(centre_by_mass(patch, inner, margin) * 255.0).astype(np.uint8)


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The files directly in ``folder`` whose extension Pillow can open, sorted by name;
    hidden files and folders are left out. HEIC/HEIF files are listed even where Pillow
    cannot read them (no pillow-heif), and so are named pipes, devices and broken links
    with a picture's name: ``read_picture`` then says what each is (or what to install),
    where leaving them out would drop them without a word."""
    Image, _ = require_pillow()
    Image.init()
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    readable.update(HEIF_EXTENSIONS)
    return sorted(p for p in Path(folder).iterdir()
                  if not p.is_dir() and not p.name.startswith(".")
                  and p.suffix.lower() in readable)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a 2-D ``uint8`` array as an 8-bit greyscale PNG, whole or not at all
    (``multinet.files.write_atomic``)."""
    Image, _ = require_pillow()
    encoded = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(encoded, format="PNG")
    return write_atomic(path, encoded.getvalue())


#: Dark to bright, for drawing a 28x28 image in a terminal.
SHADES = " .:-=+*#%@"


def render(image: np.ndarray) -> str:
    """A 28x28 ``uint8`` image as text, two characters per pixel so it keeps its shape."""
    levels = (image.astype(np.int64) * len(SHADES)) // 256
    return "\n".join("".join(SHADES[v] * 2 for v in row) for row in levels)
