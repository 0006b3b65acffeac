"""Runtimes: what runs a frozen model's forward pass, where a user waits for it.

`numpy` is the engine's own inference plan (Model.predict): the reference, always there, the
one that trains. `openvino` and `onnxruntime` compile the same model from its in-memory ONNX
export (onnx_export.onnx_bytes) and come from optional extras, `openvino` and `onnxruntime`
(`pip install -e '.[openvino]'` in the clone, installed by `make install`). Measured on a 2-core Xeon (issue 18), EfficientNet-Lite0 at
batch 32: numpy 89 images/s, ONNX Runtime 137, OpenVINO 207 (500 in bf16 on AMX): `auto`
takes the first installed in that order, or the fastest that `make bench` measured here.

A runtime is checked before it is trusted: at its first use in a process on a model, its
outputs on a probe batch are compared with numpy's, and past PROBE_TOLERANCE (relative to the
outputs' scale) it is refused with an error naming it. Never silently wrong.

Loading (the export, the compilation, the check) takes a few tenths of a second on one core;
`load_runtime(..., wait=False)` exports and compiles in a thread while the caller starts
decoding images, and the runtime's first use waits for it, then makes the check in the
caller's thread (numpy never computes in two threads at once: see _load), raising whatever
loading or the check raised (a refusal too). What a runtime compiled is kept between
processes (runtime_store) and restored; `start_runtime` starts the loading before the model
is even built, restoring what an earlier run kept under the model's sources (a fit's
backbone: its weights file and cut), and makes the check once the model is given.

Precision: `f32` everywhere; `bf16` only on OpenVINO, and only where it reports bf16 among the
CPU's OPTIMIZATION_CAPABILITIES (AVX512_BF16 or AMX). bf16 outputs differ from f32 by far more
than float32 rounding (up to 0.5 on pooled features), so they are cached apart (features.py).
"""
import hashlib
import importlib
import importlib.util
import itertools
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .distribution import pip_install
from .engine import DEFAULT_BATCH_SIZE, one_blas_thread
from .errors import ConfigError, UnsupportedLayerError
from .runtime_backends import OnnxRuntimeBackend, OpenVINOBackend
from .runtime_store import (drop_compiled, read_compiled, source_key, write_compiled,
                            write_compiled_soon)
from .options import PRECISIONS, RUNTIMES

__all__ = ["RUNTIMES", "PRECISIONS", "PROBE_TOLERANCE", "Runtime", "load_runtime",
           "start_runtime", "import_ahead", "predict_batches", "resolve_runtime",
           "batch_size_of", "runtime_record", "describe_runtimes", "install_command"]

# How far a runtime's outputs on the probe may be from numpy's (_disagreement). f32: the
# largest |difference| as a fraction of max(1, max |numpy|); both compute in float32, and
# EfficientNet-Lite0's features agree within 1e-5 (issue 18: 7.7e-6 ONNX Runtime, 8.3e-6
# OpenVINO). bf16 (8 bits of mantissa): the RMS difference over the outputs' RMS: 0.06 for
# the ImageNet Lite0 here, 0.18 for a randomly initialised one (tests' stand-in), while
# outputs unrelated to numpy's are at about 1.4.
PROBE_TOLERANCE = {"f32": 1e-4, "bf16": 0.5}
_PREFERENCE = ("openvino", "onnxruntime", "numpy")    # fastest first, measured (docstring)
_TRUSTED = set()        # (runtime, precision, sha256 of the ONNX bytes) checked this process


def install_command(name):
    """The pip line that adds runtime `name`'s extra (distribution.py: it names the clone)."""
    return pip_install(name)


# The compiled runtimes, by name; tests add a deliberately wrong one here.
BACKENDS = {"openvino": OpenVINOBackend, "onnxruntime": OnnxRuntimeBackend}


def _installed(name):
    if name == "numpy":
        return True
    try:
        return importlib.util.find_spec(BACKENDS[name].module) is not None
    except (ImportError, ValueError):        # a broken install counts as none
        return False


def _precisions(name):
    return ("f32",) if name == "numpy" else BACKENDS[name].precisions()


def _supports(name, precision):
    """Every runtime computes in f32 (asking it would import it: 0.1 s for OpenVINO)."""
    return precision == "f32" or precision in _precisions(name)


