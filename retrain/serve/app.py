"""The HTTP API of `retrain serve` (FastAPI; its OpenAPI page is /docs) and the page at /.

Every answer is JSON, errors included: {"error": reason, "hint": what to do}, with the
fitting status. What no route expected becomes a JSON 500 without a traceback; the
server goes on either way."""
import asyncio
import contextlib
import hmac
from importlib import resources
from typing import List, Optional

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ..version import __version__
from ..errors import RequestRefused
from .uploads import read_uploads

__all__ = ["create_app"]

PAGE_POLICY = ("default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; "
               "script-src 'unsafe-inline'; connect-src 'self'")   # no CDN, no other host


class Prediction(BaseModel):
    label: str
    probability: float


class Result(BaseModel):
    file: str
    top: List[Prediction]
    prediction: Optional[str] = None      # with --min-confidence: the label, or "unknown"


class ClassifyAnswer(BaseModel):
    results: List[Result]


class Refusal(BaseModel):
    error: str
    hint: Optional[str] = None
    files: Optional[list] = None


_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}
_REFUSALS = {status: {"model": Refusal, "description": text} for status, text in (
    (400, "empty body or malformed multipart"), (401, "missing or wrong API key"),
    (408, "the body took longer than --read-timeout-s to arrive"),
    (413, "over --max-upload-mb, or more than --max-files images"),
    (415, "neither multipart nor image/*"), (422, "an image cannot be decoded, or top_k is "
                                                 "not a positive whole number"),
    (503, "the queue is full (--max-queue): try again after Retry-After seconds"))}


def refusal(status, message, hint=None, headers=None, **extra):
    body = {"error": message, **({"hint": hint} if hint else {}), **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(batcher, card, limits):
    """The ASGI app: `batcher` (batcher.Batcher) answers classify requests, `card` is the
    JSON of GET /v1/model, `limits` the uploads.UploadLimits."""
    # FastAPI's own /docs loads Swagger UI from a CDN, and a server may have no network:
    # fastapi-offline serves the same Swagger UI (v5) from its package instead.
    app = FastAPIOffline(title="retrain serve", version=__version__, redoc_url=None,
                  description=f"The image classifier {card['file']!r} over HTTP: POST images "
                              "to /v1/classify; GET /v1/model describes it.")

    @app.exception_handler(RequestRefused)
    async def refused(request, error):
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        return refusal(error.status, str(error), error.hint, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, error):
        return refusal(error.status_code, str(error.detail), headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request, error):       # then Guard keeps the traceback from uvicorn
        return refusal(500, f"unexpected {type(error).__name__}: {error}",
                       hint="this is a bug in retrain serve; please report it")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error):
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return refusal(422, f"invalid request: {where}")

    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/healthz", summary="ready: the model is loaded and the server answers")
    async def healthz():
        return {"status": "ready", "queued_images": batcher.admitted,
                "max_queue": batcher.options.max_queue, **batcher.served}

    @app.get("/v1/model", summary="labels, input size, backbone, runtime, stored metrics, "
                                  "provenance", responses={401: _REFUSALS[401]})
    async def model_card():
        return card

    @app.post("/v1/classify", summary="the top-k classes of each image",
              response_model=ClassifyAnswer, responses=_REFUSALS, openapi_extra=_UPLOAD_BODY)
    async def classify(request: Request,
                       top_k: int = Query(3, ge=1, description="classes per image")):
        return await _classify(request, top_k, batcher, limits)

    return app


async def _classify(request, top_k, batcher, limits):
    batcher.reserve(1)                     # before reading anything: a full queue costs nothing
    reserved, uploads = 1, []
    try:
        uploads = await read_uploads(request, limits)
        batcher.reserve(len(uploads) - 1)
        reserved = len(uploads)
        answers = await batcher.classify([u.file for u in uploads], top_k)
    finally:
        batcher.release(reserved)
        for upload in uploads:
            with contextlib.suppress(Exception):
                upload.file.close()
    failed = [{"file": u.name, "error": a["error"]} for u, a in zip(uploads, answers)
              if a is not None and "error" in a]
    if failed:
        return refusal(422, f"{len(failed)} of {len(uploads)} image(s) cannot be classified; "
                            f"{failed[0]['file']}: {failed[0]['error']}", files=failed)
    return JSONResponse({"results": [{"file": u.name, **a} for u, a in zip(uploads, answers)]})


class Guard:
    """ASGI middleware around the app: the API key on /v1/*, one access-log line per
    request (`log(line)`, None for none), and a JSON 500 for anything unexpected."""

    def __init__(self, app, api_key=None, log=None):
        self.app, self.api_key, self.log = app, api_key, log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop, status = asyncio.get_running_loop(), {"code": None}
        started = loop.time()

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.api_key and scope["path"].startswith("/v1/") and not self._allowed(scope):
                await refusal(401, "missing or wrong API key",
                              hint="send the header Authorization: Bearer KEY",
                              headers={"WWW-Authenticate": "Bearer"})(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        except Exception as error:  # noqa: BLE001  (no traceback reaches a client)
            if status["code"] is None:
                await refusal(500, f"unexpected {type(error).__name__}: {error}",
                              hint="this is a bug in retrain serve; please report it")(
                    scope, receive, sending)
        if self.log is not None:
            self._log(scope, status["code"], loop.time() - started)

    def _allowed(self, scope):
        sent = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(sent, b"Bearer " + self.api_key.encode("utf-8"))

    def _log(self, scope, code, seconds):
        client = scope.get("client") or ("-", 0)
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope["path"] + (f"?{query}" if query else "")
        self.log(f'{client[0]}:{client[1]} "{scope["method"]} {target}" {code} '
                 f"{seconds * 1000:.1f} ms")
