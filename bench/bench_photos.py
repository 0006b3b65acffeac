"""End to end on photos (part of `make bench-peers`): `retrain classify` on generated 640x480
JPEGs, timed as a whole process, against the pipeline a user writes around a runtime.

The peer pipeline (issue 18), in .venv-peers: PIL decodes each photo in full, centre-crops
224/256 of its short side, resizes it bicubic to 224x224, and scales it to (x - 127) / 128 in
float32, in 2 threads (ThreadPoolExecutor.map, so decoding runs ahead of the runtime); batches
of 32 go through the runtime (2 threads) on the ONNX file of the same model; it prints each
photo's top 3, as `retrain classify --format csv` does. Both are timed as whole processes
(interpreter start, imports and compilation included), interleaved per runtime and precision,
best of `rounds`. The model: EfficientNet-Lite0 with a 10-class head, its recipe the one
`retrain fit` writes by default (jpeg_draft: true; preprocess.py).

    (project venv) bench_photos.py _classifier OUT      -> OUT/model.h5, OUT/model.onnx
    (.venv-peers)  bench_photos.py _peer ONNX DIR RUNTIME PRECISION
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
BATCH = 32
SIZE, CROP = 224, 224 / 256


def make_photos(count, out, seed=0):
    """`count` 640x480 JPEGs (quality 90) of smooth random colour with grain, ~100 kB each."""
    from PIL import Image
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        small = Image.fromarray(rng.integers(0, 255, (30, 40, 3), np.uint8))
        pixels = np.asarray(small.resize((640, 480), Image.Resampling.BICUBIC), np.int16)
        pixels = np.clip(pixels + rng.integers(-12, 12, pixels.shape), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(out / f"photo{i:05d}.jpg", quality=90)
    return out


def classifier_child(out):
    """(project venv) The model `retrain classify` runs, and its ONNX file for the peers."""
    sys.path.insert(0, str(ROOT))
    from retrain.backbones import load_backbone
    from retrain.engine import set_random_seed
    from retrain.export import export_model
    from retrain.fit import build_head
    from retrain.onnx_export import write_onnx
    from retrain.engine import load_model
    out = Path(out)
    set_random_seed(0)
    backbone = load_backbone("efficientnet_lite0")
    recipe = dict(backbone.metadata["preprocessing"], jpeg_draft=True)
    head = build_head(backbone.outputs[0].shape[-1], 10)
    path = export_model(out, backbone, head, [f"class{i}" for i in range(10)],
                        {"backbone": "efficientnet_lite0", "preprocessing": recipe})
    write_onnx(load_model(path), out / "model.onnx")


def _session(onnx_path, runtime, precision):
    """The runtime as a user sets it up: 2 threads, f32 or bf16."""
    if runtime == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        session = ort.InferenceSession(str(onnx_path), options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    import openvino as ov
    compiled = ov.Core().compile_model(str(onnx_path), "CPU", {
        "INFERENCE_NUM_THREADS": THREADS, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision})
    return lambda x: compiled(x)[0]


def _load(path):
    from PIL import Image
    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        side = int(CROP * min(width, height))
        left, top = (width - side + 1) // 2, (height - side + 1) // 2
        image = image.crop((left, top, left + side, top + side)).resize(
            (SIZE, SIZE), Image.Resampling.BICUBIC)
    return (np.asarray(image, np.float32) - 127.0) / 128.0


def peer_child(onnx_path, folder, runtime, precision):
    """(.venv-peers) The user's pipeline; prints path,label,probability x3 per photo."""
    run = _session(onnx_path, runtime, precision)
    paths = sorted(str(p) for p in Path(folder).glob("*.jpg"))
    lines = []

    def flush(batch_paths, batch):
        probabilities = run(np.stack(batch))
        for path, row in zip(batch_paths, probabilities):
            top = np.argsort(-row)[:3]
            lines.append(",".join([path] + [f"class{j},{row[j]:.6f}" for j in top]))
    with ThreadPoolExecutor(THREADS) as pool:
        batch_paths, batch = [], []
        for path, x in zip(paths, pool.map(_load, paths)):
            batch_paths.append(path)
            batch.append(x)
            if len(batch) == BATCH:
                flush(batch_paths, batch)
                batch_paths, batch = [], []
        if batch:
            flush(batch_paths, batch)
    sys.stdout.write("\n".join(lines) + "\n")


def configurations(bf16):
    """(runtime, precision) pairs to time: f32 on both runtimes, bf16 where the CPU has it."""
    return [("openvino", "f32")] + ([("openvino", "bf16")] if bf16 else []) + [
        ("onnxruntime", "f32")]


def end_to_end(python, run_child, count, rounds, work, bf16):
    """Wall seconds of whole processes, interleaved, per (runtime, precision): `retrain
    classify` and the peer pipeline (and `retrain classify --runtime numpy`, the engine's
    own figure). `run_child(argv)` -> (stdout, wall seconds, ...) as bench.run_child."""
    work = Path(work)
    photos = make_photos(count, work / "photos")
    run_child([str(python), str(Path(__file__).resolve()), "_classifier", str(work)])
    model, onnx = work / "model.h5", work / "model.onnx"
    configs = configurations(bf16) + [("numpy", "f32")]
    runs = {f"{r} {p}": {"retrain": [], "peer": []} for r, p in configs}
    loads = [os.getloadavg()[0]]
    for _ in range(rounds):
        for runtime, precision in configs:
            key = f"{runtime} {precision}"
            text, wall = run_child([str(python), "-m", "retrain", "classify", str(model),
                                    str(photos), "--format", "csv", "--runtime", runtime,
                                    "--precision", precision])[:2]
            if text.count("\n") != count + 1:
                raise SystemExit(f"error: retrain classify printed {text.count(chr(10))} "
                                 f"lines for {count} photos")
            runs[key]["retrain"].append(wall)
            if runtime != "numpy":
                text, wall = run_child([sys.executable, str(Path(__file__).resolve()),
                                        "_peer", str(onnx), str(photos), runtime,
                                        precision])[:2]
                runs[key]["peer"].append(wall)
        loads.append(os.getloadavg()[0])
    rows = []
    for key, times in runs.items():
        row = {"config": key, "images": count, "retrain_s": min(times["retrain"]),
               "runs_s": times}
        if times["peer"]:
            row["peer_s"] = min(times["peer"])
            row["ratio"] = row["peer_s"] / row["retrain_s"]      # >= 1: retrain as fast
        rows.append(row)
    return {"rows": rows, "rounds": rounds, "loadavg_1min_per_round": loads}


def main(argv):
    if argv[:1] == ["_classifier"]:
        classifier_child(argv[1])
    elif argv[:1] == ["_peer"]:
        peer_child(*argv[1:5])
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
