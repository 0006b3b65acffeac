"""`make bench-peers`: our engine's EfficientNet-Lite0 throughput as a ratio to ONNX Runtime's
and OpenVINO's, on the ONNX file `retrain export` writes from the same weights.

Optional: nothing in retrain or its tests needs OpenVINO, and only the tests need ONNX
Runtime. Runs in its own venv (.venv-peers: onnxruntime, openvino, numpy); the project's venv
(--python) exports the file and runs our engine, each time in a fresh interpreter.

1. The project's venv writes the pooled-feature backbone (`load_backbone`, 224x224 -> 1280)
   as ONNX with retrain.onnx_export, and our features for the four fixture photos. Each peer's
   features for the same inputs must agree with ours to max |diff| <= 1e-4, else nothing is
   timed.
2. Each engine gets 2 threads: ONNX Runtime intra-op 2 (inter-op 1, all graph
   optimisations), OpenVINO CPU INFERENCE_NUM_THREADS 2 in one stream, float32 precision
   (it would use bf16 where the CPU has it), its model reshaped to each batch size; ours
   predict(x, batch_size) as `make bench` runs it.
3. At batch B (the engine's default) and 1, `images` images per timed call after one warm-up
   call; the three engines take turns `rounds` times, so that other work on a shared
   machine falls on all alike. Median (and best) images/s over the pooled calls.
4. The ratios ours/peer go to bench.json under "peers" with the load average at the start
   and end, and to a table.
5. End to end on photos (bench_photos.py): `retrain classify` on --photos generated 640x480
   JPEGs as a whole process against the pipeline a user writes around each runtime (PIL,
   2 decoding threads, batches of 32), per runtime and precision (bf16 where OpenVINO has it
   on this CPU), interleaved, best of 2 ("end_to_end" in bench.json); --no-photos skips it.
6. With --profile, where the time goes instead: milliseconds per image by kind of layer
   (1x1 convolution, depthwise by window and stride, the stem, the rest) for our plan's
   steps and for OpenVINO's own per-node profile (PERF_COUNT) of the same layers, at batch B
   and 1 ("profile" in bench.json).

    .venv-peers/bin/python bench/bench_peers.py [--python .venv/bin/python] [--quick] [--profile]
                                                [--photos 2000] [--no-photos]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import bench_photos
from bench import (BACKBONE, ROOT, machine_info, measure, now, run_child, timed_calls,
                   update_json)

THREADS = 2
TOLERANCE = 1e-4


def export_child(out_dir):
    """(project venv) The backbone as ONNX, and our features for the fixture photos."""
    sys.path.insert(0, str(ROOT))
    from retrain.backbones import load_backbone
    from retrain.onnx_export import write_onnx
    from bench import child_reference
    write_onnx(load_backbone(BACKBONE), Path(out_dir) / "backbone.onnx")
    child_reference(str(Path(out_dir) / "reference.npz"))


# -- --profile: milliseconds per image by kind of layer --------------------------------------
def _kind(kernel_hw, strides, depthwise):
    if depthwise:
        return f"depthwise {kernel_hw[0]}x{kernel_hw[1]} stride {strides[0]}"
    return "1x1 convolution" if tuple(kernel_hw) == (1, 1) else \
        f"{kernel_hw[0]}x{kernel_hw[1]} convolution stride {strides[0]} (stem)"


def profile_child(batch_size, repeats):
    """(project venv) Our plan's step times by kind, as wall time per image with all threads:
    at batch B one image on one thread (each thread runs its own), divided by the threads;
    at batch 1 the image split by rows between the threads (thread 0's time per step, waits
    at barriers included). Reaches into the plan's private parts."""
    import threading
    sys.path.insert(0, str(ROOT))
    from retrain.backbones import load_backbone
    from retrain.engine import inference, inference_steps
    model = load_backbone(BACKBONE)
    plan = inference.InferencePlan(model)
    layout = inference._Layout(plan, [(224, 224, 3)])
    kinds = []
    for index in layout.run_steps:
        step = layout.steps[index]
        if isinstance(step, inference_steps.Weighted):
            hw = step.kernel.shape[:2] if step.kernel.ndim == 4 else (1, 1)
            kinds.append(_kind(hw, step.strides, step.depthwise))
        else:
            kinds.append(f"other ({type(step).__name__})")
    parts = 1 if batch_size > 1 else inference._thread_count()
    workspace = layout.workspace(0, 1)
    workspace.bind(parts)
    np.copyto(workspace.arrays[plan.input_vids[0]],
              np.random.default_rng(0).normal(0, 1, (1, 224, 224, 3)))
    times = [[0.0] * len(kinds) for _ in range(repeats + 1)]
    barrier = threading.Barrier(parts)

    def run(part):
        for index, (call, before, after) in enumerate(workspace.plans[parts][part]):
            start = time.perf_counter()
            if before:
                barrier.wait()
            if call is not None:
                call()
            if after:
                barrier.wait()
            if part == 0:
                times[repeat][index] = time.perf_counter() - start
    with inference._OneBlasThread():
        for repeat in range(repeats + 1):               # the first is a warm-up
            threads = [threading.Thread(target=run, args=(p,)) for p in range(1, parts)]
            for t in threads:
                t.start()
            run(0)
            for t in threads:
                t.join()
    by_kind = {}
    for index, kind in enumerate(kinds):
        by_kind[kind] = by_kind.get(kind, 0.0) + 1000 * statistics.median(
            t[index] for t in times[1:])
    # at batch B each of the threads runs its own images: wall time per image is 1/threads
    share = 1 if parts > 1 else inference._thread_count()
    return {"batch_size": batch_size, "threads": inference._thread_count(),
            "ms_per_image": {kind: ms / share for kind, ms in by_kind.items()}}