def resolve_runtime(name="auto", precision="f32", bench_file=None):
    """The runtime that `name` (one of RUNTIMES, or "auto") means here, checked to be
    installed and to support `precision`; raises ConfigError saying why not. "auto": the
    fastest installed that supports `precision` (see the module doc)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision. Received: precision={precision!r}.",
                          hint=f"Use one of {', '.join(PRECISIONS)}.")
    if name == "auto":
        usable = [n for n in _ranking(bench_file) if _installed(n) and _supports(n, precision)]
        if not usable:
            raise ConfigError(f"No installed runtime computes in {precision} here: "
                              f"{_why_not(_ranking(bench_file)[0], precision)}.",
                              hint="Use --precision f32.")
        return usable[0]
    if name not in RUNTIMES:
        raise ConfigError(f"Unknown runtime. Received: runtime={name!r}.",
                          hint=f"Use auto or one of {', '.join(RUNTIMES)}.")
    if not _installed(name):
        raise ConfigError(f"--runtime {name} needs the {BACKENDS[name].module} package, "
                          f"which is not installed: {install_command(name)}.",
                          hint="Install it, or use --runtime auto, which takes the fastest "
                               "runtime installed (`retrain runtimes` lists them).")
    if not _supports(name, precision):
        raise ConfigError(f"--precision {precision} is not available on --runtime {name}: "
                          f"{_why_not(name, precision)}.", hint="Use --precision f32.")
    return name


def _why_not(name, precision):
    if not _installed(name):
        return f"{name} is not installed ({install_command(name)})"
    if name == "numpy":
        return "the numpy engine computes in float32 only"
    return BACKENDS[name].no_bf16()


def _ranking(bench_file):
    """RUNTIMES, fastest first: by `make bench`'s figures for this machine where it measured
    them all in f32, else by the order measured in issue 18."""
    measured = _bench_rates(bench_file)
    if all(n in measured for n in _PREFERENCE):
        return tuple(sorted(_PREFERENCE, key=lambda n: -measured[n]))
    return _PREFERENCE


def _bench_rates(bench_file, precision="f32"):
    """{runtime: images/s} of bench.json's "runtimes" section; {} when absent or malformed."""
    if bench_file is None:
        from .backbones.weights import BENCH_FILE
        bench_file = BENCH_FILE
    try:
        rates = json.loads(bench_file.read_text(encoding="utf-8"))["runtimes"]["images_per_s"]
        return {n: float(r[precision]) for n, r in rates.items() if precision in r}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def batch_size_of(name):
    """The batch at which runtime `name` computes best, where the caller may choose."""
    return DEFAULT_BATCH_SIZE if name == "numpy" else BACKENDS[name].batch_size


class Runtime:
    """A frozen model's forward pass on one runtime: `predict(x)` -> float32 outputs, as
    Model.predict gives them. `model` stays the numpy model (the cache, the Dask workers and
    the export read it); `name` and `precision` say what computes; `batch_size` is the
    batch it computes best where the caller may choose (the backend's)."""

    def __init__(self, model, name, precision, run):
        self.model, self.name, self.precision, self._run = model, name, precision, run
        self.batch_size = batch_size_of(name)
        self.check = self.probe = None       # a check against numpy not yet made (_load)
        self.kept = None        # the runtime_store key of its compiled model, where kept
        self.sources = None     # restored by start_runtime: its sources' key (_checked)

    def wait(self):
        """The runtime, loaded and checked: this one (a _Loading waits for its own)."""
        return self

    def check_now(self, reference=None):
        """Make the pending check against numpy (`reference`: numpy's outputs on the probe,
        computed here when None), in the calling thread; refuses (ConfigError) on a
        disagreement, every later call too."""
        if self.check is not None:
            self.check(self.model.predict(self.probe) if reference is None else reference)
            self.check = self.probe = None

    def predict(self, x, batch_size=None, verbose=0):
        x = np.ascontiguousarray(x, np.float32)
        if self.name == "numpy":
            return self._run(x, batch_size)
        step = len(x) if batch_size is None else max(1, batch_size)
        if len(x) <= step:
            return self._run(x)
        return np.concatenate([self._run(x[i:i + step]) for i in range(0, len(x), step)])

    def predict_batches(self, batches):
        """Yield (item, outputs) for each (item, x) of `batches`, in order (outputs None
        where x holds no image). Where the runtime computes in the background (OpenVINO),
        the next batch is taken from `batches` while this one computes."""
        pipelined = getattr(self._run, "pipelined", None)
        if pipelined is not None:
            yield from pipelined(batches)
            return
        for item, x in batches:
            yield item, self.predict(x, batch_size=len(x)) if len(x) else None

    def __repr__(self):
        return f"Runtime({self.name}, {self.precision})"


