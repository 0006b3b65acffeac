"""The `serve` section of `make bench` (bench.py --sections serve runs it alone): `retrain
serve` under load on the loopback, against `retrain classify` on the same images.

Measured, the server and `classify` each in a process of their own, the load from this one:
  classify     retrain.classify.classify (what `retrain classify` runs: 2 decoding threads,
               batches of 32) on N copies of one photo (tests/fixtures/photos/chelsea.png),
               in a fresh interpreter after loading the model: images/s. Measured before and
               after the load test, and averaged, so that both see the same machine.
  load         `retrain serve` (its defaults: --max-batch 32, --max-wait-ms 5, 2 decoding
               threads) and 16 clients, each on its own keep-alive connection sending 100
               requests of that photo one after the other (the body: the PNG, Content-Type
               image/png): errors, answers that differ from classify's, latency p50/p99,
               images/s, and the ratio to classify's images/s (acceptance: >= 0.8).
  backpressure `retrain serve --max-queue 64` and 200 uploads sent at once (multipart, one
               thread each, released together): how many got 503 with Retry-After, whether
               the others got classify's answer, and the server's peak RSS (VmHWM): its
               growth over the RSS after start-up, against GROWTH_BOUND_MB.
The bounds are loopback only, a fixed number of requests, and a timeout on every request.
"""
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "tests" / "fixtures" / "photos" / "chelsea.png"
MODEL = ROOT / "pretrained" / "efficientnet_lite0.h5"
# Peak RSS over the server's own after start-up (model loaded and run once): 64 admitted
# images (64 KB spooled + 150 KB decoded each: 14 MB), 2 decoders, and the model's buffers
# for batches of up to 32. Those dominate and depend on the runtime: measured, the numpy
# engine's Lite0 grows by 140 MB; OpenVINO allocates per batch size (+320 MB for 32, then
# +70 MB over 60 batches of 1..32 images), and stays there.
GROWTH_BOUND_MB = 600
TOLERANCE = 1e-4           # probabilities of two float32 batch orders (tests use the bound)

