"""Runtimes (retrain/runtimes.py): the compiled ones compute what the numpy engine computes,
one that does not is refused, and without the extras everything runs on numpy with a
one-line error for a runtime asked for by name. Tests that need an extra skip without it;
the others hide the extras (as an uninstalled package looks to Python) so that they run
the same with and without them."""
import json
import sys
import threading

import numpy as np
import pytest

from retrain import runtimes
from retrain.cli import main
from retrain.errors import ConfigError
from retrain.features import cache_namespace

from stand_in import RECIPE, lite_stand_in, stand_in_backbone

COMPILED = [name for name in runtimes.BACKENDS if runtimes._installed(name)]
needs_compiled = pytest.mark.skipif(not COMPILED, reason="no compiled runtime installed "
                                    "(the openvino or onnxruntime extra)")


@pytest.fixture
def without_extras(monkeypatch):
    """openvino and onnxruntime look uninstalled: `import` fails, find_spec finds nothing."""
    for backend in runtimes.BACKENDS.values():
        monkeypatch.setitem(sys.modules, backend.module, None)


@pytest.fixture
def fresh_trust(monkeypatch):
    """Forget which runtimes this process has checked, so that the check runs again."""
    monkeypatch.setattr(runtimes, "_TRUSTED", set())


def _inputs(model, count=5, seed=1):
    shape = (count,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@needs_compiled
@pytest.mark.parametrize("name", COMPILED)
def test_compiled_runtimes_compute_the_engines_outputs_in_f32(name, fresh_trust,
                                                              monkeypatch):
    """Two computation paths (our plan, the runtime's kernels) on the EfficientNet-Lite0
    graph: float32 both, so within PROBE_TOLERANCE, at batch 5 and in batches of 2. The
    onnx package is hidden: a runtime compiles onnx_wire's bytes, and importing onnx took
    half a second of every run."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    model = lite_stand_in()
    runner = runtimes.load_runtime(model, name, "f32")
    assert (runner.name, runner.precision, runner.model) == (name, "f32", model)
    x = _inputs(model)
    expected = model.predict(x)
    for batch_size in (None, 2):
        got = runner.predict(x, batch_size=batch_size)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0,
                                   atol=runtimes.PROBE_TOLERANCE["f32"] * max(
                                       1.0, float(np.abs(expected).max())))


class _Perturbed:
    """A compiled runtime whose outputs are off by `offset`: what the check must catch."""
    offset = 0.0

    def __init__(self, real):
        self.real, self.name, self.module = real, real.name, real.module
        self.precisions, self.no_bf16 = real.precisions, real.no_bf16
        self.batch_size = real.batch_size

    def compile(self, onnx_bytes, precision):
        run = self.real.compile(onnx_bytes, precision)
        return lambda x: run(x) + np.float32(self.offset)


@needs_compiled
@pytest.mark.parametrize("name", COMPILED)
def test_a_runtime_that_disagrees_with_numpy_is_refused(name, fresh_trust, monkeypatch):
    perturbed = {n: _Perturbed(runtimes.BACKENDS[n]) for n in COMPILED}
    for n, backend in perturbed.items():
        monkeypatch.setitem(runtimes.BACKENDS, n, backend)
        backend.offset = 5e-4                      # 5x the tolerance: refused, by name
    model = stand_in_backbone()
    with pytest.raises(ConfigError, match=f"The {name} runtime disagrees with the numpy "
                                          "engine on a probe batch"):
        runtimes.load_runtime(model, name)
    with pytest.raises(ConfigError, match="runtime disagrees"):
        runtimes.load_runtime(model, "auto")       # auto does not quietly take another
    perturbed[name].offset = 2e-5                  # float32 rounding's size: accepted
    assert runtimes.load_runtime(model, name).name == name


@needs_compiled
@pytest.mark.parametrize("name", COMPILED)
def test_a_runtime_loaded_in_a_thread_is_checked_all_the_same(name, fresh_trust, monkeypatch):
    """load_runtime(wait=False) returns before the export, the compilation and the check:
    the first use waits for them, and a runtime that disagrees is refused then."""
    perturbed = _Perturbed(runtimes.BACKENDS[name])
    perturbed.offset = 5e-4
    monkeypatch.setitem(runtimes.BACKENDS, name, perturbed)
    model = stand_in_backbone()
    x = _inputs(model)
    runner = runtimes.load_runtime(model, name, wait=False)
    for use in (lambda: runner.predict(x), lambda: runner.name):
        with pytest.raises(ConfigError, match=f"The {name} runtime disagrees with the numpy"):
            use()
    perturbed.offset = 0.0
    runner = runtimes.load_runtime(model, name, wait=False)
    assert (runner.name, runner.precision) == (name, "f32")
    expected = model.predict(x)
    np.testing.assert_allclose(runner.predict(x), expected, rtol=0, atol=runtimes.
                               PROBE_TOLERANCE["f32"] * max(1.0, float(np.abs(expected).max())))


@needs_compiled
@pytest.mark.parametrize("name", COMPILED)
def test_the_loading_thread_leaves_numpy_to_the_callers_thread(name, fresh_trust, monkeypatch):
    """numpy's check of a runtime loading in a thread runs in the caller's thread, at first
    use: OpenBLAS called from two threads at once (the check's inference plan setting its
    thread count while a training step multiplies) hung `fit` in OpenBLAS's inner_thread."""
    model, threads = stand_in_backbone(), []
    predict = model.predict
    monkeypatch.setattr(model, "predict", lambda *a, **k: (
        threads.append(threading.current_thread()), predict(*a, **k))[1])
    runner = runtimes.load_runtime(model, name, wait=False)
    runner._done.wait()                                   # loaded: numpy has done nothing
    assert threads == []
    assert runner.name == name                            # first use: the check, here
    assert threads == [threading.current_thread()]


class _Held(_Perturbed):
    """A compiled runtime whose compilation waits for `go`: a load caught in flight."""

    def __init__(self, real):
        super().__init__(real)
        self.go = threading.Event()

    def compile(self, onnx_bytes, precision):
        self.go.wait(30)
        return super().compile(onnx_bytes, precision)


@needs_compiled
@pytest.mark.parametrize("name", COMPILED)
def test_numpy_multiplies_on_one_thread_while_a_runtime_loads(name, fresh_trust, monkeypatch):
    """While a runtime imports and compiles in its thread, numpy's OpenBLAS computes on the
    caller's thread alone (a threaded matmul then hung fit in OpenBLAS's inner_thread), and
    gets its threads back at the first wait, in the caller's thread."""
    from retrain.engine.inference import _OneBlasThread
    counts = [get for get, _ in _OneBlasThread._get_set_pairs()]
    if not counts:
        pytest.skip("numpy's BLAS here is not an OpenBLAS this process can ask")
    before = [get() for get in counts]
    if max(before) == 1:
        pytest.skip("numpy's OpenBLAS runs on one thread here already")
    held = _Held(runtimes.BACKENDS[name])
    monkeypatch.setitem(runtimes.BACKENDS, name, held)
    runner = runtimes.load_runtime(stand_in_backbone(), name, wait=False)
    assert [get() for get in counts] == [1] * len(counts)
    held.go.set()
    assert runner.wait().name == name
    assert [get() for get in counts] == before


def _blas_thread_counts():
    """The OpenBLAS thread-count getters of this process, and what they say now; skips
    where numpy's BLAS cannot be asked or runs on one thread already."""
    from retrain.engine.inference import _OneBlasThread
    counts = [get for get, _ in _OneBlasThread._get_set_pairs()]
    if not counts:
        pytest.skip("numpy's BLAS here is not an OpenBLAS this process can ask")
    if max(get() for get in counts) == 1:
        pytest.skip("numpy's OpenBLAS runs on one thread here already")
    return counts, [get() for get in counts]


class _Started(_Held):
    """A held compilation that says when it has begun."""

    def __init__(self, real):
        super().__init__(real)
        self.started = threading.Event()

    def compile(self, onnx_bytes, precision):
        self.started.set()
        return super().compile(onnx_bytes, precision)


def _two_class_folder(root, count=4):
    from PIL import Image
    for label, channel in (("a", 0), ("b", 2)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            pixels = np.full((10, 12, 3), 30 + 5 * i, np.uint8)
            pixels[..., channel] = 220 - 6 * i
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


@needs_compiled
@pytest.mark.parametrize("name", COMPILED)
def test_a_fit_starts_loading_its_runtime_before_it_looks_for_images(name, fresh_trust,
                                                                     tmp_path, monkeypatch):
    """The runtime's export and compilation start as soon as the backbone is loaded (where
    nothing compiled is kept: start_runtime), so that they overlap the finding and hashing
    of the images (cold fit on the sample: the extraction stage 3.1 s -> 2.9 s, OpenVINO,
    quiet 2-core EPYC)."""
    from retrain import pipeline
    from stand_in import use_stand_in
    use_stand_in(monkeypatch)
    held = _Started(runtimes.BACKENDS[name])
    monkeypatch.setitem(runtimes.BACKENDS, name, held)
    ingest, seen = pipeline.ingest, []

    def ingest_once_loading(*args, **kwargs):
        seen.append(held.started.wait(10))
        held.go.set()
        return ingest(*args, **kwargs)
    monkeypatch.setattr(pipeline, "ingest", ingest_once_loading)
    data = _two_class_folder(tmp_path / "data")
    assert main(["fit", str(data), "--out", str(tmp_path / "run"), "--cache",
                 str(tmp_path / "cache"), "--epochs", "1", "--runtime", name, "-q"]) == 0
    assert seen == [True]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["runtime"]["runtime"] == name


@needs_compiled
@pytest.mark.parametrize("name", COMPILED)
def test_a_fit_that_fails_before_its_features_gives_numpy_its_threads_back(
        name, fresh_trust, tmp_path, monkeypatch, capsys):
    """A run refused after its runtime started loading (here: no images) waits for the
    loading on its way out, so that numpy's OpenBLAS gets its threads back, and says what
    was wrong with the run."""
    from stand_in import use_stand_in
    counts, before = _blas_thread_counts()
    use_stand_in(monkeypatch)
    held = _Started(runtimes.BACKENDS[name])
    monkeypatch.setitem(runtimes.BACKENDS, name, held)
    threading.Timer(0.3, held.go.set).start()          # the loading ends after the refusal
    (tmp_path / "empty").mkdir()
    assert main(["fit", str(tmp_path / "empty"), "--out", str(tmp_path / "run"), "--cache",
                 str(tmp_path / "cache"), "--runtime", name, "-q"]) == 2
    assert "error:" in capsys.readouterr().err
    assert held.started.is_set()
    assert [get() for get in counts] == before


@needs_compiled
def test_importing_a_runtime_ahead_pins_numpy_until_it_is_imported(monkeypatch):
    """import_ahead imports the runtime's package in a thread, numpy's OpenBLAS on one
    thread meanwhile (as while a runtime loads), and gives the threads back once imported;
    nothing to import for numpy or a runtime not installed."""
    import importlib
    counts, before = _blas_thread_counts()
    name = COMPILED[0]
    go, real_import = threading.Event(), importlib.import_module

    def held_import(module, *args):
        go.wait(10)
        return real_import(module, *args)
    monkeypatch.setattr(importlib, "import_module", held_import)
    thread = runtimes.import_ahead(name)
    assert [get() for get in counts] == [1] * len(counts)
    go.set()
    thread.join(10)
    assert [get() for get in counts] == before
    assert runtimes.import_ahead("numpy") is None
    monkeypatch.setitem(sys.modules, runtimes.BACKENDS[name].module, None)
    assert runtimes.import_ahead(name) is None


@pytest.mark.parametrize("name", ["numpy"] + COMPILED)
def test_a_fit_extracts_at_the_batch_its_runtime_computes_best(name, fresh_trust, tmp_path,
                                                               monkeypatch):
    """numpy at the engine's batch (32), OpenVINO at 8: its rate is the same at 8 and 32,
    but its first batch of each new size costs half a batch more, and 8 holds less memory
    (a cold fit on the sample peaked at 540 MB instead of 800)."""
    from retrain import features
    from retrain.engine import DEFAULT_BATCH_SIZE
    from stand_in import use_stand_in
    use_stand_in(monkeypatch)
    sizes, iter_batches = [], features.iter_batches

    def recording(paths, recipe, batch_size, *args, **kwargs):
        sizes.append(batch_size)
        return iter_batches(paths, recipe, batch_size, *args, **kwargs)
    monkeypatch.setattr(features, "iter_batches", recording)
    data = _two_class_folder(tmp_path / "data")
    assert main(["fit", str(data), "--out", str(tmp_path / "run"), "--cache",
                 str(tmp_path / "cache"), "--epochs", "1", "--runtime", name, "-q"]) == 0
    expected = {"numpy": DEFAULT_BATCH_SIZE, "openvino": 8, "onnxruntime": 32}[name]
    assert sizes == [expected]


@pytest.mark.skipif("openvino" not in COMPILED, reason="needs the openvino extra")
def test_openvino_keeps_what_it_compiled_for_the_next_process(fresh_trust, tmp_path,
                                                              monkeypatch):
    """The compiled model goes to retrain's cache folder (compiled/), where the next load
    of the same model finds it; a damaged file there is compiled again; a cache folder that
    cannot be written costs the caching, not the runtime."""
    from retrain.runtime_store import compiled_cache_dir, settle
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model = stand_in_backbone()
    _agrees(runtimes.load_runtime(model, "openvino"), model)
    settle()
    kept = sorted(compiled_cache_dir().iterdir())
    assert len(kept) == 1 and kept[0].stat().st_size > 10_000
    kept[0].chmod(0o600)
    kept[0].write_bytes(b"not a compiled model")                   # damaged: compiled again
    _agrees(runtimes.load_runtime(model, "openvino"), model)
    settle()
    assert kept[0].stat().st_size > 10_000
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))  # no folder can be made
    _agrees(runtimes.load_runtime(model, "openvino"), model)


