"""Fixtures for pipeline tests: a hostile dataset folder and a small image-tree maker.

`hostile_dataset` builds, in tmp_path, the kind of folder users really have: every image
mode and container that needs care, files that must be refused (each with the reason
expected), files and folders that must be ignored, unicode names and symlink loops.
Other pipeline tests (features, pipeline, CLI) use it as their end-to-end input.
"""
import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


@dataclass
class HostileDataset:
    """A DATA folder and what a correct ingest + validate must make of it.

    classes: the classes kept (the empty class folder is left out).
    good: relative path -> (height, width) it must decode to (EXIF orientation applied).
    bad: relative path -> regex its skip reason must match.
    ignored: relative paths that must appear nowhere (hidden files, non-images, loops).
    """
    root: Path
    classes: list
    good: dict
    bad: dict
    ignored: list

    def path(self, relative):
        return self.root / relative


def png_bytes_claiming(width, height):
    """A valid-looking ~70-byte RGB PNG whose header claims width x height pixels."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def jpeg_bytes(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def two_colour_image(size, left=RED, right=BLUE, mode="RGB"):
    """An image whose left half is `left` and right half `right` (shows orientation)."""
    width, height = size
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:, : width // 2] = left
    pixels[:, width // 2:] = right
    return Image.fromarray(pixels).convert(mode)


def exif_rotated_jpeg():
    """Stored 40 wide x 20 tall (red left, blue right) with EXIF Orientation 6 (90 deg CW):
    displayed 20 wide x 40 tall with red on top."""
    image = two_colour_image((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(image, exif=exif)


def palette_png_with_transparency():
    """P-mode PNG: index 0 is a fully transparent red (left half), index 1 opaque blue."""
    indices = np.zeros((10, 12), np.uint8)
    indices[:, 6:] = 1
    image = Image.frombytes("P", (12, 10), indices.tobytes())
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=bytes([0, 255]))
    return buffer.getvalue()


def save(image, path, format=None, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format, **options)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_hostile_dataset(root):
    """Write the hostile DATA folder under `root` and return its HostileDataset."""
    good, bad = {}, {}

    def add_good(relative, image, shape=None, **options):
        save(image, root / relative, **options)
        good[relative] = shape or (image.height, image.width)

    # cats: every decoder trap, all of which must decode.
    add_good("cats/rgb.jpg", two_colour_image((40, 30)))
    add_good("cats/cmyk.jpg", Image.new("CMYK", (16, 12), (0, 255, 255, 0)))
    write(root / "cats/exif_rotated.jpg", exif_rotated_jpeg())
    good["cats/exif_rotated.jpg"] = (40, 20)
    add_good("cats/grey16.png", Image.fromarray(
        np.array([[0, 257 * 100], [65535, 257 * 200]], np.uint16)))
    write(root / "cats/palette_transparent.png", palette_png_with_transparency())
    good["cats/palette_transparent.png"] = (10, 12)
    add_good("cats/rgba.png", Image.new("RGBA", (9, 7), (255, 0, 0, 128)))
    add_good("cats/la.png", Image.new("LA", (5, 6), (0, 0)))
    add_good("cats/one_bit.png", Image.new("1", (8, 3), 1))
    frames = [Image.new("RGB", (6, 4), RED), Image.new("RGB", (6, 4), BLUE)]
    add_good("cats/animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=50)
    add_good("cats/float.tif", Image.fromarray(np.full((3, 4), 0.5, np.float32)))
    add_good("cats/lossless.webp", two_colour_image((10, 10)), lossless=True)
    add_good("cats/nested/deeper/photo.bmp", two_colour_image((7, 5)))
    add_good("cats/café.png", two_colour_image((6, 6)))
    add_good("cats/UPPER.JPEG", two_colour_image((12, 8)))
    # dogs: three good images among the files that must be refused.
    for number in range(3):
        add_good(f"dogs/dog{number}.png", Image.new("RGB", (10 + number, 9), BLUE))
    whole = jpeg_bytes(two_colour_image((64, 64)))
    write(root / "dogs/truncated.jpg", whole[: len(whole) * 6 // 10])
    bad["dogs/truncated.jpg"] = r"^corrupt or truncated image data \(OSError: .*[Tt]runcated"
    png = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(png, "PNG")
    corrupt = bytearray(png.getvalue())
    start = corrupt.index(b"IDAT") + 6
    corrupt[start:start + 14] = bytes(b ^ 0x5A for b in corrupt[start:start + 14])
    write(root / "dogs/corrupt_data.png", bytes(corrupt))
    bad["dogs/corrupt_data.png"] = r"^corrupt or truncated image data"
    write(root / "dogs/garbage.png", bytes(range(256)) * 4)
    bad["dogs/garbage.png"] = r"^not an image Pillow can read"
    write(root / "dogs/zero_bytes.jpg", b"")
    bad["dogs/zero_bytes.jpg"] = r"^the file is empty \(0 bytes\)$"
    write(root / "dogs/actually_text.jpg", b"<html>404 Not Found</html>\n")
    bad["dogs/actually_text.jpg"] = r"^not an image Pillow can read"
    write(root / "dogs/zero_width.png", png_bytes_claiming(0, 5))
    bad["dogs/zero_width.png"] = r"^not an image Pillow can read"
    write(root / "dogs/bomb.png", png_bytes_claiming(100_000, 100_000))
    bad["dogs/bomb.png"] = r"^refused as a possible decompression bomb"
    write(root / "dogs/bomb_warning.png", png_bytes_claiming(10_000, 10_000))
    bad["dogs/bomb_warning.png"] = r"^refused as a possible decompression bomb"
    os.symlink(root / "dogs/does_not_exist.jpg", root / "dogs/broken_link.jpg")
    bad["dogs/broken_link.jpg"] = r"^broken symbolic link"
    # A one-image class with a unicode folder and file name.
    add_good("日本/写真.png", Image.new("RGB", (4, 4), RED))
    # Things that must be ignored outright.
    ignored = ["cats/.hidden.jpg", "cats/.thumbnails/a.png", "cats/README.txt",
               "dogs/notes.md", "__MACOSX/cats/._rgb.jpg", ".git/objects/x.png",
               "loose.jpg", "empty_class/README.txt"]
    for relative in ignored:
        save(Image.new("RGB", (2, 2)), root / relative, format="PNG")
    os.symlink(".", root / "cats/loop_to_self")        # cats/loop_to_self -> cats
    os.symlink("..", root / "dogs/loop_to_root")       # dogs/loop_to_root -> DATA
    ignored += ["cats/loop_to_self", "dogs/loop_to_root"]
    return HostileDataset(root=root, classes=["cats", "dogs", "日本"], good=good, bad=bad,
                          ignored=ignored)


@pytest.fixture
def hostile_dataset(tmp_path):
    """A fresh hostile DATA folder (see build_hostile_dataset) in tmp_path/hostile."""
    return build_hostile_dataset(tmp_path / "hostile")


def make_image_tree(root, counts, size=(8, 8), name="img{:03d}.png"):
    """root/<class>/<name> with counts[class] small distinct PNGs; returns root."""
    for label, (class_name, count) in enumerate(sorted(counts.items())):
        for number in range(count):
            colour = ((37 * number) % 256, (91 * label) % 256, (13 * number + 5) % 256)
            save(Image.new("RGB", size, colour), root / class_name / name.format(number))
    return root


@pytest.fixture
def image_tree(tmp_path):
    """make_image_tree bound to tmp_path/data: image_tree({"cat": 5, "dog": 7}) -> root."""
    def make(counts, root=None, **options):
        return make_image_tree(root or tmp_path / "data", counts, **options)
    return make
