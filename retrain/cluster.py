"""Feature extraction, classification and evaluation on a Dask cluster (`--dask ADDRESS`).

Only the forward passes move: hashing, the feature cache, training, metrics, the report and
the export stay on the client, as in an in-process run.

Where images are read: by the workers, from the paths the client gives (made absolute), so
every worker must see the data at the same path (a shared filesystem, the usual cluster
setup). Why not have the client send the bytes: a task is then a list of paths, a few kB, so
the client's network link and the scheduler carry no image data, and a task lost with a
killed worker is simply run again elsewhere by Dask from its description. A worker checks
the sha256 of what it reads against the client's content hash, so a file that differs there
(changed since, or another file at that path) is reported as failed, never cached under the
key of the image the client saw.

The model: the client saves it in the engine's .h5 format (weights and config, no code) and
a worker plugin carries those bytes to every worker, also to one that joins or restarts
later; each worker loads it once, keyed by the bytes' sha256, and keeps it for every task
of the command (features and augmented views share one shipment), until Cluster.close().

Tasks are chunks of up to TASK_IMAGES entries (whole batches of the in-process order, see
Cluster.features), named by the hash of their entries' content hashes. Each returns its chunk's outputs to the client,
which writes them through the crash-safe shards of features.FeatureCache: workers never see
the cache, and a task retried after a killed worker is written once, when it completes.
"""
import contextlib
import hashlib
import logging
import math
import os
import socket
import tempfile
import threading
from concurrent.futures import CancelledError

import numpy as np
from distributed import Client, LocalCluster, WorkerPlugin, as_completed
from distributed.scheduler import KilledWorker

from .version import __version__
from .classify import predict_probabilities
from .engine import load_model
from .errors import ClusterError, RetrainError
from .features import forward_entries
from .files import sha256_file
from .runtimes import Runtime, load_runtime, resolve_runtime

__all__ = ["Cluster", "connect", "TASK_IMAGES", "CONNECT_TIMEOUT"]

TASK_IMAGES = 256            # most entries per task: a few seconds of one worker's time
CONNECT_TIMEOUT = 10         # seconds to reach a scheduler before giving up
_LOCAL = "local:"
_MODELS, _MODELS_LOCK = {}, threading.Lock()      # on a worker: sha256 of bytes -> model
_RUNNERS = {}            # on a worker: (sha256, runtime, precision) -> runtimes.Runtime


@contextlib.contextmanager
def connect(address, timeout=None):
    """A Cluster on the scheduler at `address` (tcp://host:8786), or on a LocalCluster of N
    worker processes for "local:N" (one thread each; started here, closed on exit).
    `timeout`: seconds to reach the scheduler (default CONNECT_TIMEOUT). Dask's own log
    lines (a lost scheduler's reconnection attempts, with tracebacks) are silenced while
    it is open: what goes wrong reaches the caller as one ClusterError."""
    with _quiet("distributed"), _connected(address, timeout) as connected:
        yield connected


