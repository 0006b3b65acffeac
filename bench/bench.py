"""`make bench`: how fast retrain is on this machine, and how much memory it needs.

Measured, each in a fresh interpreter so that its peak resident memory (ru_maxrss from
os.wait4, i.e. of that child alone) belongs to it and to nothing measured before it:

  backbone  each registered backbone's pooled features at its own input size (224, 240,
            260), `model.predict(x, batch_size=B)` with B the engine's default inference
            batch size, and with batch size 1: images/s as the median of several timed
            calls after one warm-up call (and the best call's, less sensitive to other work
            on a shared machine). `retrain backbones` shows the images/s at B.
  runtimes  each installed runtime (runtimes.py) in each precision it has on this CPU: the
            default backbone's features at batch B, images/s (`retrain runtimes` shows them,
            `--runtime auto` takes the fastest).
  decode    retrain.images.decode_image + retrain.preprocess (crop, resize, normalise) on
            real files: the Fashion-MNIST sample (28x28 PNG) and the four fixture photos
            (300x451 .. 512x512 PNG/JPEG), one thread; and the pipeline's own two-thread
            reader (preprocess.iter_batches) on the sample.
  fit       `retrain fit data/fashion-mnist-sample` end to end (interpreter start included):
            once with an empty feature cache (cold), then again with the filled one (warm);
            also the seconds of each pipeline stage, timed from the CLI's stage lines. Then
            once cold with each other backbone: its test accuracy, time and peak memory.
  extract   the feature extraction of a cold `retrain fit` on the sample (images / seconds of
            its "computing backbone features" stage, decoding included) against the
            backbone alone (as in "backbone", at batch B), measured before and after the fit
            in the same run; the ratio should be >= 0.9. The same with `--runtime openvino`
            against OpenVINO alone, where it is installed (issue 18: >= 0.85).
            `make bench-extract` runs it alone.
  finetune  `retrain fit --fine-tune N` (N = 1, 2, 3) on 1,000 generated images, 3 epochs:
            seconds per epoch (the fit stage over the epochs run) and peak memory; then
            --fine-tune 2 --augment 4 with a cold view cache and again warm (0 misses). With
            --scale also on 10,000 images (N=2, K=4, one epoch, cold: 10,000 plain and
            32,000 augmented cut activations; about 20 minutes on 2 cores): peak memory
            must stay under 2 GB.
  scale     (--scale; `make bench` passes it) `retrain fit` with a cold cache on datasets of
            --sizes images made on the fly from the sample; each copy of an image gets its
            own least-significant-bit noise, so every file has its own content hash and is a
            cache miss. Peak memory must not grow with the number of images (< 1 GB), and
            the time per image must stay about constant.
  dask      features of 2,000 generated images in process and on `--dask local:2`,
            images/s, the overhead of one Dask task, and a projection for 200,000 images
            on 1, 4 and 16 workers (bench_dask.py; --sections dask runs it alone).
  serve     `retrain serve` on the loopback: 16 clients x 100 requests of one photo against
            `retrain classify` on the same images (errors, same answers, p50/p99, images/s and
            the ratio), and 200 uploads at once against --max-queue 64 (503s, peak RSS)
            (bench_serve.py; --sections serve runs it alone).

Results go to bench.json (written atomically; sections measured by an earlier run and not
by this one are kept, each with its "measured_at") and to a table on stdout.
Benchmarks are noisy: run on an idle machine; each section records the load average at
its start.

    .venv/bin/python bench/bench.py [--quick] [--scale] [--sizes 1000,10000] [--sections ...]
                                    [--dask-images 2000]
                                    [--backbones efficientnet_lite0,...]
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench_serve        # beside this file: sys.path[0] when bench.py runs as a script

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "fashion-mnist-sample"
PHOTOS = ROOT / "tests" / "fixtures" / "photos"
BACKBONE = "efficientnet_lite0"       # the default backbone: decode, fit warm, scale
SECTIONS = ("backbone", "runtimes", "decode", "fit", "extract", "finetune", "dask", "serve",
            "scale")
EXTRACT_STAGE = "computing backbone features"     # the CLI's line for the features stage
FINE_TUNE_EPOCHS = 3                  # epochs of each finetune-section run on 1,000 images
RSS_LIMIT_BYTES = 1_000_000_000


# -- measurements, each run by `bench.py _child NAME JSON` in a fresh interpreter -----------
def default_batch_size():
    """The batch size the engine chooses when predict is given none."""
    from retrain.engine import DEFAULT_BATCH_SIZE
    return DEFAULT_BATCH_SIZE, "retrain.engine.DEFAULT_BATCH_SIZE"


def child_backbone(batch_size, images, repeats, backbone=BACKBONE, runtime="numpy",
                   precision="f32"):
    """Images/s of the frozen feature extractor `backbone` on `runtime` (runtimes.py) in
    `precision`: `images` real preprocessed images per timed call of predict(x, batch_size),
    one untimed warm-up call, then `repeats` calls."""
    from retrain.backbones import load_backbone
    from retrain.runtimes import load_runtime
    model = load_backbone(backbone)
    runner = load_runtime(model, runtime, precision)
    x = _sample_inputs(images, model.metadata["preprocessing"])
    runs = timed_calls(lambda: runner.predict(x, batch_size=batch_size), repeats)
    return {"batch_size": batch_size, "images_per_run": images, "runs_s": runs,
            "runtime": runtime, "precision": precision,
            "images_per_s": images / statistics.median(runs),
            "best_images_per_s": images / min(runs)}


def child_decode(sample_files, photo_repeats, runs):
    """Decode + preprocess throughput, one thread, on the sample and on the photos; and the
    pipeline's reader (two worker threads, batches of 32) on the sample."""
    # The recipe the converted weights file carries too; importing it spares loading the
    # backbone, whose weights would count in this child's peak memory.
    from retrain.backbones.efficientnet_lite import PREPROCESSING as recipe
    from retrain.preprocess import iter_batches
    sample = _sample_paths(sample_files)
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix in (".png", ".jpg"))
    results = {}
    for name, paths in (("fashion_mnist_png_28x28", sample), ("photos", photos * photo_repeats)):
        _serial_preprocess(paths, recipe)                                  # warm the page cache
        times = [_timed(_serial_preprocess, paths, recipe) for _ in range(runs)]
        results[name] = {"files": len(paths), "runs_s": times,
                         "images_per_s": len(paths) / statistics.median(times)}

    def pipeline():
        for _ in iter_batches(sample, recipe, batch_size=32, workers=2):
            pass
    times = [_timed(pipeline) for _ in range(runs)]
    results["fashion_mnist_iter_batches_2_workers"] = {
        "files": len(sample), "runs_s": times,
        "images_per_s": len(sample) / statistics.median(times)}
    return results