def predict_batches(runner, batches):
    """Runtime.predict_batches for a Runtime, and the same for a plain model (numpy)."""
    if isinstance(runner, Runtime):
        return runner.predict_batches(batches)
    return ((item, runner.predict(x, batch_size=len(x)) if len(x) else None)
            for item, x in batches)


class _Loading(Runtime):
    """A Runtime being loaded in a thread (load_runtime(wait=False)): `name`, `precision`
    and `predict` wait for it, and raise what loading raised."""

    def __init__(self, model, load, chosen):
        self.model, self._done, self._outcome = model, threading.Event(), None
        self._given = threading.Event()             # the model is there (provide)
        self._reference = None          # numpy's outputs on the model's probe (provide)
        if model is not None:
            self._given.set()
        self.batch_size = batch_size_of(chosen)     # known before the loading ends
        self._checking = threading.Lock()
        # Until the first wait, numpy's OpenBLAS computes on the caller's thread alone: a
        # threaded matmul while OpenVINO imports or compiles in the loading thread waited
        # forever for OpenBLAS's helper thread (fit with a warm cache trains at once; seen
        # hung in OpenBLAS's inner_thread, and reproduced with a bare matmul loop).
        self._pinned = one_blas_thread()
        self._pinned.__enter__()
        # not a daemon: the interpreter's exit waits for a compilation under way
        threading.Thread(target=self._load, args=(load,), name="retrain-runtime").start()

    def _load(self, load):
        try:
            self._outcome = (load(self), None)
        except BaseException as error:      # noqa: BLE001  raised in the caller's thread
            self._outcome = (None, error)
        finally:
            self._done.set()

    def wait(self):
        """The loaded Runtime, once it is and once checked against numpy in this thread
        (raises what loading or the check raised, each time)."""
        self._done.wait()
        with self._checking:
            if self._pinned is not None:
                self._pinned.__exit__(None, None, None)
                self._pinned = None
            runner, error = self._outcome
            if error is None:
                try:
                    model = None
                    if runner.model is None:    # restored before the model was built
                        model = self.given()
                        if model is None:
                            raise _CannotRun("The model to run was not built.")
                    runner = _checked(runner, model, self._reference)
                    self._outcome = (runner, None)
                except BaseException as refused:        # noqa: BLE001  kept for every call
                    self._outcome = runner, error = (None, refused)
        if error is not None:
            raise error
        return runner

    def provide(self, model):
        """Hand the loading (start_runtime) the model, once built (None: it never will be,
        and the loading ends). Where the runtime is loaded already, it is checked now, in
        this thread, rather than at its first use (a refusal is still raised there); else
        numpy's outputs on the probe are computed now, while it compiles, for that check."""
        self.model = model
        self._given.set()
        if model is None or self._done.is_set():    # None: numpy gets its threads back
            try:
                self.wait()
            except Exception:               # noqa: BLE001  raised at the first use
                pass
        else:       # compiling still: numpy's outputs on the probe meanwhile (one thread)
            self._reference = model.predict(_probe(model))     # the runtime's probe
        return self

    def given(self):
        """The model, once provide gave it (in the loading thread)."""
        self._given.wait()
        return self.model

    name = property(lambda self: self.wait().name)
    precision = property(lambda self: self.wait().precision)

    def predict(self, x, batch_size=None, verbose=0):
        return self.wait().predict(x, batch_size)

    def predict_batches(self, batches):
        batches = iter(batches)
        first = next(batches, None)      # the decoding starts before the wait for the runtime
        if first is not None:
            yield from self.wait().predict_batches(itertools.chain([first], batches))

    def __repr__(self):
        return "Runtime(loading)" if not self._done.is_set() else repr(self.wait())


