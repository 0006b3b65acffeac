"""`retrain serve`: bind, then serve the model with uvicorn until SIGTERM or Ctrl-C.

The model is loaded and run once, and the socket bound, before anything is served, so a
model that cannot load or run, or a port that is taken, is an error before the address is
printed.
SIGTERM and Ctrl-C stop accepting connections, let the requests in flight finish, then
return."""
import asyncio
import contextlib
import ipaddress
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import uvicorn

from ..classify import model_probabilities
from ..export import describe
from ..runtimes import runtime_record
from .app import Guard, create_app
from .batcher import BatchOptions, Batcher
from .uploads import UploadLimits

__all__ = ["ServeOptions", "bind", "is_loopback", "model_card", "serve", "warm_up"]


@dataclass(frozen=True)
class ServeOptions:
    api_key: Optional[str] = None     # required as `Authorization: Bearer KEY` on /v1/*
    batch: BatchOptions = field(default_factory=BatchOptions)
    limits: UploadLimits = field(default_factory=UploadLimits)


def is_loopback(host):
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host, port):
    """A listening TCP socket on host:port (port 0: any free one); OSError if it cannot be
    had. Connections made from now on wait in its backlog until `serve` accepts them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def model_card(model, path, runner=None):
    """GET /v1/model: what `retrain info --json` shows, with the input size, the file, and
    the runtime that computes (runner: a runtimes.Runtime; None: the numpy engine)."""
    info = describe(model)
    record = runtime_record(runner) if runner is not None else {"runtime": "numpy",
                                                                "precision": "f32"}
    return dict(info, file=Path(path).name, input_size=(info["preprocessing"] or {}).get(
        "input_size"), **record)


def serve(model, path, sock, options=ServeOptions(), log=None, ready=None, runner=None):
    """Serve `model` (loaded from `path`, run by `runner`, a runtimes.Runtime; None: the
    numpy engine) on the bound `sock` until SIGTERM or SIGINT; `log(line)` gets one
    access-log line per request, `ready()` is called once the signals are in hand (the CLI
    prints the address then). Returns the signal's name."""
    stop = _Stop()
    with stop.capturing():
        if ready is not None:
            ready()
        return asyncio.run(_serve(model, path, sock, options, log, stop, runner))


def warm_up(model, runner=None):
    """One forward pass before serving: the engine prepares its inference plan on the first
    (a runtime checks itself against numpy), so the first client does not wait for it, and
    a model that cannot run fails here."""
    height, width = model.metadata["preprocessing"]["input_size"]
    model_probabilities(model, np.zeros((1, height, width, 3), np.float32), runner)


async def _serve(model, path, sock, options, log, stop, runner):
    batcher = Batcher(model, options.batch, runner)
    app = create_app(batcher, model_card(model, path, runner), options.limits)
    config = uvicorn.Config(Guard(app, options.api_key, log), lifespan="off", log_config=None,
                            access_log=False, log_level="warning",
                            timeout_graceful_shutdown=None)
    server = _Server(config, stop)
    batching = asyncio.create_task(batcher.run())
    try:
        await server.serve(sockets=[sock])
    finally:
        batching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await batching
        batcher.close()
    return stop.signal


class _Stop:
    """SIGTERM and SIGINT from the moment the address is printed: before uvicorn runs, the
    first one is remembered and stops it as it starts; then each goes to uvicorn's own
    handler (stop accepting, finish the requests in flight; a second Ctrl-C forces)."""

    def __init__(self):
        self.signal, self.server = None, None

    @contextlib.contextmanager
    def capturing(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self._handle)
                    for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _handle(self, number, frame):
        self.signal = self.signal or signal.Signals(number).name
        if self.server is not None:
            self.server.handle_exit(number, frame)


class _Server(uvicorn.Server):
    """uvicorn's server with the signals left to _Stop: uvicorn's own capture would raise
    each signal again once stopped, and the CLI would take SIGTERM for an interruption."""

    def __init__(self, config, stop):
        super().__init__(config)
        stop.server = self
        self.should_exit = stop.signal is not None

    @contextlib.contextmanager
    def capture_signals(self):
        yield
