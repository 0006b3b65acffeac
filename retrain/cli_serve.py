"""`retrain serve MODEL`: its options, and the steps in order (load the model, bind, say
where, serve), kept apart from cli.py; `say` and `log` are the CLI's printers."""
import argparse
import os

from .cli_options import add_runtime_choice
from .cli_recipes import add_min_confidence_option, add_tta_option
from .cli_usage import HelpFormatter, positive_int
from .distribution import pip_install
from .errors import ConfigError, UsageError
from .model_file import load_model_file
from .runtimes import load_runtime

__all__ = ["SERVE_INSTALL", "add_serve_parser", "run_serve"]
SERVE_INSTALL = pip_install("serve")
_STACK = ("fastapi", "starlette", "uvicorn", "multipart", "python_multipart", "pydantic",
          "pydantic_core", "h11", "anyio")


def add_serve_parser(commands, func):
    p = commands.add_parser(
        "serve", formatter_class=HelpFormatter, help="serve a model over HTTP, with a page to "
        "try it", description="Serve MODEL over HTTP: POST images to /v1/classify (the same "
        "answers as `retrain classify`), GET /v1/model, GET /healthz, the API's documentation "
        "at /docs and a page to try it at /. Concurrent requests are batched. Stops, after "
        f"answering the requests in flight, on SIGTERM or Ctrl-C. Needs {SERVE_INSTALL}.")
    p.add_argument("model", metavar="MODEL", help="model file from `retrain fit`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (anything but loopback is reachable from other "
                        "machines: use --api-key)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free one)")
    p.add_argument("--api-key", metavar="KEY", default=argparse.SUPPRESS,
                   help="require `Authorization: Bearer KEY` on /v1/* (default: "
                        "$RETRAIN_API_KEY if set, else no key)")
    p.add_argument("--max-batch", type=positive_int, default=32, help="images per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more images after its first")
    p.add_argument("--max-queue", type=positive_int, default=256,
                   help="images admitted at once; beyond, 503 with Retry-After")
    p.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="largest request body (413 beyond)")
    p.add_argument("--max-files", type=positive_int, default=32,
                   help="most images in one request (413 beyond)")
    p.add_argument("--read-timeout-s", type=float, default=60.0,
                   help="longest a request's body may take to arrive (408 beyond)")
    p.add_argument("--workers", type=positive_int, default=2,
                   help="threads decoding and resizing uploads")
    add_runtime_choice(p)
    add_min_confidence_option(p)
    add_tta_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no access-log lines")
    p.set_defaults(func=func)


def run_serve(args, say, log):
    """Load, bind, `say` the address, serve until a signal; returns the exit status."""
    server = _import_server()
    _check(args)
    model = load_model_file(args.model)
    options = server.ServeOptions(
        api_key=getattr(args, "api_key", None) or os.environ.get("RETRAIN_API_KEY") or None,
        batch=server.BatchOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                                  max_queue=args.max_queue, workers=args.workers,
                                  min_confidence=args.min_confidence, tta=args.tta),
        limits=server.UploadLimits(max_bytes=int(args.max_upload_mb * 2 ** 20),
                                   max_files=args.max_files,
                                   read_timeout_s=args.read_timeout_s))
    runner = load_runtime(model, args.runtime, args.precision)
    server.warm_up(model, runner)
    sock = server.bind(args.host, args.port)

    def ready():
        host, port = sock.getsockname()[:2]
        where = f"[{host}]" if ":" in host else host
        say(f"serving {args.model} on http://{where}:{port} with {runner.name} in "
            f"{runner.precision} (the page: /, the API: /docs)")
        if not server.is_loopback(args.host):
            say(f"note: --host {args.host} is reachable from other machines"
                + ("" if options.api_key else "; anyone who reaches it can use it (--api-key)"))

    stopped_by = server.serve(model, args.model, sock, options, log, ready, runner)
    say(f"stopped ({stopped_by or 'done'}); the requests in flight were answered")
    return 130 if stopped_by == "SIGINT" else 0


def _import_server():
    try:
        from .serve import server
    except ImportError as error:
        if (error.name or "").split(".")[0] not in _STACK:
            raise
        raise ConfigError(f"retrain serve needs FastAPI and uvicorn, which are not installed "
                          f"here (no module named {error.name!r}).",
                          hint=f"Install them with: {SERVE_INSTALL}") from None
    return server


def _check(args):
    if not 0 < args.max_upload_mb <= 4096:
        raise UsageError(f"--max-upload-mb must be more than 0 and at most 4096. Received: "
                         f"{args.max_upload_mb:g}.", hint="For example --max-upload-mb 20.")
    if not 0 < args.read_timeout_s <= 86_400:
        raise UsageError(f"--read-timeout-s must be more than 0 and at most 86400. Received: "
                         f"{args.read_timeout_s:g}.", hint="For example --read-timeout-s 60.")
    if not 0 <= args.max_wait_ms <= 10_000:
        raise UsageError(f"--max-wait-ms must be from 0 to 10000. Received: "
                         f"{args.max_wait_ms:g}.", hint="For example --max-wait-ms 5.")
    if args.max_files > args.max_queue:
        raise UsageError(f"--max-files {args.max_files} is over --max-queue {args.max_queue}: "
                         "such a request could never be admitted.",
                         hint="Lower --max-files or raise --max-queue.")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535. Received: {args.port}.",
                         hint="For example --port 8000.")
