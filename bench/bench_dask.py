"""The `dask` section of `make bench` (bench.py --sections dask runs it alone): feature
extraction of --dask-images generated images (2,000 by default) in process, then on
`--dask local:2`, both with a cold feature cache, and what one Dask task costs.

Measured, in one child interpreter (bench.py's `_child dask`):
  in_process    extract_features as `retrain fit` runs it: images/s.
  local_2       the same on a LocalCluster of 2 worker processes (one thread each): the
                cluster's start-up, the shipment of the backbone to the workers, then the
                extraction; images/s of the extraction alone, and with the shipment.
  overhead      per task, from Dask's own task stream: (workers x wall - the seconds the
                tasks computed) / tasks, i.e. everything a task costs on top of its work
                (scheduling, the result's trip to the client, idle workers at the end);
                also the round trip of a no-op task (500 of them, 2 workers).
  hashing       sha256 throughput of the client on a 64 MB buffer (it hashes every image).

The scaling model projects 200,000 images on W workers from these numbers (projection()
states its assumptions in the output). On a machine whose cores are shared with other work
the two runs compete with it differently: read the load averages recorded with them.
"""
import hashlib
import math
import os
import tempfile
import time
from pathlib import Path

TASK_IMAGES = 256                 # retrain.cluster.TASK_IMAGES
PROJECTED_IMAGES = 200_000
PROJECTED_WORKERS = (1, 4, 16)
FEATURE_BYTES = 1280 * 4          # one float32 feature vector, client <- worker
PHOTO_BYTES = 100_000             # an assumed typical photo, for the shared-filesystem load


ASSUMPTIONS = (
    "Every worker is one process on one core, as fast as one worker process was here "
    "(per_worker_images_per_s: images over the seconds its tasks computed, 2 workers on "
    "this machine's 2 cores); the per-task overhead measured here holds at W workers (the "
    "scheduler is far from saturated: a no-op task costs noop_task_round_trip_s); tasks of "
    "up to 256 images, as retrain makes them; the workers read the images from a shared "
    f"filesystem that keeps up ({PHOTO_BYTES // 1000} kB per photo assumed: "
    "filesystem_mb_per_s is what it must serve); the client receives "
    f"{FEATURE_BYTES} bytes of features per image (features_to_client_mb_per_s) and hashes "
    f"every photo ({PHOTO_BYTES // 1000} kB) at the sha256 rate measured here; the "
    "cluster's start and the backbone's shipment are added once, as measured. Decoding "
    "2000 tiny generated PNGs is cheaper than decoding photos: real photos lower the rate.")


def child_dask(images, make_dataset):
    """Run the measurements on `images` generated files (made by `make_dataset(n, out)`)."""
    from distributed import get_task_stream

    from retrain.backbones import load_backbone
    from retrain.cluster import connect
    from retrain.features import FeatureCache, cache_namespace, extract_features

    with tempfile.TemporaryDirectory(prefix="retrain-bench-dask-") as tmp:
        tmp = Path(tmp)
        data = make_dataset(images, tmp / "data")
        paths = sorted(data.rglob("*.png"))
        backbone = load_backbone("efficientnet_lite0")
        recipe = backbone.metadata["preprocessing"]
        namespace = cache_namespace(backbone, recipe)

        def extract(cache, cluster=None):
            start, load = time.perf_counter(), os.getloadavg()
            found = extract_features(paths, backbone, recipe, FeatureCache(cache, namespace),
                                     progress=False, cluster=cluster)
            wall = time.perf_counter() - start
            assert found.misses == len(paths), found.misses
            return {"wall_s": wall, "images_per_s": len(paths) / wall,
                    "loadavg_at_start": list(load)}

        result = {"images": len(paths), "in_process": extract(tmp / "cache-here")}
        start = time.perf_counter()
        with connect("local:2") as cluster:
            started = time.perf_counter() - start
            start = time.perf_counter()
            cluster.ship(backbone)
            shipped = time.perf_counter() - start
            with get_task_stream(cluster.client) as stream:
                local = extract(tmp / "cache-there", cluster)
            tasks = [t for t in stream.data if str(t["key"]).startswith("retrain-features")]
            computed = sum(stop - begin for t in tasks for s in t["startstops"]
                           if s["action"] == "compute" for begin, stop in [(s["start"],
                                                                             s["stop"])])
            workers = cluster.worker_count()
            local.update(startup_s=started, ship_backbone_s=shipped, workers=workers,
                         tasks=len(tasks), images_per_task=len(paths) / max(1, len(tasks)),
                         compute_s=computed,
                         images_per_s_with_ship=len(paths) / (local["wall_s"] + shipped),
                         per_worker_images_per_s=len(paths) / computed)
            local["overhead_per_task_s"] = (workers * local["wall_s"] - computed) / len(tasks)
            local["noop_task_round_trip_s"] = _noop_round_trip(cluster.client, 500)
        result["local_2"] = local
    result["sha256_mb_per_s"] = _hash_rate()
    result["projection"] = projection(result)
    return result