def import_ahead(name="auto", precision="f32"):
    """Start importing the compiled runtime that load_runtime(model, name, precision) will
    load, in a thread, and return at once (the thread, or None where there is nothing to
    import): its import (0.1 s of a core for OpenVINO) then overlaps the loading of the model
    it will run, the backbone or a model file, instead of delaying the first batch. Nothing
    for numpy, nor for a runtime that load_runtime will refuse, saying why. As while a
    runtime loads (_Loading), numpy's OpenBLAS multiplies on one thread until the import
    is done: the pin is taken here and given back by the import's thread."""
    try:
        chosen = resolve_runtime(name, PRECISIONS[0])
    except ConfigError:
        return None
    if chosen == "numpy":
        return None
    pinned = one_blas_thread()
    pinned.__enter__()

    def run():
        try:
            importlib.import_module(BACKENDS[chosen].module)
        except Exception:           # noqa: BLE001  load_runtime imports it again, and says why
            pass
        finally:
            pinned.__exit__(None, None, None)
    thread = threading.Thread(target=run, name="retrain-runtime-import", daemon=True)
    thread.start()
    return thread


def load_runtime(model, name="auto", precision="f32", wait=True):
    """`model` (a frozen retrain model) on runtime `name` in `precision`: a Runtime, checked
    against numpy at its first use in this process (ConfigError naming the runtime when it
    disagrees). With "auto", a runtime that cannot run the model (a layer without an ONNX
    form, a runtime's own failure) gives way to the next fastest, numpy last.
    `wait=False`: returns at once, the loading done in a thread and the check at first use
    in the caller's thread (_Loading);
    a runtime not installed is still refused at once, but bf16 (which the runtime must be
    imported to answer for: 0.1-0.3 s) is checked in the thread, refused at first use."""
    if not wait:
        chosen = resolve_runtime(name, PRECISIONS[0] if precision in PRECISIONS else
                                 precision)
        if chosen != "numpy":
            return _Loading(model, lambda loading: _load_resolved(
                model, name, resolve_runtime(name, precision), precision, numpy_here=False),
                chosen)
    return _load_resolved(model, name, resolve_runtime(name, precision), precision)


def _load_resolved(model, name, chosen, precision, numpy_here=True):
    if name != "auto":
        return _load(model, chosen, precision, numpy_here)
    for candidate in _ranking(None)[_ranking(None).index(chosen):]:
        if _installed(candidate) and _supports(candidate, precision):
            try:
                return _load(model, candidate, precision, numpy_here)
            except _CannotRun:
                continue
    raise _CannotRun(f"No installed runtime can run this model in {precision}.",
                     hint="Use --precision f32.")


def start_runtime(parts, files, shape, name="auto", precision="f32"):
    """load_runtime(model, name, precision, wait=False) for a model still being built, known
    by what it is made of: `parts` (strings: the backbone, the cut) and `files` (those it is
    read from: the weights). The loading starts at once, in a thread; `.provide(model)`
    hands it the model once built. Where a compiled model is kept under the key of those
    sources (runtime_store), the thread restores it and runs the probe (inputs of `shape`,
    without the batch axis) meanwhile, leaving only the check to wait for the numpy model;
    otherwise it exports and compiles the model once given, and keeps the result under that
    key. None for numpy (nothing to load: load_runtime(model))."""
    chosen = resolve_runtime(name, PRECISIONS[0] if precision in PRECISIONS else precision)
    if chosen == "numpy":
        return None
    return _Loading(None, lambda loading: _load_early(loading, name, chosen, precision,
                                                      parts, files, shape), chosen)


def _load_early(loading, name, chosen, precision, parts, files, shape):
    backend, source, restored = BACKENDS[chosen], None, None
    resolved = resolve_runtime(name, precision)     # bf16 refused here, at the first use
    if hasattr(backend, "restore") and resolved == chosen:
        source = _kept_key(parts, files, chosen, precision)
        restored = source and _restore(backend, _pointed(source), precision, shape)
    if not restored:
        model = loading.given()
        if model is None:
            raise _CannotRun("The model to run was not built.")     # nobody waits for it
        runtime = _load_resolved(model, name, resolved, precision, numpy_here=False)
        if source and runtime.kept:
            write_compiled(source, runtime.kept.encode())   # points at the compiled model
        return runtime
    run, probe, outputs = restored
    # checked at every start, whatever this process trusts: the key names the sources, not
    # the model given (_Loading.wait gives it, and _checked checks it)
    runtime = Runtime(None, chosen, precision, run)
    runtime.sources, runtime.probe = source, probe
    runtime.check = lambda reference: _check_against_numpy(reference, outputs, chosen,
                                                          precision)
    return runtime


