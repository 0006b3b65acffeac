"""preprocess.py: the recipe reproduces reference.npz's inputs; recipes are checked."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrain.errors import ConfigError
from retrain.images import decode_image
from retrain.preprocess import (START_AHEAD, START_AHEAD_BYTES, crop_and_resize, draft_side,
                                iter_batches, normalize, preprocess_batch, recipe_hash,
                                validate_recipe)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EFFNET = {"input_size": [224, 224], "crop": "center", "crop_fraction": 0.875,
          "resize_filter": "bicubic", "mean": [127.0, 127.0, 127.0],
          "std": [128.0, 128.0, 128.0], "channel_order": "RGB"}


@pytest.fixture(scope="module")
def reference():
    data = np.load(FIXTURES / "effnet" / "reference.npz")
    photos = {p.stem: p for p in (FIXTURES / "photos").iterdir() if p.suffix != ".md"}
    return data, [photos[str(name)] for name in data["names"]]


def test_recipe_reproduces_the_reference_inputs(reference):
    data, paths = reference
    images = [decode_image(path) for path in paths]
    for image, expected, shape in zip(images, data["inputs_uint8"], data["source_shapes"]):
        assert image.shape == tuple(shape)
        resized = crop_and_resize(image, EFFNET)
        assert resized.dtype == np.uint8 and resized.shape == (224, 224, 3)
        assert np.abs(resized.astype(np.int16) - expected).max() <= 1
    batch = preprocess_batch(images, EFFNET)
    assert batch.dtype == np.float32 and batch.shape == (4, 224, 224, 3)
    np.testing.assert_allclose(batch, data["inputs"], rtol=0, atol=1 / 128 + 1e-6)
    # Pillow 13 is the version the fixture was made with: the match is exact there.
    np.testing.assert_array_equal(normalize(data["inputs_uint8"], EFFNET), data["inputs"])


def test_centre_crop_offsets_put_the_odd_pixel_top_left():
    # 5 x 8 image, crop_fraction 0.5 -> side int(2.5) = 2, top (3+1)//2 = 2, left (6+1)//2 = 3.
    image = np.arange(5 * 8 * 3, dtype=np.uint8).reshape(5, 8, 3)
    recipe = dict(EFFNET, crop_fraction=0.5, input_size=[2, 2], resize_filter="nearest")
    np.testing.assert_array_equal(crop_and_resize(image, recipe), image[2:4, 3:5])


def test_input_size_is_height_then_width():
    image = np.zeros((30, 30, 3), np.uint8)
    recipe = dict(EFFNET, input_size=[6, 10], crop_fraction=1.0)
    assert crop_and_resize(image, recipe).shape == (6, 10, 3)


def test_bgr_order_swaps_channels_before_mean_and_std():
    pixel = np.array([[[[10, 20, 30]]]], np.uint8)
    recipe = dict(EFFNET, channel_order="BGR", mean=[1.0, 2.0, 3.0], std=[1.0, 2.0, 4.0])
    np.testing.assert_array_equal(normalize(pixel, recipe)[0, 0, 0], [29.0, 9.0, 1.75])


@pytest.mark.parametrize("change, message", [
    ({"input_size": [224]}, r"input_size must be two positive integers.*input_size=\[224\]"),
    ({"crop": "random"}, r"Only a centre crop.*crop='random'"),
    ({"crop_fraction": 0}, r"crop_fraction must be in \(0, 1\].*crop_fraction=0"),
    ({"resize_filter": "cubic"}, r"Unknown resize_filter.*'cubic'.*bicubic"),
    ({"std": [1.0, 0.0, 1.0]}, r"std must not contain 0"),
    ({"mean": [1.0]}, r"mean needs one number per channel"),
    ({"mean": 5}, r"mean needs one number per channel.*mean=5"),
    ({"std": [1.0, "x", 1.0]}, r"std needs one number per channel"),
    ({"crop_fraction": "x"}, r"crop_fraction must be in \(0, 1\].*crop_fraction='x'"),
    ({"channel_order": "RGBA"}, r"channel_order must be 'RGB' or 'BGR'"),
])
def test_bad_recipes_are_refused_with_the_value(change, message):
    with pytest.raises(ConfigError, match=message):
        validate_recipe(dict(EFFNET, **change))


def test_missing_recipe_keys_are_named():
    recipe = dict(EFFNET)
    del recipe["mean"]
    with pytest.raises(ConfigError, match=r"lacks \['mean'\]"):
        validate_recipe(recipe)


def test_recipe_hash_ignores_key_order_and_changes_with_any_value():
    reordered = dict(reversed(list(EFFNET.items())))
    assert recipe_hash(reordered) == recipe_hash(EFFNET)
    assert recipe_hash(dict(EFFNET, crop_fraction=1.0)) != recipe_hash(EFFNET)
    assert recipe_hash(dict(EFFNET, resize_filter="bilinear")) != recipe_hash(EFFNET)


def test_iter_batches_keeps_order_and_reports_bad_files(tmp_path):
    recipe = dict(EFFNET, input_size=[4, 4], crop_fraction=1.0)
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        if i == 3:
            path.write_bytes(b"not a png")
        else:
            Image.new("RGB", (5, 5), (i * 30, 0, 0)).save(path)
        paths.append(path)
    batches = list(iter_batches(paths, recipe, batch_size=3, workers=2))
    assert [len(done) for done, _ in batches] == [3, 3, 1]
    done = [item for items, _ in batches for item in items]
    assert [path for path, _ in done] == paths
    assert [reason is None for _, reason in done] == [i != 3 for i in range(7)]
    assert done[3][1].startswith("not an image")
    inputs = np.concatenate([x for _, x in batches])
    assert inputs.shape == (6, 4, 4, 3)
    expected_red = [(i * 30 - 127.0) / 128.0 for i in range(7) if i != 3]
    np.testing.assert_allclose(inputs[:, 0, 0, 0], expected_red, rtol=0, atol=1e-6)


@pytest.mark.parametrize("resize_filter", ["bicubic", "bilinear", "lanczos", "nearest"])
def test_a_grey_image_gives_the_inputs_of_its_rgb_copy(resize_filter, tmp_path):
    """Grey files are resized as one channel, then repeated (a third of the work): the
    model inputs must be those of the same pixels stored as RGB, bit for bit (odd sizes,
    upscaled and downscaled, PNG and JPEG decoded by draft)."""
    recipe = dict(EFFNET, input_size=[9, 7], resize_filter=resize_filter, jpeg_draft=True)
    rng = np.random.default_rng(0)
    grey, rgb = [], []
    for i, (height, width) in enumerate([(5, 8), (31, 23), (64, 90)]):
        pixels = rng.integers(0, 256, (height, width), np.uint8)
        for suffix in (".png", ".jpg"):
            grey.append(tmp_path / f"grey{i}{suffix}")
            Image.fromarray(pixels).save(grey[-1])
            rgb.append(tmp_path / f"rgb{i}{suffix}.png")    # the grey file's pixels
            Image.fromarray(decode_image(grey[-1], draft=9)).save(rgb[-1])
    assert decode_image(grey[0], pil=True).mode == "L"       # the one-channel path is taken
    (_, ours), = iter_batches(grey, recipe, batch_size=6)
    (_, theirs), = iter_batches(rgb, recipe, batch_size=6)
    np.testing.assert_array_equal(ours, theirs)


def test_files_decoded_as_pil_images_give_the_inputs_of_their_arrays(tmp_path):
    """iter_batches crops and resizes 8-bit RGB and grey images as PIL images (no copies
    through numpy): the inputs must be those of decode_image's arrays through
    preprocess_batch (the path of images given in memory), bit for bit, for the fixture
    photos (EXIF orientation included) and files of each kind, drafted JPEGs too."""
    rng = np.random.default_rng(3)
    paths = sorted(p for p in (FIXTURES / "photos").iterdir() if p.suffix != ".md")
    kinds = {"rgb.png": "RGB", "grey.png": "L", "rgba.png": "RGBA", "palette.png": "P",
             "rgb.jpg": "RGB", "grey.jpg": "L", "cmyk.jpg": "CMYK"}
    for name, mode in kinds.items():
        pixels = rng.integers(0, 256, (37, 51, 4), np.uint8)
        Image.fromarray(pixels, "RGBA").convert(mode).save(tmp_path / name)
        paths.append(tmp_path / name)
    for draft in (False, True):
        recipe = dict(EFFNET, input_size=[23, 19], jpeg_draft=draft)
        (_, ours), = iter_batches(paths, recipe, batch_size=len(paths))
        arrays = [decode_image(p, draft=draft_side(recipe)) for p in paths]
        np.testing.assert_array_equal(ours, preprocess_batch(arrays, recipe))


def test_iter_batches_decodes_a_bounded_number_of_images_ahead(tmp_path, monkeypatch):
    """START_AHEAD images (START_AHEAD_BYTES at most) before the first batch, decoded while
    a runtime loads, then at most two batches ahead of the caller."""
    path = tmp_path / "one.png"
    Image.new("RGB", (4, 4)).save(path)
    loaded = []

    def counting_load(p, recipe, view=None, sha256=None):
        loaded.append(p)
        return np.zeros((4, 4, 3), np.uint8), None

    monkeypatch.setattr("retrain.preprocess._load_for_model", counting_load)
    big = dict(EFFNET, input_size=[1000, 1000])          # 3 MB each: 21 fit in the bytes
    next(iter_batches([path] * 1000, big, batch_size=5))
    assert len(loaded) <= START_AHEAD_BYTES // 3_000_000
    loaded.clear()
    recipe = dict(EFFNET, input_size=[4, 4])
    batches = iter_batches([path] * 1000, recipe, batch_size=5)
    taken = len(next(batches)[0])
    assert len(loaded) <= START_AHEAD
    for _ in range(START_AHEAD // 5):
        taken += len(next(batches)[0])
    assert len(loaded) <= taken + 10
    assert taken + sum(len(done) for done, _ in batches) == 1000


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_the_lookup_table_gives_the_float32_arithmetic_bit_for_bit(order):
    """normalize looks each uint8 value up in a table, or (one mean and std for all
    channels) subtracts and divides in place; either must equal computing (x - mean) / std
    in float32 for every value, with ImageNet's uneven means and stds, and with one."""
    pixels = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1)
    batch = np.concatenate([pixels, pixels[..., :1][:, ::-1]], -1).astype(np.uint8)[None]
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    recipe = dict(EFFNET, channel_order=order, mean=mean, std=std)
    x = batch.astype(np.float32)[..., ::-1] if order == "BGR" else batch.astype(np.float32)
    expected = (x - np.float32(mean)) / np.float32(std)
    np.testing.assert_array_equal(normalize(batch, recipe), expected)
    for m, s in ((127.5, 127.5), (123.675, 58.395)):
        same = dict(recipe, mean=[m] * 3, std=[s] * 3)
        np.testing.assert_array_equal(normalize(batch, same), (x - np.float32(m)) / np.float32(s))