def child_reference(out):
    """Our pooled features for the fixture photos, with the preprocessed inputs, saved to
    `out` (.npz): bench_torch.py checks its PyTorch network against them."""
    import numpy as np
    from retrain.backbones import load_backbone
    from retrain.images import decode_image
    from retrain.preprocess import preprocess_batch
    model = load_backbone(BACKBONE)
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix in (".png", ".jpg"))
    x = preprocess_batch([decode_image(p) for p in photos], model.metadata["preprocessing"])
    features = model.predict(x, batch_size=len(x))
    np.savez(out, x=x, features=features, names=np.array([p.name for p in photos]))
    return {"images": len(x), "features_shape": list(features.shape)}


def child_machine():
    """Library versions and the BLAS numpy calls (seen from the project's venv)."""
    import numpy as np
    import PIL
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return {"python": platform.python_version(), "numpy": np.__version__,
            "pillow": PIL.__version__,
            "blas": f"{blas.get('name')} {blas.get('version')}",
            "blas_config": blas.get("openblas configuration", "")}


def _sample_paths(count):
    """`count` files of the sample, taken in turn from each class."""
    by_class = [sorted(d.iterdir()) for d in sorted(SAMPLE.iterdir()) if d.is_dir()]
    turns = [files[i] for i in range(max(map(len, by_class))) for files in by_class
             if i < len(files)]
    return turns[:count]