_CLASSIFY = """
import json, resource, sys, time
from retrain.classify import classify
from retrain.model_file import load_model_file
from retrain.runtimes import load_runtime
model = load_model_file(sys.argv[1])
paths = [sys.argv[2]] * int(sys.argv[3])
runner = load_runtime(model, sys.argv[4])
list(classify(model, paths[:32], runtime=runner))      # warm-up, as the server's
started, cpu = time.perf_counter(), sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
records = list(classify(model, paths, runtime=runner))
seconds = time.perf_counter() - started
cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu
print(json.dumps({"images": len(records), "seconds": seconds, "cpu_ms_per_image": 1000 * cpu / len(records),
                  "images_per_s": len(records) / seconds, "top": records[0]["top"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_serve(quick, runtime=None):
    """Both on `runtime` (default: what --runtime auto takes here), in f32."""
    from retrain.runtimes import resolve_runtime
    runtime = runtime or resolve_runtime("auto")
    clients, requests = (4, 10) if quick else (16, 100)
    images = clients * requests
    before = _classify(images, runtime)
    load = _load_test(clients, requests, before["top"], runtime)
    after = _classify(images, runtime)
    rate = statistics.mean([before["images_per_s"], after["images_per_s"]])
    busy = _backpressure(64, 200, before["top"], runtime)
    return {"photo": PHOTO.name, "model": MODEL.name, "runtime": runtime,
            "classify": {"before": before, "after": after, "images_per_s": rate},
            "load": dict(load, ratio_to_classify=load["images_per_s"] / rate),
            "backpressure": busy}


def _classify(images, runtime):
    done = subprocess.run([sys.executable, "-c", _CLASSIFY, str(MODEL), str(PHOTO), str(images),
                           runtime],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(done.stdout)


class _Server:
    def __init__(self, *options):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "retrain", "serve", str(MODEL), "--port", "0", *options],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.port = int(self.process.stdout.readline().split("http://127.0.0.1:")[1].split()[0])
        self._log = threading.Thread(target=self.process.stdout.read)   # access log: drained
        self._log.start()

    def cpu_s(self):
        """User + system seconds the server has used so far (/proc/PID/stat)."""
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def health(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request("GET", "/healthz")
        return json.loads(connection.getresponse().read())

    def peak_rss_mb(self, key="VmHWM:"):
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            return int(next(l for l in status if l.startswith(key)).split()[1]) / 1024

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        self._log.join()
        return code


def _post(connection, body, headers):
    connection.request("POST", "/v1/classify", body=body, headers=headers)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), json.loads(response.read())


def _same(answer, top):
    got = answer["results"][0]["top"]
    return [t["label"] for t in got] == [t["label"] for t in top] and all(
        abs(a["probability"] - b["probability"]) <= TOLERANCE for a, b in zip(got, top))


def _load_test(clients, requests, top, runtime):
    body = PHOTO.read_bytes()
    server = _Server("--runtime", runtime)
    latencies, errors, different = [], [], [0]

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        for _ in range(requests):
            started = time.perf_counter()
            try:
                status, _, answer = _post(connection, body, {"Content-Type": "image/png"})
            except (OSError, http.client.HTTPException, ValueError) as error:
                errors.append(repr(error))
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                continue
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(f"{status}: {answer}")
            elif not _same(answer, top):
                different[0] += 1
        connection.close()

    try:
        _post(http.client.HTTPConnection("127.0.0.1", server.port, timeout=120), body,
              {"Content-Type": "image/png"})
        threads = [threading.Thread(target=client) for _ in range(clients)]
        started, cpu, before = time.perf_counter(), server.cpu_s(), server.health()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall, cpu = time.perf_counter() - started, server.cpu_s() - cpu
        after, peak = server.health(), server.peak_rss_mb()
    finally:
        code = server.stop()
    batches = after["batches"] - before["batches"]
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0] * 99
    return {"clients": clients, "requests_per_client": requests, "errors": len(errors),
            "first_errors": errors[:3], "answers_unlike_classify": different[0],
            "wall_s": wall, "images_per_s": len(latencies) / wall,
            "latency_p50_ms": 1000 * quantiles[49], "latency_p99_ms": 1000 * quantiles[98],
            "cpu_ms_per_image": 1000 * cpu / max(1, len(latencies)),
            "mean_batch": (after["images"] - before["images"]) / max(1, batches),
            "model_busy_share": (after["model_busy_s"] - before["model_busy_s"]) / wall,
            "peak_rss_mb": peak, "exit_status": code}


def _backpressure(max_queue, uploads, top, runtime):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename="
            f"\"{PHOTO.name}\"\r\nContent-Type: image/png\r\n\r\n").encode() \
        + PHOTO.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    server = _Server("--max-queue", str(max_queue), "--runtime", runtime)
    barrier, answers, start = threading.Barrier(uploads), [], server.peak_rss_mb("VmRSS:")

    def upload():
        barrier.wait()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        try:
            answers.append(_post(connection, body, headers))
        except (OSError, http.client.HTTPException, ValueError) as error:
            answers.append((None, {}, repr(error)))
        finally:
            connection.close()

    try:
        threads = [threading.Thread(target=upload) for _ in range(uploads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = server.peak_rss_mb()
    finally:
        code = server.stop()
    ok = [a for s, _, a in answers if s == 200]
    busy = [h for s, h, _ in answers if s == 503]
    return {"max_queue": max_queue, "uploads": uploads, "answered_200": len(ok),
            "answered_503": len(busy), "with_retry_after": sum("retry-after" in h for h in busy),
            "other": [s for s, _, _ in answers if s not in (200, 503)],
            "answers_unlike_classify": sum(not _same(a, top) for a in ok),
            "rss_at_start_mb": start, "peak_rss_mb": peak, "growth_mb": peak - start,
            "growth_bound_mb": GROWTH_BOUND_MB, "exit_status": code}


def table_rows(data):
    load, busy, rate = data["load"], data["backpressure"], data["classify"]["images_per_s"]
    return [
        (f"retrain classify, {data['classify']['before']['images']} x {data['photo']} on "
         f"{data['runtime']} (before/after the load test)", f"{rate:.1f} img/s",
         data["classify"]["before"]["peak_rss_mb"]),
        (f"retrain serve, {load['clients']} clients x {load['requests_per_client']} requests: "
         f"{load['errors']} errors, {load['answers_unlike_classify']} unlike classify",
         f"{load['images_per_s']:.1f} img/s", load["peak_rss_mb"]),
        (f"    latency p50 {load['latency_p50_ms']:.0f} ms, p99 {load['latency_p99_ms']:.0f} ms;"
         f" serve / classify: {load['ratio_to_classify']:.2f} (acceptance >= 0.8)", None, None),
        (f"    CPU per image: serve {load['cpu_ms_per_image']:.0f} ms, classify "
         f"{data['classify']['before']['cpu_ms_per_image']:.0f} ms; mean batch "
         f"{load['mean_batch']:.1f}, model busy {100 * load['model_busy_share']:.0f}% of the "
         "time", None, None),
        (f"retrain serve --max-queue {busy['max_queue']}, {busy['uploads']} uploads at once: "
         f"{busy['answered_503']} x 503, {busy['answered_200']} x 200 "
         f"({busy['answers_unlike_classify']} unlike classify)",
         f"+{busy['growth_mb']:.0f} MB (bound +{busy['growth_bound_mb']})", busy["peak_rss_mb"]),
    ]
