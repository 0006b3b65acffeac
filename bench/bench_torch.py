"""`make bench-torch`: our engine's EfficientNet-Lite0 throughput as a ratio to PyTorch's.

Optional: nothing in retrain or its tests needs PyTorch. Runs in its own venv (.venv-torch,
CPU torch, numpy, h5py) and does not import retrain: it reads the converted weights from
pretrained/efficientnet_lite0.h5 with h5py and builds the same network in PyTorch:
TF 'same' padding (F.pad before each stride-2 convolution, the extra row/column at the
bottom/right as TF puts it), BatchNorm eps 1e-3, ReLU6, no squeeze-excite.

1. Our pooled features for the four fixture photos (computed by bench.py in the project's
   venv) must match PyTorch's to max |diff| < 1e-3, else nothing is timed.
2. PyTorch with 2 threads, eval mode, no_grad, in the default NCHW layout and channels_last,
   at our engine's batch size B and at 1 (B images per timed call, after two warm-up calls).
3. Our engine, in a child process of the project's venv, at the same batch sizes, taking
   turns with PyTorch for three rounds; median (and best) images/s over all the calls.
4. The ratios ours/torch go to bench.json under "torch" and to a table.

Run it on an idle machine. PyTorch's OpenMP threads synchronise after every operation, so
a thread that loses its core to another process stalls its partner: on the shared 2-core
machine we saw PyTorch at batch 1 drop from ~40 to ~1 image/s while tests ran beside it,
ours far less. The load average at the start and end is recorded for that reason.

    .venv-torch/bin/python bench/bench_torch.py [--python .venv/bin/python] [--quick]
"""
import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench import ROOT, machine_info, measure, now, timed_calls, update_json

THREADS = 2
TOLERANCE = 1e-3
WEIGHTS = ROOT / "pretrained" / "efficientnet_lite0.h5"

# EfficientNet-Lite0's stages, as in retrain/backbones/efficientnet_lite.py (the feature
# check below fails if the two ever disagree).
BLOCKS_ARGS = [
    {"kernel_size": 3, "repeats": 1, "filters_in": 32, "filters_out": 16,
     "expand_ratio": 1, "strides": 1},
    {"kernel_size": 3, "repeats": 2, "filters_in": 16, "filters_out": 24,
     "expand_ratio": 6, "strides": 2},
    {"kernel_size": 5, "repeats": 2, "filters_in": 24, "filters_out": 40,
     "expand_ratio": 6, "strides": 2},
    {"kernel_size": 3, "repeats": 3, "filters_in": 40, "filters_out": 80,
     "expand_ratio": 6, "strides": 2},
    {"kernel_size": 5, "repeats": 3, "filters_in": 80, "filters_out": 112,
     "expand_ratio": 6, "strides": 1},
    {"kernel_size": 5, "repeats": 4, "filters_in": 112, "filters_out": 192,
     "expand_ratio": 6, "strides": 2},
    {"kernel_size": 3, "repeats": 1, "filters_in": 192, "filters_out": 320,
     "expand_ratio": 6, "strides": 1},
]


class ConvSame(nn.Conv2d):
    """Conv2d with TF 'same' padding; for stride 2 the odd extra pixel goes bottom/right."""

    def forward(self, x):
        if self.stride[0] == 1:
            return super().forward(x)      # odd kernel, stride 1: symmetric, set at init
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def conv(c_in, c_out, kernel_size, strides=1, groups=1):
    padding = kernel_size // 2 if strides == 1 else 0
    return ConvSame(c_in, c_out, kernel_size, strides, padding, groups=groups, bias=False)


def bn(channels):
    return nn.BatchNorm2d(channels, eps=1e-3)