def _sample_inputs(count, recipe):
    from retrain.images import decode_image
    from retrain.preprocess import preprocess_batch
    return preprocess_batch([decode_image(p) for p in _sample_paths(count)], recipe)


def _serial_preprocess(paths, recipe, batch_size=32):
    from retrain.images import decode_image
    from retrain.preprocess import preprocess_batch
    for start in range(0, len(paths), batch_size):
        preprocess_batch([decode_image(p) for p in paths[start:start + batch_size]], recipe)


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def timed_calls(call, repeats, warmups=1):
    """Seconds of each of `repeats` calls of `call()`, after `warmups` untimed ones."""
    for _ in range(warmups):
        call()
    return [_timed(call) for _ in range(repeats)]


def child_dask(images):
    """The dask section: in process vs --dask local:2, and the scaling model (bench_dask.py)."""
    import bench_dask        # beside this file: sys.path[0] when bench.py runs as a script
    return bench_dask.child_dask(images, make_dataset)


CHILDREN = {"backbone": child_backbone, "decode": child_decode, "reference": child_reference,
            "machine": child_machine, "dask": child_dask}


def _child_main(argv):
    name, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    if name == "batch_size":
        batch_size, source = default_batch_size()
        result = {"batch_size": batch_size, "source": source}
    else:
        result = CHILDREN[name](**kwargs)
    print(json.dumps(result))
    return 0


# -- the parent: runs children, generates datasets, writes bench.json -----------------------
class ChildFailed(RuntimeError):
    pass


def run_child(argv, timed_stderr=False):
    """Run argv to completion -> (stdout text, wall seconds, peak RSS bytes of that child,
    [(seconds since start, line)] of its stderr if `timed_stderr`, else []).

    os.wait4 returns the child's own rusage, so each measurement gets its own peak."""
    lines = []
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, cwd=ROOT,
                                stderr=subprocess.PIPE if timed_stderr else None)
        if timed_stderr:
            reader = threading.Thread(target=_read_lines, args=(proc.stderr, start, lines))
            reader.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if timed_stderr:
            reader.join()
            proc.stderr.close()
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        errors = "\n".join(line for _, line in lines[-20:])
        raise ChildFailed(f"{' '.join(map(str, argv))} exited with {proc.returncode}:\n"
                          f"{text[-2000:]}{errors}")
    return text, wall, usage.ru_maxrss * 1024, lines     # Linux reports KiB


def _read_lines(stream, start, lines):
    """Collect (arrival time, line) from a pipe; tqdm ends its updates with \r, not \n."""
    pending = b""
    for chunk in iter(lambda: stream.read1(1 << 16), b""):
        arrived = time.perf_counter() - start
        parts = re.split(rb"[\r\n]", pending + chunk)
        pending = parts.pop()
        lines.extend((arrived, part.decode("utf-8", "replace")) for part in parts if part.strip())


def measure(name, python=sys.executable, **kwargs):
    """One CHILDREN measurement in a fresh interpreter; adds its peak RSS and wall time."""
    text, wall, rss, _ = run_child([str(python), str(Path(__file__).resolve()), "_child", name,
                                    json.dumps(kwargs)])
    result = json.loads(text.strip().splitlines()[-1])
    result.update(peak_rss_mb=rss / 1e6, child_wall_s=wall)
    return result