def _kept_key(parts, files, name, precision):
    """runtime_store's key for a compiled model of runtime `name` made from `parts` and
    `files` (None where a file cannot be read: the build says why)."""
    settings = json.dumps(BACKENDS[name].settings(precision), sort_keys=True)
    try:
        return source_key([*parts, name, _version(name), precision, settings], files)
    except OSError:
        return None


def _pointed(source):
    """The key of the compiled model that the sources' key `source` points at, or None."""
    key = (read_compiled(source) or b"").decode("ascii", "replace")
    return key if re.fullmatch("[0-9a-f]{64}", key) else None


def _restore(backend, key, precision, shape):
    """(run, probe, run's outputs on it) from the compiled model kept under `key`, or None
    (as _restored; or one that cannot run inputs of `shape`: deleted, compiled again)."""
    run = _restored(backend, key, precision)
    if run is None:
        return None
    probe = _probe(None, shape)
    try:
        return run, probe, run(probe)
    except Exception:           # noqa: BLE001  the runtime's own, of assorted types
        drop_compiled(key)
        return None


def _restored(backend, key, precision):
    """The run function of the compiled model kept under `key`, or None: none kept (or no
    key), or one the runtime cannot read (deleted: compiled again)."""
    body = key and read_compiled(key)
    if not body:
        return None
    try:
        return backend.restore(body, precision)
    except Exception:           # noqa: BLE001  the runtime's own, of assorted types
        drop_compiled(key)
        return None


def _compile(name, precision, onnx_bytes, digest):
    """(BACKENDS[name]'s run function for `onnx_bytes`, the runtime_store key it is kept
    under or None). Where the runtime can keep what it compiled, it is kept, by the ONNX
    bytes' sha256 `digest` (and the runtime, its version, the precision and the settings),
    and restored the next time: 15 ms for EfficientNet-Lite0 against 100 ms to compile."""
    backend = BACKENDS[name]
    if not hasattr(backend, "restore"):
        return backend.compile(onnx_bytes, precision), None
    key = _kept_key([f"onnx {digest}"], [], name, precision)
    run = _restored(backend, key, precision)
    if run is not None:
        return run, key
    run = backend.compile(onnx_bytes, precision)
    try:
        write_compiled_soon(key, backend.stored(run))
    except Exception:           # noqa: BLE001  not kept: compiled again next time
        return run, None
    return run, key


def _checked(runner, model=None, reference=None):
    """`runner` once its pending check against numpy is made, in this thread (with numpy's
    outputs on its probe `reference`, where provide computed them). `model`: the
    model a runtime restored by start_runtime before it was built runs (its sources' key
    `runner.sources`); where the restored one does not fit it or disagrees with numpy, the
    kept files are deleted and the model compiled afresh (checked too), and the next run
    keeps it anew."""
    if model is None:
        runner.check_now(reference)
        return runner
    runner.model = model
    try:
        if _probe(model).shape != runner.probe.shape:
            raise ConfigError("another input shape")
        runner.check_now(reference)
        return runner
    except ConfigError:
        drop_compiled(_pointed(runner.sources))
        drop_compiled(runner.sources)
        return _load(model, runner.name, runner.precision)


class _CannotRun(ConfigError):
    """A runtime failed to compile or run a model (not: ran it and disagreed with numpy)."""