def profile_openvino(path, batch_size, repeats):
    """OpenVINO's executed nodes' real time by kind, per image. Its fused convolutions are
    renamed, so their kinds come from the model's Convolution and GroupConvolution
    operations in order (the profile lists nodes in execution order)."""
    import openvino as ov
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape([batch_size, 224, 224, 3])
    conv_kinds = [_kind([d.get_length() for d in op.input(1).get_partial_shape()][-2:],
                        list(op.get_attributes()["strides"]),
                        op.get_type_name() == "GroupConvolution")
                  for op in model.get_ordered_ops()
                  if op.get_type_name() in ("Convolution", "GroupConvolution")]
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": THREADS, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).normal(0, 1, (batch_size, 224, 224, 3)).astype(np.float32)
    request.infer([x])
    samples = []
    for _ in range(repeats):
        request.infer([x])
        by_kind, convs = {}, iter(conv_kinds)
        for info in request.get_profiling_info():     # fused-away nodes too: they are NOT_RUN
            conv = info.node_type in ("Convolution", "GroupConvolution")
            kind = next(convs) if conv else f"other ({info.node_type})"
            if "dw_1x1" in info.exec_type:            # a 1x1 with the depthwise after it
                kind += " + the depthwise after it (fused)"
            by_kind[kind] = by_kind.get(kind, 0.0) + 1000 * info.real_time.total_seconds()
        if next(convs, None) is not None:
            raise SystemExit("error: OpenVINO ran fewer convolutions than the model has; "
                             "its profile cannot be matched to our layers")
        samples.append(by_kind)
    return {kind: statistics.median(s.get(kind, 0.0) for s in samples) / batch_size
            for kind in samples[0]}


def _group_other(ms):
    grouped = {}
    for kind, value in ms.items():
        key = "everything else" if kind.startswith("other") else kind
        grouped[key] = grouped.get(key, 0.0) + value
    return grouped


