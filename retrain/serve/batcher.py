"""Dynamic batching for `retrain serve`: many small requests, one forward pass per batch.

Each uploaded image is decoded and resized in a thread pool (`workers` threads, as
`retrain classify --workers`), then waits in one queue. A single task takes up to
`max_batch` images from it, waiting at most `max_wait_ms` after the first for more, and
runs the model on them in one thread: the model runs one batch at a time, and the decoders
prepare the next batch meanwhile. Each step is the function `retrain classify` uses
(images.decode_image_file, preprocess.crop_and_resize and normalize,
classify.model_probabilities and top_or_error), so the answers are the same.

Backpressure: at most `max_queue` images are admitted (decoding, waiting or in the model)
at once; beyond that `reserve` refuses with 503 and Retry-After. Each admitted image holds
at most its upload (spooled to disk past 64 KB) and, once decoded, one model-size uint8
array; only `workers` images are decoded at full size at a time."""
import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..classify import model_labels, model_probabilities, top_or_error
from ..confidence import mark_unknown
from ..errors import ImageError, RequestRefused
from ..images import decode_image_file
from ..options import default
from ..preprocess import crop_and_resize, crop_and_resize_view, draft_side, normalize
from ..tta import model_tta

__all__ = ["BatchOptions", "Batcher"]


@dataclass(frozen=True)
class BatchOptions:
    max_batch: int = default("max_batch")           # images per forward pass
    max_wait_ms: float = default("max_wait_ms")     # after a batch's first image, the wait
    max_queue: int = default("max_queue")   # images admitted at once; more get 503 + Retry-After
    workers: int = default("workers")       # threads decoding and resizing uploads
    min_confidence: float = default("min_confidence")   # below: "unknown" (confidence.py)
    tta: int = None             # test-time views (tta.py); None: the model's record


class Batcher:
    """`await batcher.classify(files, top_k)` from request handlers (between `reserve` and
    `release`); `run()` is the task that forms the batches, started once per server."""

    def __init__(self, model, options=BatchOptions(), runner=None):
        self.model, self.options, self.runner = model, options, runner   # runner: a Runtime
        self.labels = model_labels(model)
        self.recipe = model.metadata["preprocessing"]
        self.views = model_tta(model.metadata, options.tta)     # as classify averages them
        self.admitted = 0                          # images between reserve and release
        self.served = {"images": 0, "batches": 0, "model_busy_s": 0.0}
        self._decoders = ThreadPoolExecutor(options.workers, thread_name_prefix="decode")
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._queue = asyncio.Queue()

    def reserve(self, count):
        """Admit `count` more images, or refuse with 503 if the queue would pass max_queue."""
        if self.admitted + count > self.options.max_queue:
            raise RequestRefused(503, f"the server is busy: {self.admitted} images are "
                                 f"queued (--max-queue {self.options.max_queue})",
                                 hint="try again in a moment", retry_after=1)
        self.admitted += count

    def release(self, count):
        self.admitted -= count

    async def classify(self, files, top_k):
        """[{"top": [...]} or {"error": why}, ...] for open binary files, in order. If any
        cannot be decoded, [{"error": why} or None, ...] without running the model."""
        loop = asyncio.get_running_loop()
        prepared = await asyncio.gather(*(loop.run_in_executor(self._decoders, self._prepare, f)
                                          for f in files))
        if any(isinstance(p, str) for p in prepared):
            return [{"error": p} if isinstance(p, str) else None for p in prepared]
        waiting = [loop.create_future() for _ in prepared]
        for image, future in zip(prepared, waiting):
            self._queue.put_nowait((image, future))
        rows = await asyncio.gather(*waiting)
        answers = top_or_error(np.stack(rows), self.labels, top_k)
        if self.options.min_confidence is None:
            return answers
        return mark_unknown(answers, self.options.min_confidence)

    def _prepare(self, file):
        """One upload -> its model-size uint8 views (1 + test-time views, h, w, 3), or the
        reason it cannot be used."""
        try:
            image = decode_image_file(file, draft=draft_side(self.recipe))
            return np.stack([crop_and_resize(image, self.recipe)] + [
                crop_and_resize_view(image, self.recipe, view) for view in self.views])
        except ImageError as error:
            return str(error)

    async def run(self):
        """Form batches until cancelled: a batch closes at max_batch images, or max_wait_ms
        after its first image arrived, whichever comes first."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.options.max_wait_ms / 1000
            while len(batch) < self.options.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                elif loop.time() < deadline:
                    # polled, not wait_for(queue.get()), which can drop an item that
                    # arrives as the timeout fires (Python < 3.12)
                    await asyncio.sleep(min(deadline - loop.time(), 0.001))
                else:
                    break
            await self._answer(batch, loop)

    async def _answer(self, batch, loop):
        images = np.stack([image for image, _ in batch])
        started = loop.time()
        try:
            rows = await loop.run_in_executor(self._runner, self._probabilities, images)
        except Exception as error:  # noqa: BLE001  (each waiting request answers it)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.served["images"] += len(batch)
        self.served["batches"] += 1
        self.served["model_busy_s"] += loop.time() - started
        for (_, future), row in zip(batch, rows):
            if not future.done():                  # not a client that went away
                future.set_result(row)

    def _probabilities(self, images):
        """(n, views, h, w, 3) uint8 -> (n, C): the mean over each image's views."""
        n, k = images.shape[:2]
        rows = model_probabilities(self.model, normalize(images.reshape(
            (n * k,) + images.shape[2:]), self.recipe), self.runner)
        return rows.reshape(n, k, -1).mean(axis=1)

    def close(self):
        self._decoders.shutdown(wait=True, cancel_futures=True)
        self._runner.shutdown(wait=True, cancel_futures=True)