def run_fit(data, run_dir, cache_dir, python=sys.executable, backbone=BACKBONE, args=()):
    """`retrain fit` as a user runs it (with `args` added) -> wall seconds, peak RSS of that
    process, the seconds of each pipeline stage, the test accuracy, the cache counts and the
    training record of metrics.json. -q is not passed so that the CLI's stage lines
    ("[2/9] computing backbone features") can be timed as they arrive; its progress lines go
    to the pipe."""
    _, wall, rss, lines = run_child([str(python), "-m", "retrain", "fit", str(data), "--out",
                                     str(run_dir), "--cache", str(cache_dir),
                                     "--backbone", backbone, *args], timed_stderr=True)
    marks = [(t, m.group(1)) for t, line in lines
             if (m := re.fullmatch(r"\[\d+/\d+\] (.+)", line.strip()))]
    ends = [t for t, _ in marks[1:]] + [wall]
    stages = {"startup": marks[0][0] if marks else wall}
    stages.update((name, end - t) for (t, name), end in zip(marks, ends))
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    test = metrics["test"]
    return {"backbone": backbone, "args": list(args), "wall_s": wall, "peak_rss_mb": rss / 1e6,
            "stages_s": stages, "test_accuracy": test.get("accuracy"),
            "test_images": test.get("count"), "cache": metrics.get("cache"),
            "training": metrics.get("training")}


def make_dataset(count, out):
    """`count` distinct PNGs under out/<class>/, copies of the sample taken in turn from each
    class. Copy k of an image has its own least-significant-bit noise (seeded by k and the
    image), so no two files share content: every one is a feature-cache miss."""
    import numpy as np
    from PIL import Image
    sources = _sample_paths(sum(1 for _ in SAMPLE.glob("*/*.png")))
    for j in range(count):
        source = sources[j % len(sources)]
        copy = j // len(sources)
        pixels = np.asarray(Image.open(source))
        noise = np.random.default_rng([copy, j % len(sources)]).integers(0, 2, pixels.shape)
        folder = out / source.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels ^ noise.astype(np.uint8)).save(
            folder / f"{source.stem}_{copy:03d}.png")
    return out


def machine_info(python=sys.executable):
    """CPU, cores, memory, load and library versions (numpy/BLAS as seen by `python`)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
              if line.startswith("model name")]
    meminfo = Path("/proc/meminfo").read_text().split() if Path("/proc/meminfo").exists() else []
    info = {"cpu": models[0] if models else platform.processor(), "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "memory_gb": int(meminfo[1]) * 1024 / 1e9 if meminfo[:1] == ["MemTotal:"] else None,
            "os": platform.platform(),
            "thread_env": {k: v for k, v in os.environ.items()
                           if k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    info.update(measure("machine", python=python))
    for key in ("peak_rss_mb", "child_wall_s"):
        info.pop(key)
    return info


def update_json(path, sections):
    """Merge `sections` into the JSON file at `path`, atomically (temp file, then rename)."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(sections)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temp, path)
    return data


def now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# -- the sections --------------------------------------------------------------------------
def bench_backbone(quick, names):
    from retrain.backbones import get_backbone
    batch = measure("batch_size")
    repeats = 2 if quick else 5
    models = {}
    for name in names:
        models[name] = {
            "input": get_backbone(name).preprocessing["input_size"] + [3],
            "at_batch_size": measure("backbone", batch_size=batch["batch_size"], backbone=name,
                                     images=batch["batch_size"], repeats=repeats),
            "at_batch_1": measure("backbone", batch_size=1, images=batch["batch_size"],
                                  repeats=repeats, backbone=name)}
    return {"batch_size": batch["batch_size"], "batch_size_source": batch["source"],
            "models": models}


def bench_decode(quick):
    return measure("decode", sample_files=200 if quick else 1000,
                   photo_repeats=5 if quick else 25, runs=1 if quick else 3)


def bench_fit(quick, work, names):
    """Cold then warm cache with the default backbone, then cold with each other one.
    --quick fits a 100-image subset instead of the whole sample."""
    data = make_dataset(100, work / "fit-data") if quick else SAMPLE
    count = sum(1 for _ in Path(data).glob("*/*.png"))
    cold = run_fit(data, work / "fit-cold", work / "fit-cache")
    warm = run_fit(data, work / "fit-warm", work / "fit-cache")
    others = {name: run_fit(data, work / f"fit-{name}", work / "fit-cache", backbone=name)
              for name in names if name != BACKBONE}
    return {"data": "100 images of the sample" if quick else SAMPLE.relative_to(ROOT).as_posix(),
            "images": count, "cold": cold, "warm": warm, "other_backbones_cold": others}