def _load(model, name, precision, numpy_here=True):
    """`numpy_here=False` (the loading thread of load_runtime(wait=False)): numpy computes
    nothing here; the Runtime comes back with its check pending, for the caller's thread.
    The inference plan sets OpenBLAS's thread count process-wide (_OneBlasThread), which
    must not change under a matmul in another thread; the caller's own matmuls while this
    loads run on one thread (_Loading)."""
    if name == "numpy":
        return Runtime(model, "numpy", precision,
                       lambda x, batch_size=None: model.predict(x, batch_size=batch_size))
    from .onnx_export import onnx_bytes as export
    try:
        onnx_bytes = export(model)
    except UnsupportedLayerError as error:
        raise _CannotRun(f"--runtime {name} cannot run this model: {error}",
                         hint="Use --runtime numpy.") from None
    key = (name, precision, hashlib.sha256(onnx_bytes).hexdigest())
    x, trusted = _probe(model), key in _TRUSTED
    # numpy's outputs on the probe are computed meanwhile (the compilation releases the GIL)
    with ThreadPoolExecutor(max_workers=1) as pool:
        reference = None if trusted or not numpy_here else pool.submit(model.predict, x)
        try:
            run, kept = _compile(name, precision, onnx_bytes, key[2])
            outputs = None if trusted else run(x)
        except Exception as error:      # noqa: BLE001  the runtime's own, of assorted types
            first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            raise _CannotRun(f"--runtime {name} cannot run this model ({type(error).__name__}"
                             f": {first[:300]}).", hint="Use --runtime numpy, or auto.") from None
    runtime = Runtime(model, name, precision, run)
    runtime.kept = kept
    if not trusted:
        def check(reference):
            _check_against_numpy(reference, outputs, name, precision)
            _TRUSTED.add(key)
        runtime.check, runtime.probe = check, x
        if reference is not None:
            runtime.check_now(reference.result())
    return runtime


def _probe(model, shape=None):
    """Two deterministic inputs in the range of normalised images ([-1, 1]), of `model`'s
    input shape, or of `shape` (without the batch axis)."""
    shape = [2] + [224 if side is None else int(side)
                   for side in (shape or model.inputs[0].shape[1:])]
    return np.random.default_rng(18).uniform(-1.0, 1.0, shape).astype(np.float32)


def _check_against_numpy(reference, outputs, name, precision):
    reference = np.asarray(reference, np.float32)
    outputs = np.asarray(outputs, np.float32)
    worst, measure = _disagreement(outputs, reference, precision)
    if not worst <= PROBE_TOLERANCE[precision]:
        raise ConfigError(
            f"The {name} runtime disagrees with the numpy engine on a probe batch "
            f"({precision}: {measure} {worst:.3g}, over the {PROBE_TOLERANCE[precision]:g} "
            "allowed); refusing to use it.",
            hint=f"Use --runtime numpy, and report the {name} version "
                 f"({_version(name)}) as a bug.")


def _disagreement(outputs, reference, precision):
    """(how far `outputs` are from `reference`, what that number is). f32: the largest
    |difference| over max(1, the largest |output|). bf16: the RMS of the differences over
    the outputs' RMS, as rounding errors of 8-bit mantissas spread over every output, and
    one large output's error says little (a randomly initialised Lite0's largest bf16
    error is a quarter of its largest output, and moves with the BLAS kernels)."""
    if outputs.shape != reference.shape:
        return float("inf"), "output shape differs"
    difference = (outputs - reference).astype(np.float64)
    if precision == "f32":
        scale = max(1.0, float(np.abs(reference).max()))
        return float(np.abs(difference).max()) / scale, "max |difference| / outputs' scale"
    rms = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64))))
    return float(np.sqrt(np.mean(np.square(difference)))) / max(rms, 1e-12), \
        "RMS difference / outputs' RMS"


def _version(name):
    try:
        return importlib.import_module(BACKENDS[name].module).__version__
    except (ImportError, AttributeError, KeyError):
        return "unknown"


def runtime_record(runner):
    """What computed a run's features, for metrics.json, the report and the model file."""
    return {"runtime": runner.name, "precision": runner.precision,
            "version": np.__version__ if runner.name == "numpy" else _version(runner.name)}


def describe_runtimes(bench_file=None):
    """One dict per runtime, for `retrain runtimes`: name, installed, version, precisions
    (here), images_per_s {precision: rate} from `make bench` (None if not measured), and
    how_to_get."""
    rows = []
    for name in RUNTIMES:
        installed = _installed(name)
        rates = {p: _bench_rates(bench_file, p).get(name) for p in PRECISIONS}
        rows.append({"name": name, "installed": installed,
                     "version": (np.__version__ if name == "numpy" else _version(name))
                     if installed else None,
                     "precisions": list(_precisions(name)) if installed else [],
                     "images_per_s": rates,
                     "how_to_get": None if installed else install_command(name)})
    return rows
