"""`retrain serve MODEL`: its options, and the steps in order (load the model, bind, say
where, serve), kept apart from cli.py; `say` and `log` are the CLI's printers."""
import argparse
import os

from .cli_usage import HelpFormatter
from .distribution import pip_install
from .errors import ConfigError, UsageError
from .model_file import load_model_file
from .options import add_options
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
    add_options(p, ("host", "port"))
    p.add_argument("--api-key", metavar="KEY", default=argparse.SUPPRESS,
                   help="require `Authorization: Bearer KEY` on /v1/* (default: "
                        "$RETRAIN_API_KEY if set, else no key)")
    add_options(p, ("max_batch", "max_wait_ms", "max_queue", "max_upload_mb", "max_files",
                    "read_timeout_s", "upload_workers", "runtime", "precision",
                    "min_confidence", "tta_override", "quiet_log"))
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
    """What no one option's constraint (options.OPTIONS) can see: two of them together."""
    if args.max_files > args.max_queue:
        raise UsageError(f"--max-files {args.max_files} is over --max-queue {args.max_queue}: "
                         "such a request could never be admitted.",
                         hint="Lower --max-files or raise --max-queue.")