def bench_extract(quick, work):
    """Cold-fit extraction rate / backbone-alone rate, on numpy and on OpenVINO (f32) where it
    is installed: backbone, cold `retrain fit --runtime R`, backbone, each on runtime R at
    the batch the fit extracts at (runtimes.batch_size_of), 64 images a call."""
    from retrain.runtimes import batch_size_of, describe_runtimes
    data = make_dataset(100, work / "extract-data") if quick else SAMPLE
    count = sum(1 for _ in Path(data).glob("*/*.png"))
    installed = [r["name"] for r in describe_runtimes() if r["installed"]]
    result = _extract_on("numpy", data, count, batch_size_of("numpy"), work)
    result["by_runtime"] = {name: _extract_on(name, data, count, batch_size_of(name), work)
                            for name in ("openvino",) if name in installed}
    return result


def _extract_on(runtime, data, count, batch, work, images=64):
    """The cold fit has no feature cached; on a compiled runtime, `first_fit` runs first,
    with nothing compiled either, as the first run on a machine, and compiles and keeps the
    runtime (runtime_store), which the cold fit after it then restores, as any later run on
    the machine does: in a cache folder ($XDG_CACHE_HOME, files.py) of their own, and each
    with a feature cache of its own."""
    def fit_as(name):
        result = run_fit(data, work / f"extract-run-{name}", work / f"extract-cache-{name}",
                         args=("--runtime", runtime))
        result["extract_images_per_s"] = count / result["stages_s"][EXTRACT_STAGE]
        return result
    saved = os.environ.get("XDG_CACHE_HOME")
    try:
        os.environ["XDG_CACHE_HOME"] = str(work / f"xdg-{runtime}")
        first = None if runtime == "numpy" else fit_as(f"{runtime}-1st")
        alone = [measure("backbone", batch_size=batch, images=images, repeats=3,
                         runtime=runtime)]
        fit = fit_as(runtime)
        alone.append(measure("backbone", batch_size=batch, images=images, repeats=3,
                             runtime=runtime))
    finally:
        if saved is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = saved
    runs = alone[0]["runs_s"] + alone[1]["runs_s"]
    backbone_rate = images / statistics.median(runs)
    fit_rate = fit["extract_images_per_s"]
    return {"runtime": runtime, "images": count, "batch_size": batch, "fit": fit,
            "first_fit": first, "backbone": alone, "fit_extract_images_per_s": fit_rate,
            "backbone_images_per_s": backbone_rate, "ratio": fit_rate / backbone_rate,
            "first_fit_ratio": first and first["extract_images_per_s"] / backbone_rate,
            "loadavg_1min": os.getloadavg()[0]}


def bench_runtimes(quick):
    """Each installed runtime's EfficientNet-Lite0 features at batch B in each precision it
    has here: what `retrain runtimes` shows and `--runtime auto` ranks by."""
    from retrain.runtimes import describe_runtimes
    batch = measure("batch_size")["batch_size"]
    rates, runs = {}, {}
    for row in describe_runtimes():
        for precision in row["precisions"]:
            m = measure("backbone", batch_size=batch, images=2 * batch,
                        repeats=2 if quick else 3, runtime=row["name"], precision=precision)
            rates.setdefault(row["name"], {})[precision] = m["images_per_s"]
            runs.setdefault(row["name"], {})[precision] = m
    return {"batch_size": batch, "images_per_s": rates, "measurements": runs,
            "versions": {r["name"]: r["version"] for r in describe_runtimes()}}