class MBConv(nn.Module):
    def __init__(self, filters_in, filters_out, kernel_size, strides, expand_ratio):
        super().__init__()
        mid = filters_in * expand_ratio
        self.expand = (nn.Sequential(conv(filters_in, mid, 1), bn(mid), nn.ReLU6(inplace=True))
                       if expand_ratio != 1 else nn.Identity())
        self.depthwise = nn.Sequential(conv(mid, mid, kernel_size, strides, groups=mid), bn(mid),
                                       nn.ReLU6(inplace=True))
        self.project = nn.Sequential(conv(mid, filters_out, 1), bn(filters_out))
        self.residual = strides == 1 and filters_in == filters_out

    def forward(self, x):
        y = self.project(self.depthwise(self.expand(x)))
        return y + x if self.residual else y


def block_names():
    """(Keras block name, constructor kwargs) in order: block1a, block2a, block2b, ..."""
    for stage, args in enumerate(BLOCKS_ARGS):
        for repeat in range(args["repeats"]):
            yield f"block{stage + 1}{chr(ord('a') + repeat)}", {
                "filters_in": args["filters_in"] if repeat == 0 else args["filters_out"],
                "filters_out": args["filters_out"], "kernel_size": args["kernel_size"],
                "strides": args["strides"] if repeat == 0 else 1,
                "expand_ratio": args["expand_ratio"]}


