"""decode_image on every trap in the hostile dataset, plus modes and limits one at a time."""
import io
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from retrain.errors import ImageError, RetrainError
from retrain.images import MAX_PIXELS, decode_image, is_image_file

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def test_every_good_file_decodes_to_rgb_uint8_of_the_displayed_size(hostile_dataset):
    for relative, (height, width) in hostile_dataset.good.items():
        image = decode_image(hostile_dataset.path(relative))
        assert image.shape == (height, width, 3), relative
        assert image.dtype == np.uint8, relative
        assert image.flags.c_contiguous, relative


def test_every_bad_file_is_refused_with_its_reason(hostile_dataset):
    for relative, reason in hostile_dataset.bad.items():
        if relative == "dogs/broken_link.jpg":
            reason = r"^cannot read the file: No such file or directory$"
        with pytest.raises(ImageError, match=reason):
            decode_image(hostile_dataset.path(relative))


def test_exif_orientation_is_applied(hostile_dataset):
    # Stored 40x20 with red left; orientation 6 shows it 20 wide x 40 tall, red on top.
    image = decode_image(hostile_dataset.path("cats/exif_rotated.jpg")).astype(int)
    assert image.shape == (40, 20, 3)
    np.testing.assert_allclose(image[:15].mean(axis=(0, 1)), RED, atol=4)
    np.testing.assert_allclose(image[-15:].mean(axis=(0, 1)), BLUE, atol=4)


def test_colour_conversions_look_as_on_screen(hostile_dataset):
    def decoded(relative):
        return decode_image(hostile_dataset.path(relative)).astype(int)

    np.testing.assert_allclose(decoded("cats/cmyk.jpg").mean(axis=(0, 1)), RED, atol=3)
    assert decoded("cats/grey16.png")[:, :, 0].tolist() == [[0, 100], [255, 200]]
    assert (decoded("cats/grey16.png") == decoded("cats/grey16.png")[:, :, :1]).all()
    palette = decoded("cats/palette_transparent.png")
    assert (palette[:, :6] == WHITE).all() and (palette[:, 6:] == BLUE).all()
    # (255, 0, 0) at alpha 128 over white: 0*128/255 + 255*127/255 = 127.
    assert (decoded("cats/rgba.png") == (255, 127, 127)).all()
    assert (decoded("cats/la.png") == WHITE).all()          # black, fully transparent
    assert (decoded("cats/one_bit.png") == WHITE).all()
    assert (decoded("cats/animated.gif") == RED).all()      # first frame; the second is blue
    assert (decoded("cats/float.tif") == 128).all()         # 0.5 * 255 rounded


@pytest.mark.parametrize("mode, values, expected", [
    ("I;16", np.array([[0, 128, 65535]], np.uint16), [[0, 0, 255]]),
    ("I;16B", np.array([[257, 32896, 65535]], ">u2"), [[1, 128, 255]]),
    ("I", np.array([[0, 65535, 70000, -5]], np.int32), [[0, 255, 255, 0]]),
    ("F", np.array([[0.0, 1.0, 0.25]], np.float32), [[0, 255, 64]]),
    ("F", np.array([[-3.0, 100.4, 300.0, np.nan]], np.float32), [[0, 100, 255, 0]]),
])
def test_high_bit_depth_is_scaled_not_clipped(tmp_path, mode, values, expected):
    path = tmp_path / "deep.tif"
    image = Image.frombytes(mode, values.shape[::-1], values.tobytes())
    image.save(path)
    assert Image.open(path).mode == mode
    decoded = decode_image(path)
    assert decoded[:, :, 0].tolist() == expected
    assert (decoded == decoded[:, :, :1]).all()


def test_grey_and_rgb_with_a_transparent_colour_key(tmp_path):
    Image.new("L", (3, 2), 7).save(tmp_path / "grey.png", transparency=7)
    Image.new("RGB", (3, 2), (1, 2, 3)).save(tmp_path / "rgb.png", transparency=(1, 2, 3))
    assert (decode_image(tmp_path / "grey.png") == WHITE).all()
    assert (decode_image(tmp_path / "rgb.png") == WHITE).all()