def bench_finetune(quick, work, sizes):
    """`retrain fit --fine-tune N` for N = 1, 2, 3 on 1,000 generated images (--quick: 100) (each N has its
    own cut point, so each starts with a cold cache), FINE_TUNE_EPOCHS epochs; then
    --fine-tune 2 --augment 4 with its views cold, then again warm (no misses expected);
    then the same on each of `sizes` images (--scale: 10,000) for one epoch, cold, to show
    the peak memory that 50,000 cut activations need."""
    from retrain.cli_text import STAGE_TEXT

    def fit(name, data, n, k=0, epochs=FINE_TUNE_EPOCHS, cache=work / "finetune-cache"):
        # --freeze-epochs 0: every epoch timed is one of the blocks with the head
        args = ["--fine-tune", str(n), "--augment", str(k), "--epochs", str(epochs),
                "--patience", str(epochs), "--freeze-epochs", "0"]
        result = run_fit(data, work / name, cache, args=args)
        result["s_per_epoch"] = (result["stages_s"].get(STAGE_TEXT["fit"], 0.0)
                                 / max(1, result["training"]["epochs_run"]))
        return result

    count = 100 if quick else 1000
    data = make_dataset(count, work / f"finetune-{count}")
    runs = {f"N={n}": fit(f"finetune-n{n}", data, n) for n in (1, 2, 3)}
    runs["N=2 K=4, views cold"] = fit("finetune-n2k4", data, 2, 4)
    runs["N=2 K=4, views warm"] = fit("finetune-n2k4-warm", data, 2, 4)
    shutil.rmtree(data)
    scale = []
    for size in sizes:
        big = make_dataset(size, work / f"finetune-{size}")
        scale.append({"images": size, **fit(f"finetune-{size}-run", big, 2, 4, epochs=1,
                                            cache=work / f"finetune-{size}-cache")})
        shutil.rmtree(work / f"finetune-{size}-cache")
        shutil.rmtree(big)
    return {"images": count, "epochs": FINE_TUNE_EPOCHS, "runs": runs, "scale": scale,
            "max_peak_rss_mb": max(r["peak_rss_mb"] for r in [*runs.values(), *scale])}


def bench_scale(sizes, work):
    runs = []
    for size in sizes:
        data = make_dataset(size, work / f"scale-{size}")
        result = run_fit(data, work / f"scale-{size}-run", work / f"scale-{size}-cache")
        runs.append({"images": size, **result, "s_per_image": result["wall_s"] / size})
        shutil.rmtree(work / f"scale-{size}-cache")
        shutil.rmtree(data)
    first, last = runs[0], runs[-1]
    summary = {"runs": runs,
               "max_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
               "peak_rss_under_1gb": all(r["peak_rss_mb"] * 1e6 < RSS_LIMIT_BYTES for r in runs)}
    if len(runs) > 1:
        # Fixed costs (interpreter, backbone load, head fit, report) sit in every run; the
        # marginal cost per image between the smallest and largest run shows linearity best.
        summary["s_per_image_ratio_last_to_first"] = last["s_per_image"] / first["s_per_image"]
        summary["marginal_s_per_image"] = ((last["wall_s"] - first["wall_s"])
                                          / (last["images"] - first["images"]))
    return summary


