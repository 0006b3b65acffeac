"""One request's images for `retrain serve`, read within limits: multipart `files`, or one
raw body with Content-Type image/*. Every upload is spooled to a temporary file past 64 KB,
so memory stays small whatever the clients send; too much data is refused (413) as soon as
it is seen, before the rest is read."""
import asyncio
from dataclasses import dataclass
from tempfile import SpooledTemporaryFile

from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from ..errors import RequestRefused
from ..options import default

__all__ = ["UploadLimits", "Upload", "read_uploads"]

SPOOL_BYTES = 64 * 1024
_HOW = ("send images as multipart/form-data `files` (curl -F files=@photo.jpg), or one image "
        "as the body with Content-Type image/* (curl --data-binary @photo.jpg -H "
        "'Content-Type: image/jpeg')")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = int(default("max_upload_mb") * 2**20)   # the body, multipart framing too
    max_files: int = default("max_files")                    # images in one request
    read_timeout_s: float = default("read_timeout_s")        # the whole body: a slow client
                                                             # frees its place


@dataclass
class Upload:
    name: str          # the multipart file name, or "body"
    file: object       # an open binary file, read from its start


class _Parser(MultiPartParser):
    spool_max_size = SPOOL_BYTES


async def read_uploads(request, limits):
    """[Upload, ...] of the request, or RequestRefused: 413 past max_bytes or max_files,
    415 for a Content-Type that is neither, 400 for an empty body or malformed multipart,
    408 if the body takes longer than read_timeout_s to arrive (a client that trickles it
    would otherwise hold its place in the queue for ever). The caller closes the files."""
    _check_length(request.headers, limits)
    try:
        return await asyncio.wait_for(_read(request, limits), limits.read_timeout_s)
    except asyncio.TimeoutError:
        raise RequestRefused(408, f"the body did not arrive within --read-timeout-s "
                             f"{limits.read_timeout_s:g} s", hint="send it faster, or "
                             "smaller") from None


async def _read(request, limits):
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    stream = _limited(request.stream(), limits.max_bytes)
    try:
        if kind == "multipart/form-data":
            return await _multipart(request.headers, stream, limits)
        if kind.startswith("image/"):
            return [Upload("body", await _spool(stream))]
    except ClientDisconnect:
        raise RequestRefused(400, "the client closed the connection before the whole body "
                             "arrived") from None
    raise RequestRefused(415, f"unsupported Content-Type {kind or '(none)'!r}", hint=_HOW)


def _check_length(headers, limits):
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.max_bytes:
        raise _too_large(limits)


def _too_large(limits):
    return RequestRefused(413, f"the request is over --max-upload-mb "
                          f"{limits.max_bytes / 2 ** 20:g} MB",
                          hint="send smaller images, or fewer per request")


async def _limited(stream, max_bytes):
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > max_bytes:
            raise _too_large(UploadLimits(max_bytes=max_bytes))
        yield chunk


async def _spool(stream):
    file = SpooledTemporaryFile(max_size=SPOOL_BYTES)
    try:
        async for chunk in stream:
            file.write(chunk)
    except BaseException:
        file.close()
        raise
    if file.tell() == 0:
        file.close()
        raise RequestRefused(400, "the request body is empty", hint=_HOW)
    file.seek(0)
    return file


async def _multipart(headers, stream, limits):
    parser = _Parser(headers, stream, max_files=limits.max_files, max_fields=16,
                     max_part_size=SPOOL_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if error.message.startswith("Too many files"):
            raise RequestRefused(413, f"more than --max-files {limits.max_files} images in "
                                 "one request", hint="send them in several requests") from None
        raise RequestRefused(400, f"malformed multipart body: {error.message}",
                             hint=_HOW) from None
    uploads = [Upload(value.filename or "", value.file) for key, value in form.multi_items()
               if key == "files" and not isinstance(value, str)]
    others = sorted({key for key, value in form.multi_items()
                     if key != "files" or isinstance(value, str)})
    problem = (f"unexpected multipart field(s) {others}: only 'files' is read" if others else
               None if uploads else "no image in the multipart field 'files'")
    empty = [u.name or f"file {i + 1}" for i, u in enumerate(uploads) if _size(u.file) == 0]
    if empty and not problem:
        problem = f"empty file(s) in 'files': {', '.join(empty)}"
    if problem:
        await form.close()
        raise RequestRefused(400, problem, hint=_HOW)
    return uploads


def _size(file):
    size = file.seek(0, 2)
    file.seek(0)
    return size