def test_png_content_under_a_jpg_name_decodes(tmp_path):
    Image.new("RGB", (3, 2), RED).save(tmp_path / "really_png.jpg", "PNG")
    assert (decode_image(tmp_path / "really_png.jpg") == RED).all()


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    Image.new("RGB", (20, 20), RED).save(tmp_path / "a.png")
    assert decode_image(tmp_path / "a.png", max_pixels=400).shape == (20, 20, 3)
    with pytest.raises(ImageError, match=r"20x20 = 400 pixels, over the limit of 399"):
        decode_image(tmp_path / "a.png", max_pixels=399)
    assert MAX_PIXELS == 89_478_485


def test_bomb_warnings_never_leak_and_filters_are_restored_under_threads(hostile_dataset):
    path = hostile_dataset.path("dogs/bomb_warning.png")   # between 1x and 2x Pillow's limit
    filters_before = list(warnings.filters)

    def attempt(_):
        with pytest.raises(ImageError, match="decompression bomb"):
            decode_image(path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(attempt, range(40)))
    assert caught == []
    assert warnings.filters == filters_before


def test_unreadable_paths_say_the_os_reason(tmp_path):
    with pytest.raises(ImageError, match=r"^cannot read the file: No such file or directory$"):
        decode_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match=r"^cannot read the file: Is a directory$"):
        decode_image(tmp_path)


def test_image_error_is_a_value_error_and_a_retrain_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError) as info:
        decode_image(tmp_path / "x.png")
    assert isinstance(info.value, RetrainError) and isinstance(info.value, ImageError)


def test_decoded_array_is_independent_of_the_file(tmp_path):
    Image.new("RGB", (2, 2), RED).save(tmp_path / "a.png")
    image = decode_image(tmp_path / "a.png")
    image[0, 0] = 0                                          # writable, not a view of PIL
    assert (decode_image(tmp_path / "a.png") == RED).all()


@pytest.mark.parametrize("name, expected", [
    ("a.jpg", True), ("a.JPG", True), ("a.jpeg", True), ("a.Png", True), ("a.bmp", True),
    ("a.gif", True), ("a.tif", True), ("a.TIFF", True), ("a.webp", True),
    ("dir.d/a.png", True), ("a.txt", False), ("a", False), ("a.jpg.txt", False),
    (".png", False), ("a.svg", False), ("a.heic", False),
])
def test_is_image_file_by_extension_any_case(name, expected):
    assert is_image_file(name) is expected


def test_decoding_runs_in_parallel_threads(hostile_dataset):
    paths = [hostile_dataset.path(relative) for relative in hostile_dataset.good] * 4
    serial = [decode_image(path) for path in paths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(decode_image, paths))
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel))


def test_truncated_large_jpeg_is_refused(tmp_path):
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"^corrupt or truncated image data \(OSError: image file "
                                         r"is truncated"):
        decode_image(tmp_path / "cut.jpg")


def test_transparent_image_memory_is_bounded_by_pixels_times_bytes(tmp_path):
    """A 344 kB 9400x9400 transparent PNG, under the pixel limit, took more than 4 GB:
    compositing made uint32 arrays of the whole image. What numpy allocates while one is
    decoded is now the RGBA pixels, the RGB result and a block of rows: at most 8 bytes a
    pixel and 16 MB (the compositing of the old code took 48 bytes a pixel)."""
    import tracemalloc

    side = 2000
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[::7, ::5] = (200, 10, 10, 128)
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    del rgba
    tracemalloc.start()
    try:
        decoded = decode_image(tmp_path / "clear.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 8 * side * side + 16 * 2**20, peak / side**2
    over_white = [(value * 128 + 255 * 127 + 127) // 255 for value in (200, 10, 10)]
    assert decoded[0, 0].tolist() == over_white == [227, 132, 132]
    assert decoded[0, 1].tolist() == [255] * 3
