"""`--dask`: feature extraction, classification and evaluation on a Dask cluster give what an
in-process run gives, survive a killed worker, stop cleanly on Ctrl-C, and fail in one line.

One LocalCluster of 2 worker processes serves the whole module (starting one costs seconds).
The client ships its model to the workers, so the stand-in backbones of stand_in.py run
there too: monkeypatching load_backbone in the client is enough."""
import functools
import gc
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time

import h5py
import numpy as np
import pytest

pytest.importorskip("distributed")     # `make install` installs it; a bare pip may not

import retrain                          # noqa: E402
import retrain.engine                   # noqa: E402
from retrain import cluster as cluster_module     # noqa: E402
from retrain.cli import main            # noqa: E402
from retrain.distribution import pip_install   # noqa: E402
from retrain.engine import load_model   # noqa: E402
from retrain.errors import Interrupted  # noqa: E402
from retrain.features import FeatureCache, extract_features   # noqa: E402
from retrain.fit import HeadOptions     # noqa: E402
from retrain.pipeline import RunOptions, run   # noqa: E402
from retrain import runtimes   # noqa: E402
from stand_in import LITE_RECIPE, lite_stand_in, use_lite_stand_in, use_stand_in  # noqa: E402


@pytest.fixture(autouse=True)
def collect_abandoned_clients():
    """A Client whose making was given up (cluster._client: a silent listener) is garbage
    some time later; collected inside another Client's start, its __del__ deadlocked
    Dask's LoopRunner (seen once: the suite hung at the next Client(...)). Here they are
    collected between tests, in this thread, once their connecting threads have ended."""
    yield
    for thread in threading.enumerate():
        if thread.name == "retrain-dask-connect":
            thread.join(10)
    gc.collect()


@pytest.fixture(scope="module")
def shared_cluster():
    with cluster_module.connect("local:2") as connected:
        yield connected


@pytest.fixture
def cluster(shared_cluster):
    """The module's cluster, with both workers up (a test may have killed one)."""
    shared_cluster.client.wait_for_workers(2, timeout=60)
    return shared_cluster


def address(cluster):
    return cluster.client.scheduler.address


