"""Decode one image file safely into an RGB uint8 array, or say in a few words why not.

Datasets collected from the wild hold truncated downloads, HTML pages saved as .jpg,
CMYK scans, 16-bit PNGs, palette images with transparency, phone photos stored sideways
with an EXIF orientation tag, and the occasional decompression bomb. Each becomes either
an (H, W, 3) uint8 RGB array as a person would see it, or an ImageError with a reason
short enough for one line of skipped.tsv.
"""
import functools
import hashlib
import io
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "decode_image", "decode_image_file", "image_to_rgb",
           "is_image_file"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

# Pillow's own default limit (a 1 GiB RGBA frame / 3): 89.5 megapixels, e.g. 10,000 x 8,900.
# Bigger files are refused before any pixel is decoded; a small file claiming a huge size
# (a decompression bomb) would otherwise make us allocate gigabytes.
MAX_PIXELS = 89_478_485

# Pillow only *warns* about images between its limit and twice its limit. Opening under
# a filter that turns that warning into an exception refuses them without printing.
# warnings.catch_warnings() swaps the process-wide filter list, so concurrent decoders
# could restore each other's lists: the lock makes them take turns, and only for
# Image.open, which parses the header; decoding the pixels runs in parallel.
_OPEN_LOCK = threading.Lock()

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def is_image_file(path):
    """True if the file name has an image extension (any case): .jpg .png .webp ...

    The extension only decides which files are *candidates*; `decode_image` sniffs the
    real format from the bytes, so a PNG named .jpg still decodes and a text file named
    .jpg is refused with a reason.
    """
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def decode_image(path, max_pixels=MAX_PIXELS, sha256=None, draft=None, pil=False):
    """Decode the file at `path` to an (H, W, 3) uint8 RGB array.

    The EXIF orientation is applied; animated files give their first frame; transparent
    pixels are composited on white; 16-bit and float images are scaled to 0..255.
    `max_pixels` can only lower the limit: Pillow's own (Image.MAX_IMAGE_PIXELS) still applies.
    With `sha256` (the hex digest the file had when it was hashed), the bytes decoded are
    the bytes checked against it, read once: a file changed since it was hashed is refused,
    so its features can never be cached under the old content's key. Memory stays a small
    multiple of pixels x bytes per pixel (transparency included): see _composite_on_white.
    `draft`: a side S in pixels, or None. A JPEG is then decoded by its DCT-domain scaling
    (Pillow's draft: 1/2, 1/4 or 1/8) to the smallest size whose shorter side is still >= S,
    far less work than decoding every pixel of a photo much larger than the model's input
    (different pixels too: the preprocessing recipe records it, "jpeg_draft").
    `pil`: an 8-bit RGB or grey image without transparency (most photos and scans) comes
    back as the loaded PIL image itself, mode RGB or L (grey: each of the three channels),
    so that cropping and resizing it need no copy through numpy (preprocess.py); any other
    image as the array.

    Raises:
        ImageError: the file cannot be read, is empty, is not an image (or claims a
            0-pixel size), is corrupt or truncated, or has more than `max_pixels` pixels.
    """
    try:
        status = Path(path).stat()
    except OSError as exc:
        raise ImageError(_reason(exc)) from exc
    if not stat.S_ISREG(status.st_mode) and not stat.S_ISDIR(status.st_mode):
        # a FIFO would block, /dev/zero never end (a folder: the OS's own reason below)
        raise ImageError("not a regular file (a FIFO, device or socket)")
    if status.st_size == 0:
        raise ImageError("the file is empty (0 bytes)")
    if sha256 is None:
        return _decode(path, max_pixels, draft, pil)
    try:
        source = _bytes_hashing_to(path, sha256)
    except OSError as exc:
        raise ImageError(_reason(exc)) from exc
    return _decode(source, max_pixels, draft, pil)


def decode_image_file(file, max_pixels=MAX_PIXELS, draft=None):
    """`decode_image` for an open binary file (an upload to `retrain serve`, spooled to
    memory or disk): the same decoding, limits and reasons. Reads from the start."""
    if file.seek(0, io.SEEK_END) == 0:
        raise ImageError("the image is empty (0 bytes)")
    file.seek(0)
    return _decode(file, max_pixels, draft)


def _decode(source, max_pixels, draft=None, pil=False):
    """A path or a binary file object -> (H, W, 3) uint8 RGB (or, with `pil`, the PIL image
    where it is 8-bit RGB or grey), or ImageError."""
    try:
        with _open_refusing_bombs(source) as image:
            _check_size(image, max_pixels)
            if draft and image.format == "JPEG":
                image.draft(image.mode, (draft, draft))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)   # a copy otherwise, 4 B/pixel
            oriented = image
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001
        # Pillow's format plugins raise assorted builtins on malformed data (OSError for
        # truncation, but also ValueError, EOFError, SyntaxError, struct.error, IndexError,
        # ZeroDivisionError...). One bad file among thousands must become a reason, not
        # end the run; only the reading of an untrusted file sits inside this try.
        raise ImageError(_reason(exc)) from exc
    if pil and oriented.mode in ("RGB", "L") and "transparency" not in oriented.info:
        return oriented
    return _to_rgb(oriented)


