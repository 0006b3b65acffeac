"""retrain from Python: load a model file and predict in three lines, or train one.

    import retrain
    m = retrain.load("runs/shoes/model.h5")
    m.predict("photo.jpg")             # Prediction(label='sandal', probability=0.9731, ...)

`predict` takes what is at hand: the path of an image file, a folder (searched
recursively, as `retrain classify` searches it), a PIL image, a uint8 RGB array (H, W, 3)
or a batch of them (N, H, W, 3), or a list of these; one image gives one Prediction, the
rest a list. Files go through exactly the code `retrain classify` runs
(classify.predict_probabilities), and images in memory through the same conversion to RGB
(images.image_to_rgb: EXIF orientation, alpha on white, 16-bit scaled), crop, resize and
normalization, so the labels and probabilities are the CLI's. (A PIL image or an array is
taken as already decoded: where the model's recipe has "jpeg_draft", a JPEG given by its
path is decoded at reduced scale, as the CLI decodes it, and one opened in memory is not.)

`retrain.train(DATA, out=RUN, epochs=20)` is `retrain fit DATA --out RUN --epochs 20`: the
keyword arguments are RunOptions' and HeadOptions' fields, and it returns the trained model
loaded, with the run's metrics. (It is not called `fit`: `retrain.fit` is the module that
trains the head, and a function of that name would hide it.)"""
from dataclasses import dataclass, fields
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .engine import Model
from .classify import iter_image_files, model_labels, model_probabilities, predict_probabilities
from .errors import ConfigError
from .fit import HeadOptions
from .images import image_to_rgb
from .model_file import load_model_file
from .options import OPTIONS, default
from .pipeline import RunOptions, run
from .preprocess import preprocess_batch

__all__ = ["ImageClassifier", "Prediction", "load", "train"]

# What predict takes: a file's path or a folder's, a PIL image, an (H, W, 3) or (N, H, W, 3)
# uint8 array, or a list of these.
Images = Union[str, Path, Image.Image, np.ndarray, Sequence[Union[str, Path, Image.Image,
                                                                   np.ndarray]]]

@dataclass(frozen=True, repr=False)
class Prediction:
    """What the model says about one image: the most probable `label` and its
    `probability`, every class's `probabilities` (float64, in the order of `labels`), and
    the `path` for a file. A file that could not be classified has `error` (why) and no
    label.

    >>> p = Prediction("cat", 0.75, np.array([0.75, 0.25]), ("cat", "dog"))
    >>> p
    Prediction(label='cat', probability=0.7500)
    >>> p.top(2)
    [('cat', 0.75), ('dog', 0.25)]
    """
    label: Optional[str]
    probability: Optional[float]
    probabilities: Optional[np.ndarray]
    labels: Tuple[str, ...]
    path: Optional[str] = None
    error: Optional[str] = None

    def top(self, k: int = 3) -> List[Tuple[str, float]]:
        """The k most probable (label, probability) pairs, most probable first (ties: the
        label listed first), as `retrain classify --top-k k` lists them."""
        if self.error:
            return []
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]

    def __repr__(self):
        where = "" if self.path is None else f", path={str(self.path)!r}"
        if self.error:
            return f"Prediction(error={self.error!r}{where})"
        return f"Prediction(label={self.label!r}, probability={self.probability:.4f}{where})"


