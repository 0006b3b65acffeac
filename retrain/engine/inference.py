"""Fast inference: a frozen plan of a Model, which Model.predict runs instead of forward.

The plan is compiled once from the layer graph (inference_steps.py): each BatchNormalization
is folded into the Conv2D, DepthwiseConv2D or Dense before it, the activation and residual
Add after a layer run in that layer's epilogue, Dropout disappears, and zero padding becomes
the constant border of a preallocated buffer whose interior the producing layer writes. For
each input shape a layout gives values whose lifetimes do not overlap the same buffer.
Samples run on every core: whole images on separate threads; the image of a batch of one, or
the odd one of a batch, with its rows split between the threads.

Results equal `model.forward(x, training=False)` up to float32 rounding.
"""
import ctypes
import itertools
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import inference_steps as steps
from .errors import ShapeError

__all__ = ["DEFAULT_BATCH_SIZE", "InferencePlan", "inference_function"]

# What predict uses for batch_size=None. Each thread runs whole images, so any multiple of
# the core count keeps every core busy (an odd image runs split by rows, a little slower);
# larger batches gain nothing and hold more images in memory.
DEFAULT_BATCH_SIZE = 32
# Samples per job: as many as keep a job's largest activation under this many bytes, so a
# 224x224 image runs alone (EfficientNet's 112x112x96 expansion is 4.8 MB) while feature
# vectors for a head run hundreds at a time.
_JOB_BYTES = 1 << 21
_MAX_THREADS = 8