def _bytes_hashing_to(path, sha256):
    """The file's bytes, as a file object for Pillow, if their sha256 is `sha256`."""
    with open(path, "rb") as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ImageError("the file changed after this run hashed it (its bytes are no longer "
                         "the ones hashed); run the command again to use its new content")
    return io.BytesIO(data)


def image_to_rgb(image):
    """A PIL image already in memory (retrain.load(...).predict) -> (H, W, 3) uint8 RGB, as
    decode_image turns a file into one: EXIF orientation applied, alpha on white, 16-bit
    and float grey scaled."""
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF, as in _decode
        raise ImageError(_reason(exc)) from exc
    return _to_rgb(oriented)


def _open_refusing_bombs(path):
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def _check_size(image, max_pixels):
    # Pillow itself refuses a 0-pixel-wide header as unidentifiable, before this point.
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"refused as a possible decompression bomb: {width}x{height} = "
                         f"{width * height:,} pixels, over the limit of {max_pixels:,}")


def _reason(exc):
    """A one-line reason for a failure to open or decode a file."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"refused as a possible decompression bomb: {exc}"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read (unknown format or corrupt header)"
    if isinstance(exc, OSError) and exc.errno is not None:   # the OS failed, not the data
        return f"cannot read the file: {exc.strerror}"
    lines = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return f"corrupt or truncated image data ({detail})"


def _to_rgb(image):
    """A loaded PIL image of any mode -> (H, W, 3) uint8 RGB, as it looks on screen."""
    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        grey = _scale_to_uint8(np.asarray(image), mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    try:
        if mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image if mode == "RGBA" else image.convert("RGBA")   # no copy if RGBA
            return _composite_on_white(np.asarray(rgba))
        return np.array(image.convert("RGB"))
    except ValueError as exc:   # a mode Pillow cannot convert, e.g. premultiplied 'La'
        raise ImageError(f"unsupported colour mode {mode!r} ({exc})") from exc


def _scale_to_uint8(values, mode):
    """16-bit, 32-bit integer and float grey -> uint8, keeping the full tonal range.

    Pillow's own convert('RGB') clips these to 255 instead of scaling, which turns most
    16-bit photos white. 16-bit values map 0..65535 -> 0..255 (divide by 257, so 65535 is
    exactly 255). 32-bit 'I' images in practice carry 16-bit samples (older Pillow opened
    16-bit PNGs as 'I'), so they are clipped to 0..65535 and scaled the same way. Float
    images in 0..1 are scaled by 255; any other float range is clipped to 0..255. Worked
    out a block of rows at a time, so that the float64/int64 temporaries stay small.
    """
    if mode == "F":
        cleaned = functools.partial(np.nan_to_num, nan=0.0, posinf=255.0, neginf=0.0)
        ranges = [(block.min(), block.max()) for block in
                  (cleaned(rows.astype(np.float64)) for rows in _row_blocks(values))]
        unit = bool(ranges) and min(r[0] for r in ranges) >= 0.0 \
            and max(r[1] for r in ranges) <= 1.0
        return _by_rows(values, lambda block: np.clip(np.rint(
            cleaned(block.astype(np.float64)) * (255.0 if unit else 1.0)), 0, 255))
    return _by_rows(values, lambda block: (np.clip(block.astype(np.int64), 0, 65535) * 255
                                           + 32767) // 65535)


def _composite_on_white(rgba):
    """Alpha-composite (H, W, 4) uint8 over a white background -> (H, W, 3) uint8.

    White, not black: transparent product shots and logos are drawn for a light page,
    and black would invent dark edges the photographer never saw. In uint16, a block of
    rows at a time: rgb * a + 255 * (255 - a) + 127 is at most 65,152, so nothing
    overflows, and a 9400x9400 image needs tens of MB beside its pixels, not gigabytes
    (uint32 arrays of the whole image took more than 4 GB).
    """
    def blend(block):
        alpha = block[:, :, 3:].astype(np.uint16)
        mixed = block[:, :, :3] * alpha
        mixed += 255 * (255 - alpha)
        mixed += 127
        return mixed // 255
    return _by_rows(rgba, blend, channels=3)


_BLOCK_PIXELS = 1 << 20


def _row_blocks(values):
    rows = max(1, _BLOCK_PIXELS // max(1, values.shape[1] if values.ndim > 1 else 1))
    return (values[top:top + rows] for top in range(0, values.shape[0], rows))


def _by_rows(values, convert, channels=None):
    """uint8 of convert(block) for each block of about a million pixels of `values`."""
    shape = values.shape[:2] + ((channels,) if channels else ())
    out = np.empty(shape, np.uint8)
    top = 0
    for block in _row_blocks(values):
        out[top:top + len(block)] = convert(block)
        top += len(block)
    return out