class EfficientNetLite0Features(nn.Module):
    """(N, 3, 224, 224) -> (N, 1280) average-pooled features."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv(3, 32, 3, 2), bn(32), nn.ReLU6(inplace=True))
        self.blocks = nn.ModuleDict({name: MBConv(**kw) for name, kw in block_names()})
        self.top = nn.Sequential(conv(320, 1280, 1), bn(1280), nn.ReLU6(inplace=True))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks.values():
            x = block(x)
        return self.top(x).mean(dim=(2, 3))

    def keras_names(self):
        """(Keras layer name, torch conv or BN module) for every layer with weights."""
        yield "stem_conv", self.stem[0]
        yield "stem_bn", self.stem[1]
        for name, block in self.blocks.items():
            if isinstance(block.expand, nn.Sequential):
                yield f"{name}_expand_conv", block.expand[0]
                yield f"{name}_expand_bn", block.expand[1]
            yield f"{name}_dwconv", block.depthwise[0]
            yield f"{name}_bn", block.depthwise[1]
            yield f"{name}_project_conv", block.project[0]
            yield f"{name}_project_bn", block.project[1]
        yield "top_conv", self.top[0]
        yield "top_bn", self.top[1]


def load_keras_h5(model, path):
    """Copy weights by Keras layer name from a Keras legacy .h5 (/model_weights/<layer>)."""
    with h5py.File(path, "r") as f:
        for name, module in model.keras_names():
            group = f["model_weights"][name]
            stored = {}
            for weight in group.attrs["weight_names"]:
                weight = weight.decode() if isinstance(weight, bytes) else weight
                stored[weight.split("/")[-1].split(":")[0]] = np.asarray(group[weight])
            for target, value in _torch_tensors(module, stored):
                with torch.no_grad():
                    target.copy_(torch.from_numpy(value))
    return model


def _torch_tensors(module, stored):
    """(torch tensor, Keras array in torch's layout) pairs for one conv or BN module."""
    if isinstance(module, nn.BatchNorm2d):
        return [(module.weight, stored["gamma"]), (module.bias, stored["beta"]),
                (module.running_mean, stored["moving_mean"]),
                (module.running_var, stored["moving_variance"])]
    if "depthwise_kernel" in stored:                     # (k, k, C, 1) -> (C, 1, k, k)
        return [(module.weight, stored["depthwise_kernel"].transpose(2, 3, 0, 1))]
    return [(module.weight, stored["kernel"].transpose(3, 2, 0, 1))]   # HWIO -> OIHW


def check_features(model, python, work):
    """Max |ours - torch| over the photos' pooled features; exits if over TOLERANCE."""
    measure("reference", python=python, out=str(work / "reference.npz"))
    reference = np.load(work / "reference.npz")
    with torch.no_grad():
        ours_in_torch = model(torch.from_numpy(reference["x"]).permute(0, 3, 1, 2).contiguous())
    diff = float(np.abs(ours_in_torch.numpy() - reference["features"]).max())
    print(f"pooled features, ours vs torch, {len(reference['x'])} photos: max |diff| = {diff:.2e}")
    if not diff < TOLERANCE:
        raise SystemExit(f"error: the PyTorch network does not reproduce ours (max |diff| "
                         f"{diff:.2e} >= {TOLERANCE}); timings would compare different networks.")
    return diff


def time_torch(model, batch_size, images, repeats, channels_last):
    """Seconds of each of `repeats` calls on `images` images in batches of `batch_size`."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    chunks = list(torch.split(torch.randn(images, 3, 224, 224).contiguous(memory_format=layout),
                              batch_size))

    def run():
        for chunk in chunks:
            model(chunk)
    with torch.no_grad():                      # 2 warm-ups: oneDNN picks and caches kernels
        return timed_calls(run, repeats, warmups=2)


def compare(model, python, batch_size, images, repeats, rounds):
    """Ours and PyTorch in both layouts at one batch size -> one row per layout.

    The three take turns `rounds` times, so that other work on a shared machine falls on
    all of them alike; each one's timed calls from all rounds are pooled."""
    runs = {"ours": [], "NCHW": [], "channels_last": []}
    for _ in range(rounds):
        runs["ours"] += measure("backbone", python=python, batch_size=batch_size,
                                images=images, repeats=repeats)["runs_s"]
        for layout in ("NCHW", "channels_last"):
            runs[layout] += time_torch(model, batch_size, images, repeats,
                                       layout == "channels_last")
    median = {name: images / statistics.median(r) for name, r in runs.items()}
    best = {name: images / min(r) for name, r in runs.items()}
    return [{"batch_size": batch_size, "layout": layout, "images_per_run": images,
             "ours_images_per_s": median["ours"], "torch_images_per_s": median[layout],
             "ours_best_images_per_s": best["ours"], "torch_best_images_per_s": best[layout],
             "ratio": median["ours"] / median[layout], "ratio_best": best["ours"] / best[layout],
             "ours_runs_s": runs["ours"], "torch_runs_s": runs[layout]}
            for layout in ("NCHW", "channels_last")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", type=Path, default=ROOT / ".venv" / "bin" / "python",
                   help="the project venv's python (runs our engine)")
    p.add_argument("--quick", action="store_true", help="one round of two timed calls")
    p.add_argument("--out", type=Path, default=ROOT / "bench.json")
    args = p.parse_args(argv)
    torch.set_num_threads(THREADS)
    load = os.getloadavg()
    repeats, rounds = (2, 1) if args.quick else (3, 3)
    model = load_keras_h5(EfficientNetLite0Features(), WEIGHTS).eval()
    with tempfile.TemporaryDirectory(prefix="retrain-bench-torch-") as tmp:
        diff = check_features(model, args.python, Path(tmp))
    batch = measure("batch_size", python=args.python)["batch_size"]
    rows = []
    for batch_size in (batch, 1):
        rows += compare(model, args.python, batch_size, batch, repeats, rounds)
    result = {"torch": torch.__version__, "threads": THREADS, "max_abs_feature_diff": diff,
              "rounds": rounds, "repeats_per_round": repeats, "rows": rows,
              "loadavg_at_start": list(load), "loadavg_at_end": list(os.getloadavg()),
              "machine": machine_info(args.python), "measured_at": now()}
    update_json(args.out, {"torch": result})
    print("images/s: median of the timed calls (best call in brackets)")
    print(f"{'batch':>5}  {'layout':<14}{'ours':>20}{'torch':>20}{'ours/torch':>18}")
    for r in rows:
        print(f"{r['batch_size']:>5}  {r['layout']:<14}"
              f"{r['ours_images_per_s']:>11.2f} ({r['ours_best_images_per_s']:6.2f})"
              f"{r['torch_images_per_s']:>11.2f} ({r['torch_best_images_per_s']:6.2f})"
              f"{r['ratio']:>10.3f} ({r['ratio_best']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
