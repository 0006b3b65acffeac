"""`retrain serve`: bind, then serve the model with uvicorn until SIGTERM or Ctrl-C.

The model is loaded and run once, and the socket bound, before anything is served, so a
model that cannot load or a port that is taken is an error before the address is printed.
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

import numpy as np
import uvicorn

from ..classify import model_probabilities
from ..export import describe
from .app import Guard, create_app
from .batcher import BatchOptions, Batcher
from .uploads import UploadLimits

__all__ = ["ServeOptions", "bind", "is_loopback", "model_card", "serve"]


@dataclass(frozen=True)
class ServeOptions:
    api_key: str = None
    batch: BatchOptions = field(default_factory=BatchOptions)
    limits: UploadLimits = field(default_factory=UploadLimits)
    runtime: str = "numpy"


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


def model_card(model, path, runtime):
    """GET /v1/model: what `retrain info --json` shows, with the input size, the runtime
    and the file."""
    info = describe(model)
    return dict(info, file=Path(path).name, runtime=runtime,
                input_size=(info["preprocessing"] or {}).get("input_size"))


def serve(model, path, sock, options=ServeOptions(), log=None):
    """Serve `model` (loaded from `path`) on the bound `sock` until SIGTERM or SIGINT;
    `log(line)` gets one access-log line per request. Returns the signal's name."""
    _warm_up(model)
    return asyncio.run(_serve(model, path, sock, options, log))


def _warm_up(model):
    """One forward pass before serving: the engine prepares its inference plan on the first,
    so the first client does not wait for it (and a model that cannot run fails here)."""
    height, width = model.metadata["preprocessing"]["input_size"]
    model_probabilities(model, np.zeros((1, height, width, 3), np.float32))


async def _serve(model, path, sock, options, log):
    batcher = Batcher(model, options.batch)
    app = create_app(batcher, model_card(model, path, options.runtime), options.limits)
    config = uvicorn.Config(Guard(app, options.api_key, log), lifespan="off", log_config=None,
                            access_log=False, log_level="warning",
                            timeout_graceful_shutdown=None)
    server = _Server(config)
    batching = asyncio.create_task(batcher.run())
    try:
        await server.serve(sockets=[sock])
    finally:
        batching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await batching
        batcher.close()
    return server.stopped_by


class _Server(uvicorn.Server):
    """uvicorn's server, but a signal only stops it: uvicorn would raise the signal again
    once it has stopped, and the CLI would take that SIGTERM for an interruption."""
    stopped_by = None

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(number, frame):
            self.stopped_by = self.stopped_by or signal.Signals(number).name
            self.handle_exit(number, frame)

        previous = {number: signal.signal(number, stop)
                    for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