class ImageClassifier:
    """A model file from `retrain fit` (or a pretrained backbone with its ImageNet labels),
    ready to predict. `model` is the engine's Model; `labels` its classes in output order."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.labels = tuple(model_labels(model))
        self.recipe = model.metadata["preprocessing"]

    def __repr__(self):
        return f"ImageClassifier({len(self.labels)} classes: {', '.join(self.labels[:5])}" + (
            ", ...)" if len(self.labels) > 5 else ")")

    def predict(self, images: Images, batch_size: int = default("batch_size"),
                workers: int = default("workers")) -> Union[Prediction, List[Prediction]]:
        """A Prediction for one image (a file's path, a PIL image, an (H, W, 3) array), or
        a list of them for a folder, an (N, H, W, 3) array or a list of images."""
        OPTIONS["batch_size"].check(batch_size)
        OPTIONS["workers"].check(workers)
        one = _is_one_image(images)
        items = [images] if one else _as_list(images)
        predictions = []
        for group in _runs_of_same_kind(items):
            if isinstance(group[0], (str, Path)):
                predictions += self._predict_files(group, batch_size, workers)
            else:
                predictions += self._predict_pixels(group, batch_size)
        return predictions[0] if one else predictions

    def _predict_files(self, paths, batch_size, workers):
        out = []
        for done, probabilities in predict_probabilities(self.model, iter_image_files(paths),
                                                         batch_size, workers):
            rows = iter(probabilities)
            out += [self._prediction(None if reason else next(rows), str(path), reason)
                    for path, reason in done]
        return out

    def _predict_pixels(self, images, batch_size):
        out = []
        for start in range(0, len(images), batch_size):
            rgb = [_rgb(image) for image in images[start:start + batch_size]]
            probabilities = model_probabilities(self.model, preprocess_batch(rgb, self.recipe))
            out += [self._prediction(row) for row in probabilities]
        return out

    def _prediction(self, row, path=None, error=None):
        if error is None and not np.isfinite(row).all():
            error = "the model's output for it is not finite (NaN or infinity)"
        if error is not None:
            return Prediction(None, None, None, self.labels, path, error)
        best = int(np.argmax(row))
        return Prediction(self.labels[best], float(row[best]), row, self.labels, path)


def load(path: Union[str, Path]) -> ImageClassifier:
    """The model file at `path` as an ImageClassifier (checked as `retrain classify` checks
    it: a damaged or hostile file raises ModelFileError)."""
    return ImageClassifier(load_model_file(path))


def train(data: Union[str, Path], out: Union[str, Path], **options: object) -> ImageClassifier:
    """Train on the class folders in `data`, writing the run to folder `out` (as `retrain
    fit`), and return the model, loaded, with `.metrics` (metrics.json's content),
    `.run_dir` and `.warnings`. Keyword arguments: RunOptions' fields (backbone,
    val_percent, test_percent, cache_dir, cv, progress...) and HeadOptions' (epochs,
    learning_rate, fine_tune, augment, seed...)."""
    run_fields = {f.name for f in fields(RunOptions)} - {"head"}
    head_fields = {f.name for f in fields(HeadOptions)}
    unknown = sorted(set(options) - run_fields - head_fields)
    if unknown:
        raise ConfigError(f"retrain.train got unknown option(s) {unknown}.",
                          hint=f"Use RunOptions' {sorted(run_fields)} or HeadOptions' "
                               f"{sorted(head_fields)}.")
    head = HeadOptions(**{k: v for k, v in options.items() if k in head_fields})
    result = run(data, out, RunOptions(head=head, **{k: v for k, v in options.items()
                                                     if k in run_fields}))
    trained = load(result.model_path)
    trained.metrics, trained.run_dir, trained.warnings = (result.metrics, result.run_dir,
                                                          result.warnings)
    return trained


def _is_one_image(images):
    if isinstance(images, (str, Path)):
        return not Path(images).is_dir()
    return isinstance(images, Image.Image) or (isinstance(images, np.ndarray)
                                               and images.ndim in (2, 3))


def _as_list(images):
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ConfigError(f"an array of images must be (N, H, W, channels). Received: "
                              f"shape={images.shape}")
        return list(images)
    return list(images) if isinstance(images, (list, tuple)) else [images]


def _runs_of_same_kind(items):
    """Consecutive files (paths) and consecutive pixels (PIL images, arrays), in order."""
    groups = []
    for item in items:
        is_path = isinstance(item, (str, Path))
        if groups and isinstance(groups[-1][0], (str, Path)) == is_path:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _rgb(image):
    """A PIL image or a uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W, 3)
    uint8 RGB, converted as a decoded file would be."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
                image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ConfigError(f"an image array must be uint8 pixels (0-255), (H, W) or "
                              f"(H, W, 1, 3 or 4 channels), as a decoded file is. Received: "
                              f"dtype={image.dtype}, shape={image.shape}",
                              hint="Preprocessing (crop, resize, normalization) comes from "
                                   "the model file; give the image as it is.")
        image = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1
                                else image)
    if not isinstance(image, Image.Image):
        raise ConfigError(f"cannot predict on a {type(image).__name__}; give a path, a "
                          "folder, a PIL image or a uint8 array.")
    return image_to_rgb(image)