# -- output --------------------------------------------------------------------------------
def table(data):
    rows = []
    if "backbone" in data:
        b = data["backbone"]
        for name, m in b.get("models", {}).items():
            for key, label in (("at_batch_size", f"batch {b['batch_size']}"),
                               ("at_batch_1", "batch 1")):
                speed = (f"{m[key]['images_per_s']:.1f} img/s "
                         f"(best {m[key]['best_images_per_s']:.1f})")
                rows.append((f"backbone {name} {m['input'][0]}, {label}", speed,
                             m[key]["peak_rss_mb"]))
    if "decode" in data:
        d = data["decode"]
        for key, label in (("fashion_mnist_png_28x28", "decode+preprocess 28x28 PNG, 1 thread"),
                           ("photos", "decode+preprocess photos, 1 thread"),
                           ("fashion_mnist_iter_batches_2_workers",
                            "decode+preprocess 28x28 PNG, iter_batches 2 workers")):
            rows.append((label, f"{d[key]['images_per_s']:.1f} img/s", d["peak_rss_mb"]))
    if "fit" in data:
        f = data["fit"]
        for key in ("cold", "warm"):
            rows.append((f"retrain fit {f['images']} images, {key} cache",
                         f"{f[key]['wall_s']:.1f} s", f[key]["peak_rss_mb"]))
            rows.append(_stages_row(f[key]))
        runs = [(BACKBONE, f["cold"])] + list(f.get("other_backbones_cold", {}).items())
        for name, run in runs:
            accuracy = run.get("test_accuracy")
            rows.append((f"retrain fit {f['images']} images, cold, {name}: test accuracy "
                         + ("-" if accuracy is None else f"{accuracy:.3f}"),
                         f"{run['wall_s']:.1f} s", run["peak_rss_mb"]))
    if "dask" in data:
        import bench_dask
        rows += bench_dask.table_rows(data["dask"])
    if "serve" in data:
        rows += bench_serve.table_rows(data["serve"])
    if "extract" in data:
        e = data["extract"]
        rows.append((f"cold fit extraction, {e['images']} images",
                     f"{e['fit_extract_images_per_s']:.1f} img/s", e["fit"]["peak_rss_mb"]))
        rows.append((f"backbone alone, batch {e['batch_size']} (before and after the fit)",
                     f"{e['backbone_images_per_s']:.1f} img/s",
                     max(b["peak_rss_mb"] for b in e["backbone"])))
        rows.append((f"    cold fit extraction / backbone alone: {e['ratio']:.2f}", None, None))
        for name, r in e.get("by_runtime", {}).items():
            rows.append((f"cold fit --runtime {name} extraction, {r['images']} images",
                         f"{r['fit_extract_images_per_s']:.1f} img/s", r["fit"]["peak_rss_mb"]))
            rows.append((f"{name} alone, batch {r['batch_size']} (before and after the fit)",
                         f"{r['backbone_images_per_s']:.1f} img/s",
                         max(b["peak_rss_mb"] for b in r["backbone"])))
            rows.append((f"    cold fit --runtime {name} extraction / {name} alone: "
                         f"{r['ratio']:.2f}", None, None))
            if r.get("first_fit"):
                rows.append((f"  the same, {name}'s compiled model not cached either",
                             f"{r['first_fit']['extract_images_per_s']:.1f} img/s",
                             r["first_fit"]["peak_rss_mb"]))
                rows.append((f"    first cold fit --runtime {name} extraction / {name} "
                             f"alone: {r['first_fit_ratio']:.2f}", None, None))
    if "runtimes" in data:
        for name, rates in data["runtimes"]["images_per_s"].items():
            for precision, rate in rates.items():
                rows.append((f"runtime {name} {precision}, batch "
                             f"{data['runtimes']['batch_size']}", f"{rate:.1f} img/s",
                             data["runtimes"]["measurements"][name][precision]["peak_rss_mb"]))
    if "finetune" in data:
        f = data["finetune"]
        for name, run in f["runs"].items():
            cache = run["cache"]
            misses = cache["misses"] + cache["view_misses"]
            rows.append((f"retrain fit {f['images']} generated images, {name}: "
                         f"{misses} cache misses, test accuracy {run['test_accuracy']:.3f}",
                         f"{run['wall_s']:.1f} s ({run['s_per_epoch']:.1f} s/epoch)",
                         run["peak_rss_mb"]))
            rows.append(_stages_row(run))
        for run in f["scale"]:
            rows.append((f"retrain fit {run['images']} generated images, N=2 K=4, cold, 1 epoch",
                         f"{run['wall_s']:.1f} s ({run['s_per_epoch']:.1f} s/epoch)",
                         run["peak_rss_mb"]))
            rows.append(_stages_row(run))
    if "scale" in data:
        for run in data["scale"]["runs"]:
            rows.append((f"retrain fit {run['images']} generated images, cold",
                         f"{run['wall_s']:.1f} s ({1000 * run['s_per_image']:.1f} ms/img)",
                         run["peak_rss_mb"]))
            rows.append(_stages_row(run))
    width = max(len(r[0]) for r in rows if r[1]) if rows else 0
    lines = [f"{'measurement':<{width}}  {'result':>28}  {'peak RSS':>10}"]
    for label, value, rss in rows:
        lines.append(f"{label:<{width}}  {value:>28}  {rss:>7.0f} MB" if value else label)
    return "\n".join(lines)


