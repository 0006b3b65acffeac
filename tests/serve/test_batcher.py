"""The batcher alone (no HTTP, no extra needed): uploads decode as files do, concurrent
requests share forward passes of at most max_batch images, the queue is bounded, and a
failing model or image answers its own requests while the loop goes on."""
import asyncio
import io

import numpy as np
import pytest

from retrain.classify import model_probabilities
from retrain.errors import ImageError, RequestRefused
from retrain.images import decode_image, decode_image_file
from retrain.model_file import load_model_file
from retrain.preprocess import draft_side, preprocess_batch
from retrain.serve.batcher import BatchOptions, Batcher
from numerics import float32_paths_atol
from serving import PHOTOS


@pytest.mark.parametrize("name", sorted(p.name for p in PHOTOS.glob("*.*") if p.suffix != ".md"))
def test_an_upload_decodes_to_the_pixels_of_the_file(name):
    path = PHOTOS / name
    with open(path, "rb") as file:
        np.testing.assert_array_equal(decode_image_file(file), decode_image(path))


def test_an_empty_or_bad_upload_is_an_image_error_with_the_file_s_reason(tmp_path):
    with pytest.raises(ImageError, match="empty"):
        decode_image_file(io.BytesIO(b""))
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(ImageError) as from_file:
        decode_image(tmp_path / "x.png")
    with pytest.raises(ImageError) as from_upload:
        decode_image_file(io.BytesIO(b"not an image"))
    assert str(from_upload.value) == str(from_file.value)


class Counting:
    """A model wrapper that records each forward pass's batch size (or fails on demand)."""

    def __init__(self, model):
        self.model, self.sizes, self.fail = model, [], False
        self.metadata, self.outputs = model.metadata, model.outputs

    def predict(self, x, batch_size=None):
        self.sizes.append(len(x))
        if self.fail:
            raise RuntimeError("the model broke")
        return self.model.predict(x, batch_size=batch_size)


def uploads(count):
    data = [(PHOTOS / n).read_bytes() for n in ("chelsea.png", "coffee.png", "rocket.jpg")]
    return [io.BytesIO(data[i % 3]) for i in range(count)]


def run(batcher, *coroutines):
    async def main():
        loop_task = asyncio.create_task(batcher.run())
        try:
            return await asyncio.gather(*coroutines, return_exceptions=True)
        finally:
            loop_task.cancel()
    try:
        return asyncio.run(main())
    finally:
        batcher.close()


def test_concurrent_requests_share_batches_of_at_most_max_batch(colour_model):
    model = Counting(load_model_file(colour_model))
    batcher = Batcher(model, BatchOptions(max_batch=4, max_wait_ms=50))
    answers = run(batcher, *(batcher.classify([file], top_k=3) for file in uploads(10)))
    assert max(model.sizes) == 4 and sum(model.sizes) == 10 and len(model.sizes) < 10
    recipe = model.metadata["preprocessing"]          # decoded as fit decoded (jpeg_draft)
    images = [decode_image(PHOTOS / n, draft=draft_side(recipe))
              for n in ("chelsea.png", "coffee.png", "rocket.jpg")]
    alone = model_probabilities(model.model, preprocess_batch(images, recipe))
    for i, (answer,) in enumerate(answers):
        got = {t["label"]: t["probability"] for t in answer["top"]}
        want = dict(zip(batcher.labels, alone[i % 3]))
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=0,
                                   atol=float32_paths_atol(model.model, alone))
    assert batcher.served["images"] == 10 and batcher.served["batches"] == len(model.sizes)


def test_the_queue_admits_max_queue_images_then_refuses_with_503():
    batcher = Batcher.__new__(Batcher)
    batcher.options, batcher.admitted = BatchOptions(max_queue=5), 0
    batcher.reserve(3)
    batcher.reserve(2)
    with pytest.raises(RequestRefused, match="busy") as refused:
        batcher.reserve(1)
    assert refused.value.status == 503 and refused.value.retry_after == 1
    batcher.release(2)
    batcher.reserve(2)
    assert batcher.admitted == 5


def test_an_undecodable_upload_answers_without_a_forward_pass(colour_model):
    model = Counting(load_model_file(colour_model))
    batcher = Batcher(model, BatchOptions())
    (answer,) = run(batcher, batcher.classify([*uploads(1), io.BytesIO(b"junk")], top_k=2))
    assert answer[0] is None and "not an image" in answer[1]["error"]
    assert model.sizes == []


def test_a_failing_model_fails_its_requests_and_the_next_batch_still_runs(colour_model):
    model = Counting(load_model_file(colour_model))
    batcher = Batcher(model, BatchOptions(max_wait_ms=0))

    async def then_recover():
        model.fail = True
        with pytest.raises(RuntimeError, match="the model broke"):
            await batcher.classify(uploads(2), top_k=1)
        model.fail = False
        return await batcher.classify(uploads(1), top_k=1)

    (answer,) = run(batcher, then_recover())
    assert answer[0]["top"][0]["label"] in batcher.labels
