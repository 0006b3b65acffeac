"""Bad input, case by case: each request gets a JSON error with its reason and a fitting
status (never a 500 or a traceback), and the server still answers /healthz after it."""
import struct
import zlib

import pytest

from retrain.classify import classify
from retrain.images import MAX_PIXELS
from retrain.model_file import load_model_file
from serving import PHOTOS, multipart, needs_serve, photo, running

pytestmark = needs_serve
MB = 2 ** 20


def png_header(width, height):
    """A PNG that claims width x height pixels in a few dozen bytes (a decompression bomb
    as a decoder sees it before any pixel)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def raw(data, kind):
    return "POST", "/v1/classify", data, {} if kind is None else {"Content-Type": kind}


def form(files, field="files", path="/v1/classify"):
    body, kind = multipart(files, field)
    return "POST", path, body, {"Content-Type": kind}


def chunked_body(size):
    """An upload with no Content-Length (chunked): the limit must hold while reading."""
    def chunks():
        for _ in range(size // 65536):
            yield b"\0" * 65536
    return "POST", "/v1/classify", chunks(), {"Content-Type": "image/png"}   # http.client
    # sends an iterable body chunked, and says so (Transfer-Encoding: chunked)


BOMB = png_header(20_000, 20_000)                        # 400 megapixels
OVER_THE_LIMIT = png_header(10_000, MAX_PIXELS // 10_000 + 1)   # one row past classify's limit
TRUNCATED = (PHOTOS / "chelsea.png").read_bytes()[:4000]
GOOD = photo("chelsea.png")

CASES = {   # name: (request, status, words of the reason)
    "text sent as image/png": (raw(b"hello, world", "image/png"), 422, "not an image"),
    "a text Content-Type": (raw(b"hello", "text/plain"), 415, "Content-Type"),
    "no Content-Type": (raw(b"hello", None), 415, "Content-Type"),
    "a truncated PNG": (form([("cut.png", TRUNCATED)]), 422, "corrupt or truncated"),
    "a 400-megapixel bomb": (form([("bomb.png", BOMB)]), 422, "decompression bomb"),
    "one row over the pixel limit": (raw(OVER_THE_LIMIT, "image/png"), 422,
                                     "decompression bomb"),
    "one bad image among good ones": (form([GOOD, ("cut.png", TRUNCATED)]), 422, "cut.png"),
    "a body over --max-upload-mb": (raw(b"\0" * (MB + 1), "image/png"), 413, "max-upload-mb"),
    "a chunked body over --max-upload-mb": (chunked_body(2 * MB), 413, "max-upload-mb"),
    "multipart over --max-upload-mb": (form([("big.png", b"\0" * (MB + 1))]), 413,
                                       "max-upload-mb"),
    "an empty body": (raw(b"", "image/png"), 400, "empty"),
    "multipart without a boundary": (("POST", "/v1/classify", b"xx",
                                      {"Content-Type": "multipart/form-data"}), 400, "boundary"),
    "multipart that is not": (("POST", "/v1/classify", b"garbage" * 20,
                               {"Content-Type": "multipart/form-data; boundary=abc"}), 400,
                              "multipart"),
    "multipart with no 'files' field": (form([GOOD], field="image"), 400, "'files'"),
    "multipart with an empty file": (form([("empty.png", b"")]), 400, "empty.png"),
    "too many files": (form([GOOD] * 4), 413, "max-files 3"),
    "top_k=0": (form([GOOD], path="/v1/classify?top_k=0"), 422, "top_k"),
    "top_k=abc": (form([GOOD], path="/v1/classify?top_k=abc"), 422, "top_k"),
    "an unknown path": (("GET", "/v2/classify", None, {}), 404, "Not Found"),
    "GET on classify": (("GET", "/v1/classify", None, {}), 405, "Method Not Allowed"),
}


@pytest.fixture(scope="module")
def server(colour_model):
    with running(colour_model, "-q", "--max-upload-mb", "1", "--max-files", "3") as server:
        yield server
        code, _, err = server.stop()
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("case", CASES, ids=str)
def test_each_bad_request_gets_a_json_reason_and_the_server_goes_on(server, case):
    (method, path, body, headers), status, words = CASES[case]
    got, answer_headers, answer = server.request(method, path, body, headers)
    assert got == status, answer
    assert isinstance(answer, dict) and words in answer["error"], answer
    assert "Traceback" not in str(answer)
    assert server.request("GET", "/healthz")[0] == 200
    assert server.classify([GOOD])[0] == 200


def test_a_bomb_is_refused_with_classify_s_own_reason(server, tmp_path):
    (tmp_path / "bomb.png").write_bytes(OVER_THE_LIMIT)
    model = load_model_file(server.model)
    (expected,) = classify(model, [tmp_path / "bomb.png"])
    _, _, answer = server.request("POST", "/v1/classify", OVER_THE_LIMIT,
                                  {"Content-Type": "image/png"})
    assert answer["files"] == [{"file": "body", "error": expected["error"]}]


def test_a_bug_is_a_json_500_without_a_traceback_and_nothing_escapes(colour_model):
    """In process, through the ASGI interface: a route that raises answers 500 with one
    JSON line, the access log has it, and no exception reaches uvicorn (which would print
    the traceback)."""
    import asyncio
    import json

    from retrain.serve.app import Guard, create_app
    from retrain.serve.batcher import Batcher
    from retrain.serve.uploads import UploadLimits

    async def broken(files, top_k):
        raise ZeroDivisionError("a bug")

    batcher = Batcher(load_model_file(colour_model))
    batcher.classify = broken
    lines, sent = [], []
    app = Guard(create_app(batcher, {"file": "model.h5"}, UploadLimits()), log=lines.append)
    body = GOOD[1]
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/classify",
             "raw_path": b"/v1/classify", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"image/png"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 8000)}
    asyncio.run(app(scope, receive, send))
    batcher.close()
    answer = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert sent[0]["status"] == 500 and answer["error"] == "unexpected ZeroDivisionError: a bug"
    assert "Traceback" not in str(answer)
    assert len(lines) == 1 and lines[0].startswith('127.0.0.1:5 "POST /v1/classify" 500 ')


def test_a_body_that_trickles_is_refused_after_the_read_timeout_and_frees_its_place(
        colour_model):
    """A client that sends the headers and 10 of its 1,000 bytes, then nothing: 408 after
    --read-timeout-s, and its place in the queue is free again."""
    import http.client
    import json
    import socket
    with running(colour_model, "-q", "--read-timeout-s", "0.5", "--max-queue", "1",
                 "--max-files", "1") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as slow:
            slow.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 1000\r\n\r\n0123456789")
            response = http.client.HTTPResponse(slow)
            response.begin()
            answer = json.loads(response.read())
        assert response.status == 408 and "read-timeout-s 0.5 s" in answer["error"]
        assert server.request("GET", "/healthz")[2]["queued_images"] == 0
        assert server.classify([GOOD])[0] == 200