def profile(path, python, batch, repeats):
    rows = {}
    for batch_size in (batch, 1):
        text = run_child([str(python), str(Path(__file__).resolve()), "_profile",
                          json.dumps({"batch_size": batch_size, "repeats": repeats})])[0]
        ours = json.loads(text.strip().splitlines()[-1])
        rows[batch_size] = {"retrain": _group_other(ours["ms_per_image"]),
                            "openvino": _group_other(profile_openvino(path, batch_size, repeats))}
    print(f"milliseconds of wall time per image, {THREADS} threads each, by kind of layer "
          "(median of the calls)")
    for batch_size, row in rows.items():
        print(f"batch {batch_size}: {'kind':<34}{'retrain':>10}{'openvino':>10}")
        for kind in sorted(row["retrain"], key=lambda k: -row["retrain"][k]):
            print(f"         {kind:<34}{row['retrain'][kind]:>10.2f}"
                  f"{row['openvino'].get(kind, 0.0):>10.2f}")
        print(f"         {'total':<34}{sum(row['retrain'].values()):>10.2f}"
              f"{sum(row['openvino'].values()):>10.2f}")
    return rows


def _onnxruntime(path, batch_size):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _openvino(path, batch_size):
    import openvino as ov
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape([batch_size, 224, 224, 3])
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": THREADS, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda x: request.infer([x])[0].copy()


PEERS = {"onnxruntime": _onnxruntime, "openvino": _openvino}