def photos(image_tree, count=120, broken=False):
    """`count` generated 40x32 PNGs in two classes (+ one undecodable file)."""
    root = image_tree({"a": count // 2, "b": count - count // 2}, size=(40, 32))
    if broken:
        (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def cached_keys(cache_dir):
    """Every key in every shard under `cache_dir`, duplicates included."""
    keys = []
    for shard in sorted(cache_dir.rglob("shard-*.h5")):
        with h5py.File(shard, "r") as f:
            keys += [key.decode() for key in f["keys"][...]]
    return keys


@functools.lru_cache(maxsize=1)
def backbone():
    """The real EfficientNet-Lite0 graph (32x32, seeded weights): one object, shipped to the
    workers once per test that uses it (a shipment is ~14 MB)."""
    return lite_stand_in()


def extract(paths, cache_dir, cluster=None):
    return extract_features(paths, backbone(), LITE_RECIPE,
                            FeatureCache(cache_dir, "ns"), batch_size=4, progress=False,
                            cluster=cluster)


@pytest.mark.skipif(not [n for n in runtimes.BACKENDS if runtimes._installed(n)],
                    reason="no compiled runtime installed")
def test_workers_run_the_clients_runtime(cluster, image_tree, tmp_path, monkeypatch):
    """A Runtime given to the cluster runs on the workers too (they have the extra here):
    its features, not numpy's, to the last digit but for the thread count (see below)."""
    name = next(n for n in runtimes.BACKENDS if runtimes._installed(n))
    paths = sorted(photos(image_tree, count=16).rglob("*.png"))
    runner = runtimes.load_runtime(backbone(), name)
    here = extract_features(paths, runner, LITE_RECIPE, FeatureCache(tmp_path / "here", "ns"),
                            batch_size=4, progress=False)
    there = extract_features(paths, runner, LITE_RECIPE, FeatureCache(tmp_path / "there", "ns"),
                             batch_size=4, progress=False, cluster=cluster)
    numpy = extract(paths, tmp_path / "numpy")
    # a one-thread worker and the two-thread client may pick different kernels: rounding
    np.testing.assert_allclose(there.features, here.features, rtol=0, atol=2e-5)
    assert np.abs(there.features - numpy.features).max() > 0     # not numpy's result
    assert all(names == [name] for names in cluster.client.run(
        lambda: sorted({key[1] for key in cluster_module._RUNNERS})).values())


def test_features_are_those_of_an_in_process_run(cluster, image_tree, tmp_path, monkeypatch):
    paths = sorted(photos(image_tree, count=40, broken=True).rglob("*.png"))
    here = extract(paths, tmp_path / "here")
    sent = []
    features = cluster_module.Cluster.features
    monkeypatch.setattr(cluster_module.Cluster, "features",
                        lambda self, items, *rest: sent.append(len(items))
                        or features(self, items, *rest))
    there = extract(paths, tmp_path / "there", cluster)
    assert there.keys == here.keys and there.kept == here.kept and there.misses == 40
    assert there.skipped == here.skipped and "broken.png" in there.skipped[0][0]
    np.testing.assert_allclose(there.features, here.features, rtol=0, atol=1e-6)
    assert np.abs(there.features).max() > 0.1                   # not all zeros
    # Only misses go to the cluster (the undecodable file is tried again, as in process); a
    # second run, with or without it, is all hits.
    again = extract(paths, tmp_path / "there", cluster)
    assert (again.hits, again.misses) == (40, 0) and sent == [41, 1]
    assert extract(paths, tmp_path / "there").hits == 40
    good = [path for path in paths if path.name != "broken.png"]
    assert extract(good[:20], tmp_path / "half").misses == 20
    shutil.copytree(tmp_path / "half", tmp_path / "half-here")
    rest = extract(paths, tmp_path / "half", cluster)
    assert (rest.hits, rest.misses) == (20, 20) and sent[-1] == 21
    np.testing.assert_allclose(rest.features, extract(paths, tmp_path / "half-here").features,
                               rtol=0, atol=1e-6)


def test_each_worker_loads_the_model_once(cluster, image_tree, tmp_path):
    """The model is loaded when shipped, then kept: every task of every later run on the
    same cluster uses that one object (its id on each worker does not change)."""
    paths = sorted(photos(image_tree, count=40).rglob("*.png"))
    digest = cluster.ship(backbone())

    def loaded():
        return cluster.client.run(lambda: id(cluster_module._MODELS[digest][0]))

    before = loaded()
    assert len(before) == 2
    extract(paths, tmp_path / "one", cluster)
    extract(paths, tmp_path / "two", cluster)
    assert loaded() == before


def test_fit_over_the_cluster_gives_the_same_run(cluster, image_tree, tmp_path, monkeypatch,
                                                 capsys):
    data = photos(image_tree, count=40, broken=True)
    use_stand_in(monkeypatch)
    runs = {}
    for name, extra in (("here", []), ("there", ["--dask", address(cluster)])):
        argv = ["fit", str(data), "--out", str(tmp_path / name), "--cache",
                str(tmp_path / f"cache-{name}"), "--epochs", "8", "-q"] + extra
        assert main(argv) == 0, capsys.readouterr().err
        runs[name] = tmp_path / name
    for name in ("metrics.json", "history.json", "split.json", "skipped.tsv", "labels.txt"):
        assert (runs["here"] / name).read_text() == (runs["there"] / name).read_text(), name
    here, there = (load_model(runs[n] / "model.h5") for n in ("here", "there"))
    for a, b in zip(here.get_weights(), there.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for model in (here, there):
        model.metadata["provenance"].pop("created")
    assert here.metadata == there.metadata


def test_fine_tuning_and_augmented_views_over_the_cluster(cluster, image_tree, tmp_path,
                                                          monkeypatch):
    """The cut activations and the augmented views (float16) are computed by the workers."""
    data = photos(image_tree, count=24)
    use_lite_stand_in(monkeypatch)
    sent, features = [], cluster_module.Cluster.features
    monkeypatch.setattr(cluster_module.Cluster, "features",
                        lambda self, items, model, recipe, batch_size, dtype:
                        sent.append((len(items), np.dtype(dtype).name))
                        or features(self, items, model, recipe, batch_size, dtype))
    results = {}
    for name, where in (("here", None), ("there", cluster)):
        options = RunOptions(cache_dir=tmp_path / f"cache-{name}", progress=False,
                             extract_batch_size=4, cluster=where,
                             head=HeadOptions(epochs=2, fine_tune=1, augment=2))
        results[name] = run(data, tmp_path / name, options)
    here, there = results["here"].metrics, results["there"].metrics
    assert there["cache"]["view_misses"] == 2 * there["train"]["count"] > 0
    assert sent == [(24, "float32"), (2 * there["train"]["count"], "float16")]
    assert there == here
    assert results["there"].history == results["here"].history


def test_a_worker_killed_mid_run(cluster, image_tree, tmp_path, monkeypatch):
    """SIGKILL one worker while it runs a task: Dask runs the task again elsewhere, the run
    completes, every image is cached exactly once, and a rerun has 0 misses."""
    paths = sorted(photos(image_tree).rglob("*.png"))
    client, killed = cluster.client, {}
    results = cluster_module._Run.__iter__

    def killing_a_worker(run):
        for number, result in enumerate(results(run)):
            if number == 0:
                busy = {w: keys for w, keys in client.processing().items() if keys}
                assert busy, "no task left running to interrupt: make the tasks longer"
                victim = sorted(busy)[0]
                pid = client.run(os.getpid, workers=[victim])[victim]
                os.kill(pid, signal.SIGKILL)
                killed.update(worker=victim, pid=pid, tasks=busy[victim])
            yield result

    monkeypatch.setattr(cluster_module._Run, "__iter__", killing_a_worker)
    found = extract(paths, tmp_path / "cache", cluster)
    assert killed["tasks"] and found.misses == len(paths) == 120
    assert killed["pid"] not in client.run(os.getpid).values()
    keys = cached_keys(tmp_path / "cache")
    assert len(keys) == len(set(keys)) == 120 and set(keys) == set(found.keys)
    np.testing.assert_allclose(found.features, extract(paths, tmp_path / "here").features,
                               rtol=0, atol=1e-6)
    monkeypatch.undo()
    again = extract(paths, tmp_path / "cache", cluster)
    assert (again.hits, again.misses) == (120, 0)


def test_ctrl_c_cancels_pending_tasks_and_keeps_finished_chunks(cluster, image_tree,
                                                                tmp_path, monkeypatch):
    # 480 images: 8 tasks of 60, so that the tasks after the third do not all finish in
    # the moment between the third finishing and Ctrl-C (with 120, tasks of 16 tiny images
    # did, once in 4 runs on a quiet machine, and nothing was left to cancel)
    paths = sorted(photos(image_tree, count=480).rglob("*.png"))
    client, seen = cluster.client, {}
    as_completed = cluster_module.as_completed

    def ctrl_c_after_the_first(futures):
        for future in as_completed(futures):
            yield future
            deadline = time.monotonic() + 30
            while sum(f.status == "finished" for f in futures) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            seen["finished"] = sum(f.result()[0] for f in futures if f.status == "finished")
            raise KeyboardInterrupt

    monkeypatch.setattr(cluster_module, "as_completed", ctrl_c_after_the_first)
    with pytest.raises(Interrupted) as stop:
        extract(paths, tmp_path / "cache", cluster)
    keys = cached_keys(tmp_path / "cache")
    # the finished chunks, also those not yet taken, are cached; the others were cancelled
    assert len(keys) == len(set(keys)) == stop.value.kept >= seen["finished"]
    assert stop.value.kept < stop.value.total == 480
    left = client.run_on_scheduler(lambda dask_scheduler: [
        key for key, task in dask_scheduler.tasks.items()
        if str(key).startswith("retrain-features") and task.state != "memory"])
    assert left == []                       # none waiting, queued or running: cancelled
    monkeypatch.undo()
    again = extract(paths, tmp_path / "cache", cluster)
    assert (again.hits, again.misses) == (len(keys), 480 - len(keys))


def test_a_worker_refuses_a_file_that_is_not_the_one_hashed(image_tree, tmp_path):
    """The worker side, run here: a task names each file by the client's content hash, and
    a file that differs on the worker, or that it cannot read, is reported, not computed."""
    paths = sorted(photos(image_tree, count=4).rglob("*.png"))
    keys = [cluster_module.sha256_file(path) for path in paths]
    backbone().save(tmp_path / "model.h5")
    cluster_module._load("digest", (tmp_path / "model.h5").read_bytes())
    items = [(keys[0], str(paths[0]), None), (keys[2], str(paths[1]), None),
             ("0" * 64, str(tmp_path / "gone.png"), None), (keys[3], str(paths[3]), None)]
    try:
        count, failed, kept, block = cluster_module._features_task("digest", LITE_RECIPE,
                                                                   items, 4, "float32")
    finally:
        cluster_module._MODELS.pop("digest")
    assert count == 4 and kept == [keys[0], keys[3]] and block.shape == (2, 1280)
    assert failed[keys[2]].startswith("the file differs on worker")
    assert failed["0" * 64].startswith("cannot read the file on worker")
    here = extract([paths[0], paths[3]], tmp_path / "cache")
    np.testing.assert_array_equal(block, here.features)


@pytest.fixture
def trained(image_tree, tmp_path, monkeypatch):
    """A model exported by `retrain fit` (stand-in backbone) and its data folder."""
    data = photos(image_tree, count=30, broken=True)
    use_stand_in(monkeypatch)
    result = run(data, tmp_path / "run", RunOptions(cache_dir=tmp_path / "cache",
                                                    progress=False,
                                                    head=HeadOptions(epochs=5)))
    return result.model_path, data


@pytest.mark.parametrize("argv", [["classify", "{model}", "{data}/b", "{data}/a",
                                   "--format", "json", "--batch-size", "4"],
                                  ["evaluate", "{model}", "{data}", "--split", "all",
                                   "--json", "--batch-size", "4"]],
                         ids=["classify", "evaluate"])
def test_classify_and_evaluate_print_the_same_in_the_same_order(argv, cluster, trained,
                                                                capsys):
    """On numpy, to the last digit. (OpenVINO picks its kernels by the threads it has, so
    a one-thread worker and a two-thread client differ in the 8th digit.)"""
    model, data = trained
    argv += ["--runtime", "numpy"]
    argv = [word.format(model=model, data=data) for word in argv]
    assert main(argv) == 0
    here = capsys.readouterr()
    assert main(argv + ["--dask", address(cluster)]) == 0
    there = capsys.readouterr()
    assert there.out == here.out and there.err == here.err
    there = there.out
    if argv[0] == "classify":
        rows = [json.loads(line) for line in there.splitlines()]
        assert len(rows) == 31 and sum("error" in row for row in rows) == 1
        assert [row["path"] for row in rows[:15]] == sorted(str(p) for p in
                                                            (data / "b").iterdir())


def test_workers_that_cannot_load_the_model_are_one_line(cluster, trained, monkeypatch,
                                                        capsys):
    """As when a worker lacks retrain: the plugin fails there, and the error says so."""
    model, data = trained

    def save_garbage(self, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"not an HDF5 file")

    monkeypatch.setattr(retrain.engine.Model, "save", save_garbage)
    code = main(["classify", str(model), str(data), "--dask", address(cluster)])
    err = capsys.readouterr().err.strip().split("\n")
    assert code == 2 and len(err) == 2, err
    assert err[0].startswith("error: The Dask workers could not load the model (ModelFileError")
    assert err[1].startswith(f"hint: Install this retrain ({retrain.__version__}), with its")


def test_an_unreachable_scheduler_is_one_line(monkeypatch, capsys, tmp_path):
    with socket.socket() as probe:          # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", 1)
    code = main(["classify", str(tmp_path), str(tmp_path), "--dask", f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().split("\n")
    assert code == 2 and len(err) == 2, err
    assert err[0].startswith(f"error: Cannot reach the Dask scheduler at tcp://127.0.0.1:{port}")
    assert err[1].startswith("hint: Start one with `dask scheduler`")


def test_a_scheduler_without_workers_is_one_line(monkeypatch, capsys, tmp_path):
    from distributed import LocalCluster

    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", 1)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        code = main(["classify", str(tmp_path), str(tmp_path), "--dask",
                     empty.scheduler_address])
    err = capsys.readouterr().err.strip().split("\n")
    assert code == 2 and len(err) == 2, err
    assert err[0] == (f"error: The Dask scheduler at {empty.scheduler_address} has no workers "
                      "(none joined within 1 s).")
    assert err[1].startswith(f"hint: Start workers with `dask worker {empty.scheduler_address}`")


@pytest.mark.parametrize("value", ["local:0", "local:two", "local:", ""])
def test_a_bad_local_cluster_size_is_a_usage_error(value, capsys, tmp_path):
    assert main(["fit", str(tmp_path), "--out", str(tmp_path / "r"), "--dask", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: retrain fit: --dask ") and "Traceback" not in err


def test_without_dask_the_error_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)     # import distributed fails
    monkeypatch.delitem(sys.modules, "retrain.cluster")
    monkeypatch.delattr(retrain, "cluster")
    code = main(["classify", str(tmp_path), str(tmp_path), "--dask", "local:2"])
    err = capsys.readouterr().err.strip().split("\n")
    assert code == 2 and len(err) == 2, err
    assert "--dask needs Dask's distributed scheduler, which is not installed" in err[0]
    assert err[1] == f"hint: Install it with: {pip_install('dask')}"


# -- issue 21: a port that is no scheduler, a scheduler that dies ------------------------
@pytest.fixture
def listener():
    """A TCP port where something that is no Dask scheduler listens: `silent` accepts and
    says nothing (as a dashboard waits for its HTTP request); `garbage` answers a frame
    header that declares 3.5 EiB (Dask tried to allocate them: MemoryError)."""
    import threading

    servers, stop = [], threading.Event()

    def start(kind):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(0.2)
        servers.append(server)

        def serve():
            while not stop.is_set():
                try:
                    connection, _ = server.accept()
                except OSError:
                    continue
                if kind == "garbage":
                    connection.sendall(b"\x00" * 7 + b"\x31" + b"\xff" * 56)
                servers.append(connection)

        threading.Thread(target=serve, daemon=True).start()
        return f"tcp://127.0.0.1:{server.getsockname()[1]}"

    yield start
    stop.set()
    for server in servers:
        server.close()


@pytest.mark.parametrize("kind", ["silent", "garbage"])
def test_a_port_that_is_no_scheduler_is_one_line_within_the_timeout(listener, monkeypatch,
                                                                    capsys, tmp_path, kind):
    """`--dask` at a dashboard's port or any silent listener waited for ever, where the help
    promises an error within 10 s; garbage gave "unexpected MemoryError: Unable to allocate
    3.07 EiB"."""
    import threading

    at = listener(kind)
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", 2)
    started, done = time.monotonic(), []
    command = threading.Thread(daemon=True, target=lambda: done.append(main(
        ["classify", str(tmp_path), str(tmp_path), "--dask", at])))
    command.start()
    command.join(2 + 30)                   # a hang fails the test instead of hanging it
    seconds = time.monotonic() - started
    assert done, f"no answer after {seconds:.0f} s"
    err = capsys.readouterr().err.strip().split("\n")
    assert done[0] == 2 and len(err) == 2, err
    assert err[0].startswith(("error: No Dask scheduler answered at " + at + " within 2 s",
                              "error: Cannot reach the Dask scheduler at " + at)), err
    assert "unexpected" not in err[0] and err[1].startswith("hint: ")
    assert seconds < 2 + 5, seconds                 # the timeout, and no more than a margin


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_scheduler_killed_mid_run_keeps_finished_chunks_and_is_one_line(
        image_tree, tmp_path, monkeypatch, capfd, caplog):
    """A scheduler killed mid-run gave "unexpected FutureCancelledError ... a bug" and two
    tracebacks, and the features already computed were not cached."""
    import subprocess

    port = free_port()
    at = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", at,
                               "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from distributed import Client

        with Client(at, timeout=60) as probe:   # both started (a loaded machine is slow)
            probe.wait_for_workers(1, timeout=60)
        use_stand_in(monkeypatch)
        monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", 3)   # also the reconnection
        monkeypatch.setattr(cluster_module, "TASK_IMAGES", 32)
        results, taken = cluster_module._Run.__iter__, []

        def killing_the_scheduler(run):
            for result in results(run):
                taken.append(result[0])
                if len(taken) == 2:
                    scheduler.kill()
                    scheduler.wait()
                yield result

        monkeypatch.setattr(cluster_module._Run, "__iter__", killing_the_scheduler)
        data = photos(image_tree, count=400)
        capfd.readouterr()
        code = main(["fit", str(data), "--out", str(tmp_path / "run"), "--cache",
                     str(tmp_path / "cache"), "-q", "--dask", at])
        err = capfd.readouterr().err.strip().split("\n")
    finally:
        for process in (worker, scheduler):
            process.kill()
            process.wait()
    assert code == 2 and len(err) == 2, err
    assert [record.getMessage() for record in caplog.records
            if record.name.startswith("distributed")] == []      # no log lines, no traceback
    assert err[0].startswith("error: Lost the Dask cluster during the run") and \
        err[1].startswith("hint: Check the scheduler; run the same command again"), err
    keys = cached_keys(tmp_path / "cache")
    assert len(keys) == len(set(keys)) >= sum(taken[:2]) > 0