def _stages_row(fit):
    """An indented line of the seconds each stage of a `retrain fit` run took."""
    stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in fit["stages_s"].items())
    return (f"    stages (s): {stages}", None, None)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller counts and a 100-image fit: a smoke test of the harness")
    p.add_argument("--sections",
                   default="backbone,runtimes,decode,fit,extract,finetune,dask,serve",
                   help=f"comma-separated, from {','.join(SECTIONS)}")
    p.add_argument("--scale", action="store_true",
                   help="add the scale section, and the 10,000-image run of the finetune one")
    p.add_argument("--sizes", default=None,
                   help="image counts for the scale section (default 1000,10000; --quick 100,200)")
    p.add_argument("--dask-images", type=int, default=2000,
                   help="generated images for the dask section (--quick: 200)")
    p.add_argument("--backbones", default=None,
                   help="comma-separated backbones for the backbone and fit sections "
                        "(default: every registered one)")
    p.add_argument("--out", type=Path, default=ROOT / "bench.json")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        return _child_main(argv[1:])
    args = build_parser().parse_args(argv)
    sections = [s for s in args.sections.split(",") if s] + (["scale"] if args.scale else [])
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"error: unknown sections {unknown}; choose from {list(SECTIONS)}")
    sizes = args.sizes or ("100,200" if args.quick else "1000,10000")
    sizes = [int(size) for size in sizes.split(",")]
    from retrain.backbones import BACKBONES, weights_path
    # by default the backbones whose weights are on disk (`make pretrained` converts those
    # it can fetch; the others need their file given)
    names = args.backbones.split(",") if args.backbones else [
        name for name in BACKBONES if weights_path(name).is_file()]
    if set(names) - set(BACKBONES):
        raise SystemExit(f"error: unknown backbones {sorted(set(names) - set(BACKBONES))}; "
                         f"choose from {list(BACKBONES)}")
    started = time.perf_counter()
    load = os.getloadavg()[0]
    if load > 0.5 * os.cpu_count():
        print(f"warning: load average {load:.1f} on {os.cpu_count()} CPUs: timings will be "
              "noisy", file=sys.stderr)
    try:
        results = {"machine": machine_info()}
        with tempfile.TemporaryDirectory(prefix="retrain-bench-") as tmp:
            runners = {"backbone": lambda: bench_backbone(args.quick, names),
                       "decode": lambda: bench_decode(args.quick),
                       "fit": lambda: bench_fit(args.quick, Path(tmp), names),
                       "dask": lambda: measure("dask", images=200 if args.quick
                                               else args.dask_images),
                       "extract": lambda: bench_extract(args.quick, Path(tmp)),
                       "runtimes": lambda: bench_runtimes(args.quick),
                       "finetune": lambda: bench_finetune(
                           args.quick, Path(tmp), [max(sizes)] if args.scale else []),
                       "serve": lambda: bench_serve.bench_serve(args.quick),
                       "scale": lambda: bench_scale(sizes, Path(tmp))}
            for section in (s for s in SECTIONS if s in sections):
                print(f"bench: {section} ...", file=sys.stderr, flush=True)
                t0, load = time.perf_counter(), os.getloadavg()
                results[section] = runners[section]()
                results[section].update(measured_at=now(), quick=args.quick,
                                        loadavg_at_start=list(load),
                                        section_wall_s=time.perf_counter() - t0)
                update_json(args.out, results)   # keep what is done if a later section fails
    except ChildFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results["last_run"] = {"sections": sections, "wall_s": time.perf_counter() - started}
    data = update_json(args.out, results)
    print(table({k: data[k] for k in sections if k in data}))
    print(f"\n{args.out.name} written; this run took {results['last_run']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
