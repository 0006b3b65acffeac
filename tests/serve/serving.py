"""Helpers for the tests of `retrain serve`, run as a user runs it: a real server process
on a free loopback port, spoken to over HTTP with the standard library. The models: a run of
`retrain fit` on the stand-in backbone (conftest.py: classes blue, green, red; its card has
metrics and a confusion matrix), and the converted ImageNet EfficientNet-Lite0 for photos."""
import contextlib
import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "tests" / "fixtures" / "photos"
LITE0 = ROOT / "pretrained" / "efficientnet_lite0.h5"

needs_serve = pytest.mark.skipif(importlib.util.find_spec("fastapi") is None
                                 or importlib.util.find_spec("uvicorn") is None,
                                 reason="the serve extra is not installed (make install)")
needs_lite0 = pytest.mark.skipif(not LITE0.exists(),
                                 reason="pretrained weights not converted (make pretrained)")


class Server:
    """A `retrain serve` process; `lines` is what it printed on stdout so far."""

    def __init__(self, model, *options, env=None):
        self.model = model
        self.process = subprocess.Popen(
            [sys.executable, "-m", "retrain", "serve", str(model), "--port", "0", *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=dict(os.environ, **(env or {})))
        first = self.process.stdout.readline()
        if "http://" not in first:
            self.process.kill()
            raise AssertionError(f"no address: {first!r} {self.process.stderr.read()}")
        self.lines = [first.rstrip("\n")]
        self.host, port = first.split("http://")[1].split()[0].rsplit(":", 1)
        self.port = int(port)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers, parsed JSON or the text) of one request on a new connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")   # a PNG asset too
            kind = response.getheader("Content-Type", "")
            return (response.status, dict(response.getheaders()),
                    json.loads(text) if kind.startswith("application/json") else text)
        finally:
            connection.close()

    def runtime(self):
        """{"runtime", "precision"} the server computes with (GET /v1/model), for classify."""
        card = self.request("GET", "/v1/model")[2]
        return {"runtime": card["runtime"], "precision": card["precision"]}

    def classify(self, files, top_k=3, headers=None):
        """POST files [(name, bytes)] as multipart `files`."""
        body, kind = multipart(files)
        return self.request("POST", f"/v1/classify?top_k={top_k}", body,
                            {"Content-Type": kind, **(headers or {})})

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Send `sig`; returns (exit status, the rest of stdout, stderr). Read through the
        pipes' file objects: communicate() would skip what readline() buffered."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=timeout)
        out, err = self.process.stdout.read(), self.process.stderr.read()
        self.lines += out.splitlines()
        return self.process.returncode, out, err


@contextlib.contextmanager
def running(model, *options, env=None):
    server = Server(model, *options, env=env)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        server.process.stdout.close()
        server.process.stderr.close()


def multipart(files, field="files"):
    """(body, Content-Type) of a multipart/form-data request with `files` [(name, bytes)]."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                     f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                     .encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def photo(name):
    return name, (PHOTOS / name).read_bytes()