def _noop_round_trip(client, count):
    futures = client.map(_noop, range(count), pure=False)     # warm: workers know the function
    client.gather(futures)
    start = time.perf_counter()
    client.gather(client.map(_noop, range(count), pure=False))
    return (time.perf_counter() - start) / count


def _noop(x):
    return x


def _hash_rate():
    buffer = os.urandom(64 << 20)
    start = time.perf_counter()
    hashlib.sha256(buffer).hexdigest()
    return len(buffer) / 1e6 / (time.perf_counter() - start)


def projection(measured, images=PROJECTED_IMAGES, workers=PROJECTED_WORKERS):
    """Projected seconds for `images` on each worker count, from the local_2 measurements:
    T(W) = hashing + images / (W x per-worker images/s) + tasks x overhead per task / W
           + the cluster's start + the backbone's shipment. ASSUMPTIONS says on what."""
    local = measured["local_2"]
    rate = local["per_worker_images_per_s"]
    hashing = images * PHOTO_BYTES / 1e6 / measured["sha256_mb_per_s"]
    rows = {}
    for w in workers:          # tasks as cluster.Cluster makes them, batches of 32
        per_task = 32 * max(1, min(TASK_IMAGES // 32, math.ceil(images / (4 * w * 32))))
        tasks = math.ceil(images / per_task)
        compute = images / (rate * w)
        overhead = tasks * local["overhead_per_task_s"] / w
        total = hashing + compute + overhead + local["startup_s"] + local["ship_backbone_s"]
        rows[str(w)] = {"seconds": total, "hours": total / 3600, "tasks": tasks,
                        "images_per_task": per_task, "compute_s": compute,
                        "overhead_s": overhead, "hashing_s": hashing,
                        "filesystem_mb_per_s": rate * w * PHOTO_BYTES / 1e6,
                        "features_to_client_mb_per_s": rate * w * FEATURE_BYTES / 1e6}
    in_process = images / measured["in_process"]["images_per_s"] + hashing
    return {"images": images, "in_process_hours": in_process / 3600,
            "per_worker_images_per_s": rate, "assumptions": ASSUMPTIONS,
            "workers": rows}


def table_rows(dask):
    """(label, result, peak RSS MB) rows for bench.py's table."""
    here, there = dask["in_process"], dask["local_2"]
    rows = [(f"features, {dask['images']} generated images, in process (load "
             f"{here['loadavg_at_start'][0]:.1f})", f"{here['images_per_s']:.1f} img/s",
             dask["peak_rss_mb"]),
            (f"features, {dask['images']} generated images, --dask local:2 (load "
             f"{there['loadavg_at_start'][0]:.1f}; RSS: client only)",
             f"{there['images_per_s']:.1f} img/s", dask["peak_rss_mb"]),
            (f"    start {there['startup_s']:.1f} s, ship backbone {there['ship_backbone_s']:.1f}"
             f" s, {there['tasks']} tasks, overhead {1000 * there['overhead_per_task_s']:.0f}"
             f" ms/task, no-op task {1000 * there['noop_task_round_trip_s']:.1f} ms", None, None)]
    projected = dask["projection"]
    rows.append((f"    projected: {projected['images']:,} images in process: "
                 f"{projected['in_process_hours']:.2f} h", None, None))
    for w, row in projected["workers"].items():
        rows.append((f"    projected: {projected['images']:,} images on {w} "
                     f"worker(s): {row['hours']:.2f} h", None, None))
    return rows