# -- buffers for one input shape -----------------------------------------------------------
class _Layout:
    """For one per-sample input shape: each value's shape; the Pad steps skipped because
    their input's producer (or the loading of a model input) writes straight into the padded
    buffer's interior; and a buffer slot per value, shared by values whose lifetimes do not
    overlap."""

    def __init__(self, plan, input_shapes):
        self.steps, self.params, self.inputs = plan.steps, [], plan.input_vids
        self.shapes = dict(zip(plan.input_vids, input_shapes))
        for step in plan.steps:
            self.shapes[step.output], params = step.bind(self.shapes)
            self.params.append(params)
        largest = max(int(np.prod(s, dtype=np.int64)) for s in self.shapes.values())
        self.job_size = max(1, _JOB_BYTES // (4 * max(largest, 1)))
        self.spatial = any(len(s) == 3 for s in self.shapes.values())
        # Threads sharing an image (each with its own rows) meet at a barrier before each
        # non-local step. A buffer read at a step is handed on only from the next such step,
        # when every thread is done reading it.
        readers, release, barrier = {}, {}, len(plan.steps) + 1
        for index, step in reversed(list(enumerate(plan.steps))):
            release[index] = barrier - 1
            barrier = barrier if step.local else index
        for index, step in enumerate(plan.steps):
            for vid in step.reads():
                readers.setdefault(vid, []).append(index)
        self.inside, self.run_steps = {}, []   # inside: value -> (padded value, offset)
        for index, step in enumerate(plan.steps):
            src = step.inputs[0]
            if isinstance(step, steps.Pad) and src not in plan.output_vids \
                    and len(readers[src]) == 1:
                (top, _), (left, _) = self.params[index]["pads"]
                self.inside[src] = (step.output, (top, left))
            else:
                self.run_steps.append(index)
        last = {vid: len(plan.steps) if vid in plan.output_vids else max(
            (release[r] for r in readers.get(vid, [])), default=0) for vid in self.shapes}
        self._assign_slots(last)
        self.workspaces = {}

    def root(self, vid):
        """(the value owning `vid`'s buffer, `vid`'s (row, column) offset in it)."""
        top = left = 0
        while vid in self.inside:
            vid, (dt, dl) = self.inside[vid]
            top, left = top + dt, left + dl
        return vid, (top, left)

    def _assign_slots(self, last):
        first = {step.output: index for index, step in enumerate(self.steps)}
        first.update(dict.fromkeys(self.inputs, 0))   # loaded before the first step
        span, regions = {}, {}
        for vid in self.shapes:
            root = self.root(vid)[0]
            start, end = span.get(root, (first[vid], last[vid]))
            span[root] = (min(start, first[vid]), max(end, last[vid], first[vid]))
        for index, step in enumerate(self.steps):
            if isinstance(step, steps.Pad):
                root, (top, left) = self.root(step.output)
                (dt, _), (dl, _) = self.params[index]["pads"]
                regions.setdefault(root, set()).add(
                    (top + dt, left + dl) + self.shapes[step.inputs[0]][:2])
        # A padded buffer goes only to a value with the same shape and padded interiors (its
        # borders stay zero); any other buffer to any value, growing to the largest.
        key = {r: (self.shapes[r], tuple(sorted(regions[r]))) if r in regions else "plain"
               for r in span}
        free, self.slot_of, self.slots = {}, {}, []
        events = [(s, 0, r) for r, (s, _) in span.items()] + [(e, 1, r) for r, (_, e) in
                                                              span.items()]
        for _, freeing, root in sorted(events):       # at one step: take, then give back
            if freeing:
                free.setdefault(key[root], []).append(self.slot_of[root])
                continue
            if free.get(key[root]):
                self.slot_of[root] = free[key[root]].pop()
            else:
                self.slot_of[root] = len(self.slots)
                self.slots.append(key[root][0] if root in regions else 0)
            if root not in regions:
                size = int(np.prod(self.shapes[root], dtype=np.int64))
                self.slots[self.slot_of[root]] = max(self.slots[self.slot_of[root]], size)

    def workspace(self, thread, count):
        workspace = self.workspaces.get((thread, count))
        if workspace is None:       # a local, as another thread may reset the dict meanwhile
            if len(self.workspaces) > 4 * _MAX_THREADS:    # batch sizes keep changing
                self.workspaces = {}
            workspace = self.workspaces[thread, count] = _Workspace(self, count)
        return workspace


class _Workspace:
    """The buffers of one thread (or of the threads sharing one image) for `count` samples,
    and the steps bound to them: for each way of splitting the rows between threads, each
    thread's list of (call or None, barrier before, barrier after)."""

    def __init__(self, layout, count):
        slots = [np.empty(count * slot, np.float32) if isinstance(slot, int) else
                 np.zeros((count,) + slot, np.float32) for slot in layout.slots]
        self.layout, self.arrays, self.temporaries, self.plans = layout, {}, {}, {}
        for vid, shape in layout.shapes.items():
            root, (top, left) = layout.root(vid)
            buffer = slots[layout.slot_of[root]]
            if buffer.ndim == 1:          # a plain buffer, maybe larger than this value
                buffer = buffer[:count * int(np.prod(shape, dtype=np.int64))]
                buffer = buffer.reshape((count,) + shape)
            elif root != vid:             # the interior of a padded buffer
                buffer = buffer[:, top:top + shape[0], left:left + shape[1]]
            self.arrays[vid] = buffer

    def scratch(self, name, shape):
        """A temporary for the steps of this workspace. Steps run one after the other, or on
        threads at once only with disjoint rows of the same shape, so they can share it."""
        if (name, shape) not in self.temporaries:
            self.temporaries[name, shape] = np.empty(shape, np.float32)
        return self.temporaries[name, shape]

    def bind(self, parts):
        """Bind the steps for `parts` threads (before they start: this is not thread-safe)."""
        if parts in self.plans:
            return
        layout, plans = self.layout, [[] for _ in range(parts)]
        for index in layout.run_steps:
            step, params = layout.steps[index], layout.params[index]
            split = parts > 1 and step.splittable and len(layout.shapes[step.output]) == 3
            height = step.band_height(layout.shapes)
            for part, calls in enumerate(plans):
                rows = (height * part // parts, height * (part + 1) // parts) if split else None
                runs = rows[0] < rows[1] if split else part == 0
                call = step.prepare(self.arrays, rows, params, self.scratch) if runs else None
                calls.append((call, parts > 1 and not step.local,
                              parts > 1 and not step.splittable))
        self.plans[parts] = plans

    def run(self, part=0, parts=1, barrier=None):
        for call, wait_before, wait_after in self.plans[parts][part]:
            if wait_before:
                barrier.wait()
            if call is not None:
                call()
            if wait_after:
                barrier.wait()


# -- running --------------------------------------------------------------------------------
class _OneBlasThread:
    """Within `with`, numpy's OpenBLAS runs each matmul on the calling thread alone.

    The plan keeps every core busy with its own threads; OpenBLAS's threads would contend
    with them, and on a busy machine a small matmul split in two waits for a descheduled
    helper (49x1152 @ 1152x192 fell from 60 to 0.2 GFLOP/s). numpy has no setting for this,
    so the OpenBLAS library it loaded is asked directly, as threadpoolctl does; with another
    BLAS, or off Linux, this does nothing. Nested or concurrent uses restore the setting
    when the last one ends.
    """
    _calls = None
    _lock = threading.Lock()
    _users = 0
    _saved = []

    @classmethod
    def _get_set_pairs(cls):
        if cls._calls is None:
            try:
                with open("/proc/self/maps") as maps:
                    paths = {p for line in maps for p in line.split()[5:] if "openblas" in p}
            except OSError:
                paths = set()
            cls._calls = []
            for path, prefix, suffix in itertools.product(sorted(paths), ("scipy_", ""),
                                                          ("64_", "")):
                names = [f"{prefix}openblas_{verb}_num_threads{suffix}" for verb in ("get", "set")]
                library = ctypes.CDLL(path)
                if all(hasattr(library, name) for name in names):
                    cls._calls.append(tuple(getattr(library, name) for name in names))
        return cls._calls

    def __enter__(self):
        with self._lock:
            if _OneBlasThread._users == 0:
                _OneBlasThread._saved = [(get(), set_) for get, set_ in self._get_set_pairs()]
                for _, set_ in self._saved:
                    set_(1)
            _OneBlasThread._users += 1

    def __exit__(self, *exc_info):
        with self._lock:
            _OneBlasThread._users -= 1
            if _OneBlasThread._users == 0:
                for threads, set_ in self._saved:
                    set_(threads)


def one_blas_thread() -> "_OneBlasThread":
    """A context (enter and exit it in one thread) within which numpy's OpenBLAS runs each
    matmul on the calling thread alone; see _OneBlasThread."""
    return _OneBlasThread()


# One run at a time in the process: a run already keeps every core busy, and two runs whose
# row-split parts wait at barriers could otherwise hold all of the shared pool's workers.
_RUN_LOCK = threading.Lock()
_POOL = []


def _after_fork_in_child():
    """A forked child has none of the pool's threads, and no run in progress."""
    global _RUN_LOCK
    _POOL.clear()
    _RUN_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _thread_count():
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:           # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, cpus))


def _parallel(fn, threads, barrier=None):
    """fn(0) on this thread and fn(1) ... fn(threads - 1) on the pool; raise the first error
    (a failing thread breaks the barrier, so that the others do not wait for it forever)."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(_MAX_THREADS - 1, "retrain-inference"))

    def guarded(thread):
        try:
            fn(thread)
        except BaseException:
            if barrier is not None:
                barrier.abort()
            raise

    futures = [_POOL[0].submit(guarded, thread) for thread in range(1, threads)]
    errors = []
    try:
        guarded(0)
    except BaseException as error:   # the other threads still finish before it is raised
        errors.append(error)
    errors += [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                   errors[0])


def _execute(layout, xs, input_vids, output_vids):
    """Jobs of whole samples shared out between the threads, then the samples left over
    (fewer than the threads, when a job is one image) one at a time, split by rows."""
    count, threads = len(xs[0]), _thread_count()
    results = [np.empty((count,) + layout.shapes[v], np.float32) for v in output_vids]
    size = max(1, min(layout.job_size, -(-count // threads)))
    whole = count - count % threads if layout.spatial and size == 1 else count
    jobs = [(start, min(size, whole - start)) for start in range(0, whole, size)]
    next_job = itertools.count().__next__

    def run(workspace, start, n, parts=1):
        for vid, x in zip(input_vids, xs):
            np.copyto(workspace.arrays[vid], x[start:start + n])
        workspace.bind(parts)
        if parts > 1:
            barrier = threading.Barrier(parts)
            _parallel(lambda part: workspace.run(part, parts, barrier), parts, barrier)
        else:
            workspace.run()
        for result, vid in zip(results, output_vids):
            result[start:start + n] = workspace.arrays[vid]

    def work(thread):
        while (job := next_job()) < len(jobs):
            run(layout.workspace(thread, jobs[job][1]), *jobs[job])

    if jobs:
        _parallel(work, min(threads, len(jobs)))
    for start in range(whole, count):
        run(layout.workspace(0, 1), start, 1, threads)
    return results


class InferencePlan:
    """A model's inference computation compiled with its current weights (module
    docstring). `run(x)` equals model.forward(x, training=False) up to float32 rounding. One
    call at a time in the process (_RUN_LOCK): the buffers are the plan's."""

    def __init__(self, model):
        self.steps, self.input_vids, self.output_vids = steps.compile_graph(model)
        self.input_layers = [t.layer for t in model.inputs]
        self.multi_input, self.multi_output = model._multi_input, model._multi_output
        self._layout = None

    def run(self, x):
        xs = list(x) if self.multi_input else [x]
        if len(xs) != len(self.input_layers) or len({len(a) for a in xs}) != 1:
            raise ShapeError(f"Expected {len(self.input_layers)} input(s) with as many "
                             f"samples each. Received: shapes {[np.shape(a) for a in xs]}.")
        xs = [np.ascontiguousarray(layer.forward(np.asarray(a, np.float32)))
              for layer, a in zip(self.input_layers, xs)]
        shapes = tuple(a.shape[1:] for a in xs)
        with _RUN_LOCK, _OneBlasThread():
            if self._layout is None or self._layout[0] != shapes:   # keep one shape's buffers
                self._layout = (shapes, _Layout(self, shapes))
            outs = _execute(self._layout[1], xs, self.input_vids, self.output_vids)
        return outs if self.multi_output else outs[0]


_PLANS = weakref.WeakKeyDictionary()


def inference_function(model):
    """What predict runs on each batch: the model's InferencePlan, rebuilt whenever a layer or
    a weight array was replaced since it was built (optimizers, set_weights and load_weights
    all replace them). A layer class without a lowering runs its own forward inside the plan
    (inference_steps.Forward), with an InferenceFallbackWarning."""
    if not model._graph:             # a Sequential that its first forward call will build
        return model.forward
    key = tuple(model._graph) + tuple(w.value for w in model.weights)
    cached = _PLANS.get(model)
    if cached is None or len(cached[0]) != len(key) or any(
            a is not b for a, b in zip(cached[0], key)):
        cached = _PLANS[model] = (key, InferencePlan(model).run)
    return cached[1]
