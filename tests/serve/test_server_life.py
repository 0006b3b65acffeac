"""The server's life: nothing listens before the model has loaded (a bad model is classify's
one-line error, exit 2), loopback unless --host says otherwise, backpressure with bounded
memory, SIGTERM answers the requests in flight then exits 0, and without the extra a
one-line error names the pip command."""
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from serving import ROOT, multipart, needs_serve, photo, running

pytestmark = needs_serve
PEAK_RSS_BOUND = 400 * 2 ** 20   # bytes; measured 229 MB (2026-12-07, runtime auto: OpenVINO)


def retrain(*argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "retrain", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, **kwargs)


def test_a_model_that_cannot_load_is_classify_s_error_before_anything_listens(tmp_path):
    bad = tmp_path / "model.h5"
    bad.write_bytes(b"not an HDF5 file at all")
    served = retrain("serve", str(bad), "--port", "0")
    classified = retrain("classify", str(bad), str(ROOT / "tests/fixtures/photos/chelsea.png"))
    assert served.returncode == classified.returncode == 2
    assert served.stdout == ""                     # no address: nothing listened
    assert served.stderr == classified.stderr and served.stderr.startswith("error: ")
    assert len(served.stderr.splitlines()) == 2     # error: ... and hint: ...


def test_a_port_in_use_is_a_one_line_error(colour_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        served = retrain("serve", str(colour_model), "--port", str(taken.getsockname()[1]))
    assert served.returncode == 2 and served.stdout == ""
    assert served.stderr.startswith("error: ") and "in use" in served.stderr


def test_without_the_serve_extra_a_one_line_error_names_the_pip_command(colour_model):
    code = ("import sys; sys.modules['fastapi'] = None; from retrain.cli import main; "
            f"sys.exit(main(['serve', {str(colour_model)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    error, hint = done.stderr.splitlines()
    assert error.startswith("error: retrain serve needs FastAPI")
    assert hint.startswith("hint: Install them with: pip install -e ") and "[serve]" in hint


def test_it_binds_loopback_unless_told_and_then_says_so(colour_model):
    with running(colour_model, "-q") as server:
        assert server.host == "127.0.0.1"
        assert server.stop()[0] == 0 and not any("note" in l for l in server.lines)
    with running(colour_model, "-q", "--host", "0.0.0.0") as server:
        assert server.host == "0.0.0.0"
        assert server.request("GET", "/healthz")[0] == 200      # over loopback only
        code, out, _ = server.stop()
    assert code == 0
    assert out.startswith("note: --host 0.0.0.0 is reachable from other machines; anyone")


def peak_rss(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        line = next(l for l in status if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_a_full_queue_answers_503_with_retry_after_and_memory_stays_bounded(colour_model):
    """200 simultaneous uploads against --max-queue 64. The first batch waits (batch 128,
    2 s) so that the queue is full while they arrive: 64 admitted, the others refused."""
    body, kind = multipart([photo("chelsea.png")])
    barrier, answers = threading.Barrier(200), []

    def upload():
        barrier.wait()
        answers.append(server.request("POST", "/v1/classify", body, {"Content-Type": kind}))

    with running(colour_model, "-q", "--max-queue", "64", "--max-batch", "128",
                 "--max-wait-ms", "2000") as server:
        threads = [threading.Thread(target=upload) for _ in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = peak_rss(server.process.pid)
        _, _, health = server.request("GET", "/healthz")
        assert server.stop()[0] == 0
    assert len(answers) == 200          # each refused client read its 503
    statuses = sorted(status for status, _, _ in answers)
    busy = [a for a in answers if a[0] == 503]
    assert set(statuses) == {200, 503} and 0 < len(busy) < 200, statuses
    assert statuses.count(200) <= 2 * 64    # 64 at a time: the first batch, a late few
    assert all(h["retry-after"] == "1" and "busy" in b["error"] for _, h, b in busy)
    tops = {a[2]["results"][0]["top"][0]["label"] for a in answers if a[0] == 200}
    assert len(tops) == 1 and health["queued_images"] == 0
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / 2 ** 20:.0f} MB"


def test_sigterm_answers_the_request_in_flight_then_exits_0(colour_model):
    """The request waits 1.5 s for its batch to fill when SIGTERM arrives."""
    answers = []
    with running(colour_model, "--max-batch", "64", "--max-wait-ms", "1500") as server:
        client = threading.Thread(target=lambda: answers.append(server.classify(
            [photo("chelsea.png")])))
        client.start()
        deadline = time.monotonic() + 30
        while server.request("GET", "/healthz")[2]["queued_images"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        code, out, err = server.stop(signal.SIGTERM)
        client.join()
    assert code == 0, err
    (status, _, answer), = answers
    assert status == 200 and answer["results"][0]["top"], answer
    assert '"POST /v1/classify?top_k=3" 200' in out
    assert out.splitlines()[-1] == "stopped (SIGTERM); the requests in flight were answered"
