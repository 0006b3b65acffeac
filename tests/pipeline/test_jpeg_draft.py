"""The recipe's "jpeg_draft": JPEGs decoded by DCT-domain scaling to about the model's input
size, recorded in the model file so that training and inference decode alike, keyed in the
feature cache, and absent (full decoding) in model files made before it."""
import numpy as np
import pytest
from PIL import Image

from retrain.errors import ConfigError
from retrain.images import decode_image
from retrain.preprocess import iter_batches, preprocess_batch, recipe_hash, validate_recipe

from stand_in import RECIPE

PHOTO = dict(RECIPE, input_size=[224, 224], crop_fraction=0.875, resize_filter="bicubic")


def _photo(path, size=(640, 480), seed=0, **save):
    """A smooth random photo with some grain, as JPEG: DCT scaling has detail to drop."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (size[1] // 16, size[0] // 16, 3), np.uint8))
    pixels = np.asarray(small.resize(size, Image.Resampling.BICUBIC), np.int16)
    pixels = np.clip(pixels + rng.integers(-12, 12, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90, **save)
    return path


def test_a_drafted_jpeg_decodes_to_the_smallest_scale_that_keeps_the_short_side(tmp_path):
    photo = _photo(tmp_path / "photo.jpg")
    assert decode_image(photo).shape == (480, 640, 3)
    assert decode_image(photo, draft=224).shape == (240, 320, 3)      # 1/2: 240 >= 224
    assert decode_image(photo, draft=100).shape == (120, 160, 3)      # 1/4
    assert decode_image(photo, draft=300).shape == (480, 640, 3)      # 1/2 would be 240
    full, drafted = decode_image(photo), decode_image(photo, draft=224)
    halved = np.asarray(Image.fromarray(full).resize((320, 240), Image.Resampling.BOX))
    assert np.abs(drafted.astype(int) - halved).mean() < 3              # the same picture
    png = tmp_path / "photo.png"
    Image.fromarray(full).save(png)
    assert decode_image(png, draft=224).shape == (480, 640, 3)       # JPEG only


def test_a_drafted_jpeg_still_follows_its_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6                                     # rotate 90 degrees to display
    photo = _photo(tmp_path / "sideways.jpg", exif=exif.tobytes())
    assert decode_image(photo).shape == (640, 480, 3)
    assert decode_image(photo, draft=224).shape == (320, 240, 3)


def test_the_recipe_keys_the_cache_and_a_recipe_without_it_decodes_in_full(tmp_path):
    assert recipe_hash(dict(PHOTO, jpeg_draft=False)) == recipe_hash(PHOTO)   # old files
    assert recipe_hash(dict(PHOTO, jpeg_draft=True)) != recipe_hash(PHOTO)
    with pytest.raises(ConfigError, match="jpeg_draft must be true or false. Received: "
                                          "jpeg_draft='yes'"):
        validate_recipe(dict(PHOTO, jpeg_draft="yes"))
    photo = _photo(tmp_path / "photo.jpg")
    batches = {draft: next(iter_batches([photo], dict(PHOTO, jpeg_draft=draft)))[1]
               for draft in (False, True)}
    np.testing.assert_array_equal(batches[False], preprocess_batch([decode_image(photo)], PHOTO))
    np.testing.assert_array_equal(batches[True], preprocess_batch(
        [decode_image(photo, draft=224)], PHOTO))
    assert not np.array_equal(batches[True], batches[False])


def test_fit_records_the_draft_and_classify_decodes_as_fit_did(tmp_path, monkeypatch, capsys):
    """The features fit cached for a photo are the classify-time model input's features:
    the model file's recipe carries jpeg_draft (true by default, false with
    --no-jpeg-draft), and the cache namespaces differ."""
    import json
    from retrain.cli import main
    from retrain.engine import load_model
    from stand_in import use_stand_in
    use_stand_in(monkeypatch)
    data = tmp_path / "data"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i in range(6):
            _photo(data / label / f"{i}.jpg", size=(64, 48), seed=i + 10 * (label == "b"))
    recipes = {}
    for flag in ([], ["--no-jpeg-draft"]):
        out = tmp_path / f"run{len(flag)}"
        assert main(["fit", str(data), "--out", str(out), "--cache", str(tmp_path / "cache"),
                     "--epochs", "2", "-q", *flag]) == 0
        recipes[bool(flag)] = load_model(out / "model.h5").metadata["preprocessing"]
        assert "features: 0 from the cache, 12 computed" in capsys.readouterr().out
    assert recipes[False]["jpeg_draft"] is True and recipes[True]["jpeg_draft"] is False
    model = load_model(tmp_path / "run0" / "model.h5")
    photo = data / "a" / "0.jpg"
    assert main(["classify", str(tmp_path / "run0" / "model.h5"), str(photo), "--format",
                 "json", "--top-k", "2", "--runtime", "numpy"]) == 0
    printed = json.loads(capsys.readouterr().out)["top"]
    x = preprocess_batch([decode_image(photo, draft=8)], model.metadata["preprocessing"])
    expected = model.predict(x)[0]
    labels = model.metadata["labels"]
    assert {t["label"]: t["probability"] for t in printed} == pytest.approx(
        {labels[j]: float(expected[j]) for j in range(2)}, abs=1e-6)