def versions():
    import onnxruntime
    import openvino
    return {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


def check_features(path, reference):
    """Max |ours - peer| over the photos' features, per peer; exits if one is over."""
    x, ours = reference["x"], reference["features"]
    diffs = {}
    for name, make in PEERS.items():
        run = make(path, len(x))
        diffs[name] = float(np.abs(run(x) - ours).max())
        print(f"pooled features, ours vs {name}, {len(x)} photos: max |diff| = "
              f"{diffs[name]:.2e}")
    bad = {name: d for name, d in diffs.items() if not d <= TOLERANCE}
    if bad:
        raise SystemExit(f"error: features differ by more than {TOLERANCE} ({bad}); timings "
                         "would compare different networks.")
    return diffs


def time_peer(run, batch_size, images, repeats):
    """Seconds of each of `repeats` calls on `images` images in batches of `batch_size`."""
    x = np.random.default_rng(0).normal(0, 1, (images, 224, 224, 3)).astype(np.float32)
    chunks = [np.ascontiguousarray(x[i:i + batch_size]) for i in range(0, images, batch_size)]

    def call():
        for chunk in chunks:
            run(chunk)
    return timed_calls(call, repeats)


def compare(path, python, batch_size, images, repeats, rounds):
    """The three engines in turn, `rounds` times, at one batch size -> one row."""
    sessions = {name: make(path, batch_size) for name, make in PEERS.items()}
    runs = {"ours": [], **{name: [] for name in PEERS}}
    loads = [os.getloadavg()[0]]
    for _ in range(rounds):
        runs["ours"] += measure("backbone", python=python, batch_size=batch_size,
                                images=images, repeats=repeats)["runs_s"]
        for name, run in sessions.items():
            runs[name] += time_peer(run, batch_size, images, repeats)
        loads.append(os.getloadavg()[0])
    median = {name: images / statistics.median(r) for name, r in runs.items()}
    best = {name: images / min(r) for name, r in runs.items()}
    return {"batch_size": batch_size, "images_per_run": images,
            "images_per_s": median, "best_images_per_s": best,
            "ratio": {name: median["ours"] / median[name] for name in PEERS},
            "ratio_best": {name: best["ours"] / best[name] for name in PEERS},
            "runs_s": runs, "loadavg_1min_per_round": loads}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_export"]:
        export_child(argv[1])
        return 0
    if argv[:1] == ["_profile"]:
        print(json.dumps(profile_child(**json.loads(argv[1]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", type=Path, default=ROOT / ".venv" / "bin" / "python",
                   help="the project venv's python (exports the file, runs our engine)")
    p.add_argument("--quick", action="store_true", help="one round of two timed calls")
    p.add_argument("--images", type=int, default=64, help="images per timed call")
    p.add_argument("--profile", action="store_true",
                   help="time by kind of layer, ours and OpenVINO's, instead of the ratios")
    p.add_argument("--out", type=Path, default=ROOT / "bench.json")
    p.add_argument("--photos", type=int, default=2000,
                   help="generated 640x480 JPEGs for the end-to-end row")
    p.add_argument("--no-photos", action="store_true", help="skip the end-to-end row")
    args = p.parse_args(argv)
    load = os.getloadavg()
    repeats, rounds = (2, 1) if args.quick else (3, 3)
    with tempfile.TemporaryDirectory(prefix="retrain-bench-peers-") as tmp:
        run_child([str(args.python), str(Path(__file__).resolve()), "_export", tmp])
        diffs = check_features(Path(tmp) / "backbone.onnx", np.load(Path(tmp) / "reference.npz"))
        batch = measure("batch_size", python=args.python)["batch_size"]
        if args.profile:
            rows = profile(Path(tmp) / "backbone.onnx", args.python, batch, repeats + 2)
            update_json(args.out, {"profile": {
                "ms_per_image": rows, "loadavg_at_start": list(load),
                "loadavg_at_end": list(os.getloadavg()), "measured_at": now()}})
            return 0
        rows = [compare(Path(tmp) / "backbone.onnx", args.python, batch_size, args.images,
                        repeats, rounds) for batch_size in (batch, 1)]
        photos = None if args.no_photos else bench_photos.end_to_end(
            args.python, run_child, 200 if args.quick else args.photos, 1 if args.quick else 2,
            tmp, bf16_here())
    result = {"end_to_end": photos, "versions": versions(), "threads": THREADS, "max_abs_feature_diff": diffs,
              "rounds": rounds, "repeats_per_round": repeats, "rows": rows,
              "loadavg_at_start": list(load), "loadavg_at_end": list(os.getloadavg()),
              "machine": machine_info(args.python), "measured_at": now()}
    update_json(args.out, {"peers": result})
    print("images/s: median of the timed calls (best call in brackets); "
          f"load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(f"{'batch':>5}{'retrain':>18}" + "".join(f"{n:>18}{'ratio':>16}" for n in PEERS))
    for r in rows:
        line = f"{r['batch_size']:>5}{_pair(r, 'ours')}"
        for name in PEERS:
            line += f"{_pair(r, name)}{r['ratio'][name]:>8.3f} ({r['ratio_best'][name]:.3f})"
        print(line)
    print("ratio: retrain / peer (>= 1.0: retrain is faster)")
    if photos:
        print_end_to_end(photos)
    return 0


def bf16_here():
    import openvino
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def print_end_to_end(photos):
    images = photos["rows"][0]["images"]
    print(f"\n`retrain classify` on {images} generated 640x480 JPEGs, whole process, best of "
          f"{photos['rounds']} (load average per round: "
          f"{', '.join(f'{x:.1f}' for x in photos['loadavg_1min_per_round'])})")
    print(f"{'runtime':<18}{'retrain s':>10}{'img/s':>8}{'peer s':>9}{'img/s':>8}{'ratio':>7}")
    for row in photos["rows"]:
        peer = (f"{row['peer_s']:>9.1f}{images / row['peer_s']:>8.1f}{row['ratio']:>7.2f}"
                if "peer_s" in row else f"{'-':>9}{'-':>8}{'-':>7}")
        print(f"{row['config']:<18}{row['retrain_s']:>10.1f}{images / row['retrain_s']:>8.1f}"
              f"{peer}")
    print("ratio: peer seconds / retrain seconds (>= 1.0: retrain is as fast as the peer)")


def _pair(row, name):
    return f"{row['images_per_s'][name]:>10.2f} ({row['best_images_per_s'][name]:5.1f})"


if __name__ == "__main__":
    sys.exit(main())