@pytest.mark.skipif("openvino" not in COMPILED, reason="needs the openvino extra")
def test_the_compiled_models_kept_are_the_newest_up_to_a_size(fresh_trust, tmp_path,
                                                                monkeypatch):
    """Each trained model a user classifies is compiled once more: the cache folder keeps
    the newest of them up to COMPILED_CACHE_BYTES, and the one just compiled."""
    import os
    from retrain import runtime_store
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = runtime_store.compiled_cache_dir()
    folder.mkdir(parents=True)
    for age in range(5):                                  # 5 older files of 1 MB each
        old = folder / f"old-{age}.blob"
        old.write_bytes(b"x" * (1 << 20))
        os.utime(old, (1e9 - age, 1e9 - age))
    runtimes.load_runtime(stand_in_backbone(), "openvino")
    runtime_store.settle()
    new = [p for p in folder.iterdir() if not p.name.startswith("old-")]
    assert len(new) == 1 and new[0].stat().st_size < (1 << 18)    # the stand-in is small
    monkeypatch.setattr(runtime_store, "COMPILED_CACHE_BYTES", (5 << 20) // 2)   # 2.5 MB
    runtimes.load_runtime(stand_in_backbone(seed=1), "openvino")     # another model
    runtime_store.settle()
    kept = sorted(p.name for p in folder.iterdir())
    assert "old-0.blob" in kept and "old-1.blob" in kept           # the newest old ones
    assert not any(f"old-{age}.blob" in kept for age in (2, 3, 4))
    assert len([name for name in kept if not name.startswith("old-")]) >= 1


@pytest.mark.skipif("openvino" not in COMPILED, reason="needs the openvino extra")
def test_bf16_asked_of_a_runtime_loading_in_a_thread_is_refused_at_first_use(monkeypatch):
    """Whether OpenVINO has bf16 here is asked in the loading thread (it imports OpenVINO):
    where it has none, the first use is the one-line error saying why."""
    monkeypatch.setattr(runtimes.BACKENDS["openvino"], "precisions", lambda: ("f32",))
    runner = runtimes.load_runtime(stand_in_backbone(), "openvino", "bf16", wait=False)
    with pytest.raises(ConfigError, match="--precision bf16 is not available on --runtime "
                                          "openvino: OpenVINO reports no bf16 support"):
        runner.predict(_inputs(stand_in_backbone()))
    with pytest.raises(ConfigError, match="Unknown precision"):
        runtimes.load_runtime(stand_in_backbone(), "openvino", "f16", wait=False)


@pytest.mark.skipif("openvino" not in COMPILED, reason="needs the openvino extra")
def test_openvino_computes_a_batch_while_the_next_is_taken(fresh_trust):
    """predict_batches queues batch k+1 before handing on batch k's outputs (two requests in
    turn), in order, each batch's own outputs (copied out of the request's buffer), None
    for a batch without images; stopped early, it waits for the batch still queued."""
    model = lite_stand_in()
    runner = runtimes.load_runtime(model, "openvino")
    xs = [_inputs(model, n, seed) for n, seed in ((3, 1), (0, 2), (2, 3), (1, 4), (3, 5))]
    taken = []

    def batches():
        for i, x in enumerate(xs):
            taken.append(i)
            yield i, x
    got = {}
    for item, outputs in runner.predict_batches(batches()):
        assert taken[-1] == min(item + 1, len(xs) - 1)         # the next one was queued
        got[item] = outputs
    assert list(got) == list(range(len(xs))) and got[1] is None
    for i, x in enumerate(xs):
        if len(x):
            expected = model.predict(x)
            np.testing.assert_allclose(got[i], expected, rtol=0, atol=runtimes.PROBE_TOLERANCE[
                "f32"] * max(1.0, float(np.abs(expected).max())))
    early = runner.predict_batches(batches())
    next(early)
    early.close()


@needs_compiled
def test_classify_and_evaluate_run_on_the_runtime_and_refuse_one_that_disagrees(trained_stand_in, fresh_trust,
                                                                  monkeypatch, capsys):
    name = COMPILED[0]
    perturbed = _Perturbed(runtimes.BACKENDS[name])
    perturbed.offset = 1e-2
    monkeypatch.setitem(runtimes.BACKENDS, name, perturbed)
    model, data = trained_stand_in
    assert main(["classify", str(model), str(data), "--runtime", name]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: The {name} runtime disagrees") \
        and len(err.strip().splitlines()) == 2 and "Traceback" not in err
    # fit loads it in a thread while the first images decode: refused all the same
    refused = model.parent.parent / "refused"
    assert main(["fit", str(data), "--out", str(refused), "--cache", str(refused) + "-cache",
                 "--runtime", name, "-q"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: The {name} runtime disagrees") and not refused.exists() \
        and len(err.strip().splitlines()) == 2 and "Traceback" not in err
    # within the tolerance it is used: its outputs are the ones printed
    perturbed.offset = 5e-5
    printed = {}
    for runtime in ("numpy", name):
        assert main(["classify", str(model), str(data), "--runtime", runtime, "--format",
                     "json", "--top-k", "1"]) == 0
        printed[runtime] = [json.loads(line)["top"][0]["probability"]
                            for line in capsys.readouterr().out.splitlines()]
    np.testing.assert_allclose(np.array(printed[name]) - printed["numpy"], 5e-5, atol=2e-5)
    losses = {}
    for runtime in ("numpy", name):
        assert main(["evaluate", str(model), str(data), "--split", "all", "--json",
                     "--runtime", runtime]) == 0
        losses[runtime] = json.loads(capsys.readouterr().out)["loss"]
    assert losses[name] < losses["numpy"]         # every probability raised by 5e-5


def test_auto_falls_back_to_numpy_without_the_extras(without_extras):
    assert runtimes.resolve_runtime("auto") == "numpy"
    model = stand_in_backbone()
    runner = runtimes.load_runtime(model, "auto")
    assert runner.name == "numpy"
    x = _inputs(model)
    np.testing.assert_array_equal(runner.predict(x), model.predict(x))


@pytest.mark.parametrize("name", sorted(runtimes.BACKENDS))
def test_a_runtime_without_its_extra_is_a_one_line_error_naming_the_pip_command(
        name, without_extras, trained_stand_in, capsys):
    model, data = trained_stand_in
    assert main(["classify", str(model), str(data), "--runtime", name]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 2 and "Traceback" not in err
    assert lines[0] == (f"error: --runtime {name} needs the {name} package, which is not "
                        f"installed: {runtimes.install_command(name)}.")
    assert "pip install -e " in lines[0] and f"[{name}]" in lines[0]


@pytest.mark.parametrize("name, why", [("numpy", "the numpy engine computes in float32 only"),
                                       ("onnxruntime", "computes these layers in float32 "
                                                       "only")])
def test_bf16_where_the_runtime_has_none_is_an_error_saying_why(name, why, monkeypatch):
    monkeypatch.setattr(runtimes, "_installed", lambda n: True)
    with pytest.raises(ConfigError, match=f"--precision bf16 is not available on --runtime "
                                          f"{name}: .*{why}"):
        runtimes.resolve_runtime(name, "bf16")


def test_auto_takes_the_fastest_runtime_measured_here(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "_installed", lambda n: True)
    monkeypatch.setattr(runtimes, "_precisions", lambda n: ("f32",))
    bench = tmp_path / "bench.json"
    assert runtimes.resolve_runtime("auto", bench_file=bench) == "openvino"   # issue 18's order
    bench.write_text(json.dumps({"runtimes": {"images_per_s": {
        "numpy": {"f32": 90.0}, "openvino": {"f32": 200.0}, "onnxruntime": {"f32": 300.0}}}}))
    assert runtimes.resolve_runtime("auto", bench_file=bench) == "onnxruntime"


def test_an_unusable_model_on_auto_runs_on_the_next_runtime(fresh_trust, monkeypatch):
    """A runtime that fails to compile a model (OpenVINO has refused legitimate graphs)
    gives way under auto; asked for by name, it is a one-line error naming it."""
    class Broken:
        name = module = "onnxruntime"
        batch_size = 32
        precisions = staticmethod(lambda: ("f32",))

        @staticmethod
        def compile(onnx_bytes, precision):
            raise RuntimeError("Exception from node.cpp:823:\n[CPU] could not append a post-op")

    pytest.importorskip("onnx")
    monkeypatch.setitem(runtimes.BACKENDS, "onnxruntime", Broken)
    monkeypatch.setitem(runtimes.BACKENDS, "openvino", Broken)
    monkeypatch.setattr(runtimes, "_installed", lambda n: True)
    assert runtimes.load_runtime(stand_in_backbone(), "auto").name == "numpy"
    with pytest.raises(ConfigError, match=r"--runtime onnxruntime cannot run this model "
                                          r"\(RuntimeError: \[CPU\] could not append"):
        runtimes.load_runtime(stand_in_backbone(), "onnxruntime")


def test_bf16_features_never_share_cache_entries_with_f32():
    model = stand_in_backbone()
    f32 = cache_namespace(model, RECIPE)
    assert cache_namespace(model, RECIPE, precision="f32") == f32     # older caches still hit
    assert cache_namespace(model, RECIPE, precision="bf16") != f32
    assert cache_namespace(model, RECIPE, {"flip": True}, precision="bf16") != \
        cache_namespace(model, RECIPE, {"flip": True})


def test_runtimes_lists_each_with_how_to_install_it(without_extras, capsys):
    assert main(["runtimes"]) == 0
    out = capsys.readouterr().out
    for name in runtimes.BACKENDS:
        assert f"no: {runtimes.install_command(name)}" in out
    assert main(["runtimes", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(runtimes.RUNTIMES)
    assert rows[0]["installed"] and rows[0]["precisions"] == ["f32"]
    assert not any(r["installed"] for r in rows[1:])


@pytest.fixture
def trained_stand_in(tmp_path, monkeypatch):
    """A model.h5 trained by `retrain fit` with the stand-in backbone, and its data."""
    from stand_in import use_stand_in
    from PIL import Image
    use_stand_in(monkeypatch)
    data = tmp_path / "data"
    for label, channel in (("a", 0), ("b", 2)):
        (data / label).mkdir(parents=True)
        for i in range(8):
            pixels = np.full((10, 12, 3), 30 + 5 * i, np.uint8)
            pixels[..., channel] = 220 - 6 * i
            Image.fromarray(pixels).save(data / label / f"{i}.png")
    assert main(["fit", str(data), "--out", str(tmp_path / "run"), "--cache",
                 str(tmp_path / "cache"), "--epochs", "2", "-q"]) == 0
    return tmp_path / "run" / "model.h5", data


@needs_compiled
@pytest.mark.parametrize("name", COMPILED)
def test_a_fine_tuned_fit_on_a_compiled_runtime_is_the_numpy_fit(name, tmp_path, monkeypatch):
    """The bottom below the cut (plain and augmented views) runs on the runtime, the trained
    top on numpy: cached activations within PROBE_TOLERANCE of numpy's (two computation
    paths), the same test accuracy, the same prediction for every image, and the runtime
    recorded in metrics.json, the report and the model file."""
    from dataclasses import replace
    from retrain import backbones
    from retrain.engine import load_model
    from retrain.features import FeatureCache
    from retrain.pipeline import evaluate_model, run
    from test_fine_tune import options, stripes
    monkeypatch.setattr(backbones, "load_backbone", lambda name: lite_stand_in())
    data = stripes(tmp_path / "data", per_class=8)
    results = {}
    for runtime in ("numpy", name):
        settings = replace(options(tmp_path / runtime, fine_tune=2, augment=1),
                           runtime=runtime)
        results[runtime] = run(data, tmp_path / f"run-{runtime}", settings)
    ours, theirs = results["numpy"], results[name]
    assert theirs.metrics["runtime"]["runtime"] == name
    assert theirs.metrics["runtime"]["precision"] == "f32"
    model = load_model(theirs.model_path)
    assert model.metadata["provenance"]["runtime"] == theirs.metrics["runtime"]
    assert f"on <code>{name}</code> (f32)" in (tmp_path / f"run-{name}" / "report.html").read_text()
    assert theirs.metrics["test"]["accuracy"] == ours.metrics["test"]["accuracy"]
    folders = [sorted(p for p in (tmp_path / r).iterdir() if p.is_dir()) for r in
               ("numpy", name)]
    assert [f.name for f in folders[0]] == [f.name for f in folders[1]]   # the same entries
    assert len(folders[0]) == 2                                        # plain and views
    for mine, other in zip(*folders):
        a, b = FeatureCache(mine.parent, mine.name), FeatureCache(other.parent, other.name)
        keys = sorted(a._where)
        assert keys == sorted(b._where) and keys
        expected, got = a.get(keys), b.get(keys)
        scale = max(1.0, float(np.abs(expected).max()))
        # views are stored float16: one rounding step of float16 on top
        np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32),
                                   rtol=np.finfo(expected.dtype).eps if expected.dtype ==
                                   np.float16 else 0,
                                   atol=runtimes.PROBE_TOLERANCE["f32"] * scale)
        assert (got != expected).any()             # computed by the runtime, not by numpy
    for split in ("train", "val", "test"):
        got = evaluate_model(model, data, split, runtime=name)
        want = evaluate_model(load_model(ours.model_path), data, split, runtime="numpy")
        assert [m["path"] for m in got["misclassified"]] == \
            [m["path"] for m in want["misclassified"]]
        assert got["confusion_matrix"] == want["confusion_matrix"]


BF16 = [n for n in COMPILED if "bf16" in runtimes._precisions(n)]


@pytest.mark.skipif(not BF16, reason="no installed runtime has bf16 on this CPU")
def test_bf16_features_are_cached_apart_and_recorded(tmp_path, monkeypatch):
    from retrain import backbones
    from retrain.pipeline import RunOptions, run
    from test_fine_tune import stripes
    monkeypatch.setattr(backbones, "load_backbone", lambda name: lite_stand_in())
    data = stripes(tmp_path / "data", per_class=6)
    common = dict(cache_dir=tmp_path / "cache", progress=False, runtime="auto")
    bf16 = run(data, tmp_path / "bf16", RunOptions(precision="bf16", **common))
    assert bf16.metrics["runtime"]["precision"] == "bf16"
    assert bf16.metrics["runtime"]["runtime"] in BF16
    f32 = run(data, tmp_path / "f32", RunOptions(precision="f32", **common))
    assert f32.metrics["cache"]["misses"] == 18 and f32.metrics["runtime"]["precision"] == "f32"
    again = run(data, tmp_path / "again", RunOptions(precision="bf16", **common))
    assert again.metrics["cache"]["hits"] == 18


@pytest.mark.skipif(not BF16, reason="no installed runtime has bf16 on this CPU")
def test_a_bf16_runtime_that_disagrees_is_refused_too(fresh_trust, monkeypatch):
    """bf16 is judged by its RMS difference (0.06 for ImageNet's Lite0, 0.18 for this
    random one): outputs shifted by their own RMS are refused."""
    name = BF16[0]
    perturbed = _Perturbed(runtimes.BACKENDS[name])
    monkeypatch.setitem(runtimes.BACKENDS, name, perturbed)
    model = lite_stand_in()
    assert runtimes.load_runtime(model, name, "bf16").precision == "bf16"
    runtimes._TRUSTED.clear()
    perturbed.offset = float(np.sqrt(np.mean(np.square(model.predict(_inputs(model))))))
    with pytest.raises(ConfigError, match=f"The {name} runtime disagrees .*bf16: RMS"):
        runtimes.load_runtime(model, name, "bf16")


def test_classify_and_evaluate_import_their_runtime_while_the_model_file_loads(
        trained_stand_in, monkeypatch, capsys):
    """The runtime's package (0.1 s for OpenVINO) imports while the model file is read."""
    from retrain import cli
    model, data = trained_stand_in
    events = []
    monkeypatch.setattr(cli, "import_ahead", lambda *a: events.append(("import", a)))
    read = cli.load_model_file
    monkeypatch.setattr(cli, "load_model_file", lambda path: (events.append("read"),
                                                              read(path))[1])
    for command in (["classify", str(model), str(data)], ["evaluate", str(model), str(data)]):
        events.clear()
        assert main(command + ["--runtime", "numpy", "--precision", "f32"]) == 0
        assert events == [("import", ("numpy", "f32")), "read"]
    capsys.readouterr()


def _start(weights, name="openvino"):
    """runtimes.start_runtime for stand_in_backbone, its 'weights' the file `weights`, once
    what earlier loads keep is written (runtime_store.write_compiled_soon)."""
    from retrain.runtime_store import settle
    settle()
    return runtimes.start_runtime(("backbone stand_in", "cut 0"), [weights], (8, 8, 3), name)


def _agrees(runner, model):
    x = _inputs(model)
    expected = model.predict(x)
    atol = runtimes.PROBE_TOLERANCE["f32"] * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(runner.predict(x), expected, rtol=0, atol=atol)


@pytest.mark.skipif("openvino" not in COMPILED, reason="needs the openvino extra")
def test_a_runtime_started_before_its_model_is_built_restores_what_the_last_run_kept(
        fresh_trust, tmp_path, monkeypatch):
    """A fit's runtime starts loading before the backbone is built (start_runtime): the
    first run compiles the model once given and keeps it (runtime_store), under its ONNX
    bytes and under its sources (pointing at it); the next run restores it without
    exporting the model, and is checked against numpy all the same. New weights (another
    file content) are another key: compiled again."""
    from retrain import onnx_export
    from retrain.runtime_store import compiled_cache_dir, settle
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"seed 0")
    model = stand_in_backbone()
    _agrees(_start(weights).provide(model).wait(), model)
    settle()
    assert len(list(compiled_cache_dir().iterdir())) == 2     # the model, the pointer

    monkeypatch.setattr(onnx_export, "onnx_bytes", lambda *a: pytest.fail("exported"))
    checked = []
    monkeypatch.setattr(runtimes, "_check_against_numpy",
                        lambda *a, check=runtimes._check_against_numpy: checked.append(1)
                        or check(*a))
    runner = _start(weights).provide(model)
    _agrees(runner.wait(), model)
    assert checked == [1]

    weights.write_bytes(b"other weights")           # another key: exported, compiled
    with pytest.raises(pytest.fail.Exception, match="exported"):
        _start(weights).provide(model).wait()


@pytest.mark.skipif("openvino" not in COMPILED, reason="needs the openvino extra")
def test_a_kept_runtime_that_disagrees_with_numpy_is_compiled_afresh(fresh_trust, tmp_path,
                                                                    monkeypatch):
    """The sources' key cannot see everything a model is (a stand-in, code the key's
    digest misses): where what it restores disagrees with numpy, it is deleted and the
    model compiled afresh, checked, and kept for the next run; no error for the user."""
    from retrain.runtime_store import compiled_cache_dir, settle
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"the same file")
    _start(weights).provide(stand_in_backbone(seed=1)).wait()       # kept: seed 1's model
    model = stand_in_backbone(seed=0)                               # the same sources
    _agrees(_start(weights).provide(model).wait(), model)           # seed 1's deleted
    settle()
    assert len(list(compiled_cache_dir().iterdir())) == 1            # seed 0's: by its ONNX
    _agrees(_start(weights).provide(model).wait(), model)            # pointed at anew
    from retrain import onnx_export
    monkeypatch.setattr(onnx_export, "onnx_bytes", lambda *a: pytest.fail("exported"))
    _agrees(_start(weights).provide(model).wait(), model)            # restored


@pytest.mark.skipif("openvino" not in COMPILED, reason="needs the openvino extra")
def test_a_damaged_kept_runtime_is_compiled_again(fresh_trust, tmp_path, monkeypatch):
    """A kept file whose bytes changed (a flipped byte, a truncation) reads as missing:
    its sha256 is in the file (runtime_store); the runtime is compiled again."""
    from retrain import runtime_store
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    runtime_store.write_compiled("ab" * 32, b"compiled bytes")
    path = runtime_store.compiled_cache_dir() / f"{'ab' * 32}.compiled"
    assert runtime_store.read_compiled("ab" * 32) == b"compiled bytes"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert runtime_store.read_compiled("ab" * 32) is None
    path.write_bytes(bytes(data[:20]))
    assert runtime_store.read_compiled("ab" * 32) is None

    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"w")
    model = stand_in_backbone()
    _start(weights).provide(model).wait()
    runtime_store.settle()
    for kept in runtime_store.compiled_cache_dir().glob("*.compiled"):
        kept.write_bytes(kept.read_bytes()[:-1] + b"!")
    _agrees(_start(weights).provide(model).wait(), model)


@pytest.mark.skipif("openvino" not in COMPILED, reason="needs the openvino extra")
def test_a_model_never_built_ends_the_loading_thread(tmp_path, monkeypatch):
    """A fit whose backbone cannot be built (its weights missing) says so, and the thread
    started before the build ends: nothing waits forever for a model (the interpreter
    joins the thread at exit), and numpy's OpenBLAS gets its threads back."""
    from retrain import backbones
    from retrain.errors import PretrainedMissingError
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(backbones, "pretrained_dir", lambda: tmp_path / "none")
    counts, blas_threads = _blas_thread_counts()
    before = set(threading.enumerate())
    data = _two_class_folder(tmp_path / "data")
    with pytest.raises(PretrainedMissingError):
        from retrain.pipeline import RunOptions, run
        run(data, tmp_path / "run", RunOptions(runtime="openvino", progress=False))
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=10)
        assert not thread.is_alive(), thread.name
    assert [get() for get in counts] == blas_threads        # numpy's threads given back


@needs_compiled
@pytest.mark.parametrize("name", COMPILED)
def test_a_runtime_still_compiling_when_its_model_is_given_is_checked_all_the_same(
        name, fresh_trust, tmp_path, monkeypatch):
    """Given its model while it compiles, start_runtime's loading has numpy's outputs on the
    probe computed meanwhile, in the caller's thread; the first use compares them with the
    runtime's: one that disagrees is refused, one within float32 rounding runs."""
    from retrain.runtime_store import settle
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"w")
    model, real = stand_in_backbone(), runtimes.BACKENDS[name]
    predict = model.predict
    for offset, refused in ((5e-4, True), (2e-5, False)):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"xdg-{offset}"))
        held = _Held(real)
        held.offset = offset
        monkeypatch.setitem(runtimes.BACKENDS, name, held)
        calls = []
        monkeypatch.setattr(model, "predict", lambda x, *a, **k: calls.append(len(x)) or
                            predict(x, *a, **k), raising=False)
        runner = _start(weights, name).provide(model)
        assert calls == [2] and not held.go.is_set()       # the probe's, while compiling
        held.go.set()
        if refused:
            with pytest.raises(ConfigError, match=f"The {name} runtime disagrees"):
                runner.wait()
        else:
            _agrees(runner.wait(), model)
        assert calls[:1] == [2] and 2 not in calls[1:]        # not computed again
        settle()