@contextlib.contextmanager
def _quiet(prefix):
    """Loggers named `prefix` or `prefix.*` at CRITICAL (Dask's config gives some of them
    their own level, so the parent's alone would not do), then as they were."""
    loggers = [logging.getLogger(name) for name in [prefix, *logging.root.manager.loggerDict]
               if name == prefix or name.startswith(prefix + ".")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _connected(address, timeout):
    local = None
    try:
        if address.startswith(_LOCAL):
            local = LocalCluster(n_workers=int(address[len(_LOCAL):]), threads_per_worker=1,
                                 processes=True, dashboard_address=":0",
                                 silence_logs=logging.CRITICAL)   # errors reach us anyway
            client = Client(local)
        else:
            client = _client(address, timeout or CONNECT_TIMEOUT)
            _wait_for_a_worker(client, address, timeout or CONNECT_TIMEOUT)
    except ClusterError:
        raise
    except Exception as error:  # noqa: BLE001  (whatever a non-scheduler's bytes make Dask raise)
        if local is not None:
            local.close()
        raise ClusterError(f"Cannot reach the Dask scheduler at {address}: "
                           f"{' '.join(str(error).split()) or type(error).__name__}.",
                           hint="Start one with `dask scheduler` (and workers with `dask "
                                "worker tcp://HOST:8786`), check the address and port, or "
                                "use --dask local:2 for worker processes on this machine."
                           ) from None
    connected = Cluster(client)
    try:
        yield connected
    finally:
        connected.close()
        client.close()
        if local is not None:
            local.close()


def _client(address, timeout):
    """Client(address), or ClusterError after `timeout` s: Dask's timeout does not bound its
    handshake, so at a port where something else listens (a dashboard, any TCP server that
    waits for a request) Client() would wait for ever. It is made in a thread of its own,
    given up (a daemon thread, left waiting) when the time is over."""
    made = {}

    def connect_client():
        try:
            made["client"] = Client(address, timeout=0.8 * timeout)   # its errors first
        except BaseException as error:  # noqa: BLE001  (handed to the caller's thread)
            made["error"] = error

    thread = threading.Thread(target=connect_client, name="retrain-dask-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ClusterError(f"No Dask scheduler answered at {address} within {timeout:g} s: "
                           "something else listens on that port (a dashboard?), or it is "
                           "too busy.",
                           hint="Give the scheduler's own address (tcp://HOST:8786 by "
                                "default, not its dashboard's :8787), or use --dask local:2 "
                                "for worker processes on this machine.")
    if "error" in made:
        raise made["error"]
    return made["client"]


def _wait_for_a_worker(client, address, timeout):
    """Tasks sent to a scheduler without workers would wait for ever: refuse it instead."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        client.close()
        raise ClusterError(f"The Dask scheduler at {address} has no workers (none joined "
                           f"within {timeout:g} s).",
                           hint="Start workers with `dask worker "
                                f"{address}` on the machines that see the data.") from None


class Cluster:
    """The client side: ships a model to the workers, splits work into tasks, collects
    the results. `task_images` caps the entries per task (default TASK_IMAGES)."""

    def __init__(self, client, task_images=TASK_IMAGES):
        self.client = client
        self.task_images = task_images
        self._shipped = {}                   # plugin name -> (model, digest)

    def worker_count(self):
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    def features(self, items, model, recipe, batch_size, dtype):
        """The cluster's counterpart of features.forward_entries: the same (count, failed,
        kept, block) results, one per task, in the order tasks finish. The returned run's
        stop() cancels the tasks not finished (Ctrl-C) and returns the finished ones.
        `model`: a model, or a runtimes.Runtime, whose runtime and precision the workers
        then use where they have them (see _runner).

        A task is a run of whole batches of `items`, in their order: each batch then holds
        the same images as in process, and so gives the same features (the engine's float32
        results depend on a batch's make-up, by about 1e-5 relative)."""
        items = [(key, os.path.abspath(path), view) for key, path, view in items]
        batches = self._batches_per_task(len(items), batch_size)
        size = batches * batch_size
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        runtime = (model.name, model.precision) if isinstance(model, Runtime) else (
            "numpy", "f32")
        return _Run(self, getattr(model, "model", model), chunks, recipe, batch_size,
                    np.dtype(dtype).name, runtime)

    def _batches_per_task(self, count, batch_size):
        """Up to TASK_IMAGES per task, and about 4 tasks per worker where there are fewer
        images than that, so that every worker has work and a lost task is a small loss."""
        wanted = math.ceil(count / (4 * self.worker_count() * batch_size))
        return max(1, min(self.task_images // batch_size, wanted))

    def probabilities(self, model, paths, batch_size, runtime="numpy", precision="f32"):
        """classify.predict_probabilities on the workers: (done, probabilities) per task, in
        the order of `paths` (each task's result waits for those before it)."""
        paths = list(paths)
        if not paths:
            return
        size = self._batches_per_task(len(paths), batch_size) * batch_size
        chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
        digest = self.ship(model)
        futures = [self.client.submit(_probabilities_task, digest,
                                      [os.path.abspath(p) for p in chunk], batch_size,
                                      (runtime, precision),
                                      key=_task_key("classify", digest, chunk))
                   for chunk in chunks]
        try:
            for chunk, future in zip(chunks, futures):
                done, probabilities = _result(future)
                yield [(path, reason) for path, (_, reason) in zip(chunk, done)], probabilities
        finally:
            self.client.cancel(futures)

    def ship(self, model):
        """Have every worker load `model` (once: a model shipped before is not sent again);
        returns the digest that tasks name it by. It stays loaded until close()."""
        for shipped, digest in self._shipped.values():
            if shipped is model:
                return digest
        with tempfile.TemporaryDirectory(prefix="retrain-dask-") as folder:
            path = os.path.join(folder, "model.h5")
            model.save(path, metadata=getattr(model, "metadata", None) or {})
            with open(path, "rb") as handle:
                payload = handle.read()
        digest = hashlib.sha256(payload).hexdigest()
        name = f"retrain-model-{digest[:16]}"
        try:
            self.client.register_plugin(_ModelPlugin(digest, payload), name=name)
        except Exception as error:    # raised on a worker: a missing module, an old retrain
            raise ClusterError(f"The Dask workers could not load the model "
                               f"({type(error).__name__}: {' '.join(str(error).split())}).",
                               hint=f"Install this retrain ({__version__}), with its dask "
                                    "extra, on every worker machine, then run again."
                               ) from None
        self._shipped[name] = (model, digest)
        return digest

    def close(self):
        """Unload the shipped models from the workers (a shared cluster lives on)."""
        for name in list(self._shipped):
            with contextlib.suppress(Exception):          # the cluster may be gone already
                self.client.unregister_worker_plugin(name)
            del self._shipped[name]


class _Run:
    """The feature tasks of one extraction: iterate for results, stop() on Ctrl-C."""

    def __init__(self, cluster, model, chunks, recipe, batch_size, dtype, runtime):
        self._cluster, self._model = cluster, model
        self._chunks, self._recipe = chunks, recipe
        self._batch_size, self._dtype, self._runtime = batch_size, dtype, runtime
        self._futures, self._taken = [], set()

    def __iter__(self):
        if not self._chunks:          # all cached: nothing is sent to the cluster
            return
        client = self._cluster.client
        digest = self._cluster.ship(self._model)
        self._futures = [client.submit(_features_task, digest, self._recipe, chunk,
                                       self._batch_size, self._dtype, self._runtime,
                                       key=_task_key("features", digest, chunk))
                         for chunk in self._chunks]
        try:
            for future in as_completed(self._futures):
                result = _result(future)
                self._taken.add(future.key)
                yield result
        finally:                  # Ctrl-C, an error: the finished ones are left for stop()
            client.cancel([f for f in self._futures if f.status != "finished"])

    def stop(self):
        """Cancel the unfinished tasks; return the results finished but not yet taken."""
        finished = [f for f in self._futures
                    if f.status == "finished" and f.key not in self._taken]
        self._cluster.client.cancel([f for f in self._futures if f.status != "finished"])
        return [_result(f) for f in finished]


def _task_key(kind, digest, chunk):
    """A task's name: what it computes and the hash of its entries (the content hashes of
    a feature task, the paths of a classify task)."""
    text = "\n".join(str(entry[0] if isinstance(entry, tuple) else entry) for entry in chunk)
    return f"retrain-{kind}-{hashlib.sha256((digest + text).encode()).hexdigest()[:24]}"


def _result(future):
    """A task's result; Dask's failures as one ClusterError (our own errors pass through)."""
    try:
        return future.result()
    except RetrainError:
        raise
    except KilledWorker as error:
        raise ClusterError(f"A task was lost with every worker that ran it ({error}).",
                           hint="Look at the workers' logs: out of memory? Then give them "
                                "more, or run fewer worker processes per machine.") from None
    except (OSError, TimeoutError, CancelledError) as error:   # the scheduler went away
        raise ClusterError(f"Lost the Dask cluster during the run: "
                           f"{' '.join(str(error).split()) or type(error).__name__}.",
                           hint="Check the scheduler; run the same command again to resume "
                                "(finished chunks are cached).") from None


# -- on the workers ------------------------------------------------------------------------
class _ModelPlugin(WorkerPlugin):
    """Loads the model from its .h5 bytes once per worker process, when the worker starts
    or when it is registered; removes it again when it is unregistered."""

    def __init__(self, digest, payload):
        self.digest, self.payload = digest, payload

    def setup(self, worker):
        _load(self.digest, self.payload)

    def teardown(self, worker):
        with _MODELS_LOCK:
            _MODELS.pop(self.digest, None)
            for key in [key for key in _RUNNERS if key[0] == self.digest]:
                del _RUNNERS[key]


def _load(digest, payload):
    with _MODELS_LOCK:
        if digest not in _MODELS:
            with tempfile.TemporaryDirectory(prefix="retrain-worker-") as folder:
                path = os.path.join(folder, "model.h5")
                with open(path, "wb") as handle:
                    handle.write(payload)
                _MODELS[digest] = (load_model(path), threading.Lock())
        return _MODELS[digest]


def _model(digest):
    with _MODELS_LOCK:
        if digest in _MODELS:
            return _MODELS[digest]
    raise ClusterError(f"The model {digest[:16]} is not loaded on worker "
                       f"{socket.gethostname()}: it was withdrawn while its tasks ran.",
                       hint="Run the same command again.")


def _runner(digest, runtime):
    """The worker's runtimes.Runtime of model `digest` on `runtime` = (name, precision),
    made once. A worker without that runtime's extra runs f32 on the best one it has (f32
    runtimes agree within 1e-4, so their features share the cache); bf16 it cannot fake."""
    model, lock = _model(digest)
    name, precision = runtime
    key = (digest, name, precision)
    with lock:
        if key not in _RUNNERS:
            try:
                resolve_runtime(name, precision)
            except RetrainError:
                if precision != "f32":
                    raise
                name = "auto"
            _RUNNERS[key] = load_runtime(model, name, precision)
    return _RUNNERS[key], lock


def _content_problem(key, path):
    """Why `path` here is not the image the client hashed as `key`, or None."""
    try:
        digest = sha256_file(path)
    except OSError as exc:
        return (f"cannot read the file on worker {socket.gethostname()}: "
                f"{exc.strerror or exc} (workers must see the data at the same path)")
    if digest != key.split(":")[0]:
        return (f"the file differs on worker {socket.gethostname()} from the one hashed "
                "(changed since, or another file at that path)")
    return None


def _features_task(digest, recipe, items, batch_size, dtype, runtime=("numpy", "f32")):
    """One chunk's forward passes: (count, failed, kept, block) for all of `items`."""
    model, lock = _runner(digest, runtime)
    failed = {key: problem for key, path, _ in items
              for problem in [_content_problem(key, path)] if problem}
    usable = [item for item in items if item[0] not in failed]
    kept, blocks = [], []
    with lock:                    # a model's layers keep per-call state: one call at a time
        for _, batch_failed, batch_kept, block in forward_entries(
                usable, model, recipe, batch_size, 1, np.dtype(dtype)):
            failed.update(batch_failed)
            kept += batch_kept
            if block is not None:
                blocks.append(block)
    return len(items), failed, kept, np.concatenate(blocks) if blocks else None


def _probabilities_task(digest, paths, batch_size, runtime=("numpy", "f32")):
    model, _ = _model(digest)
    runner, lock = _runner(digest, runtime)
    done, blocks = [], []
    with lock:
        for batch_done, probabilities in predict_probabilities(model, paths, batch_size, 1,
                                                               runtime=runner):
            done += batch_done
            blocks.append(probabilities)
    return done, np.concatenate(blocks)
