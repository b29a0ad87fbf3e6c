"""Running the app under uvicorn: in the foreground (``latentsearch serve``) or in a background thread."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI

from latentsearch.errors import InvalidInputError
from latentsearch.server.app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, create_app
from latentsearch.server.auth import is_loopback, load_keys


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` under uvicorn on a free port in a background thread; yields its base URL and stops
    it on exit (for notebooks, tests and load tests)."""
    import socket

    import uvicorn

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="latentsearch-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise InvalidInputError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def serve(
    home: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    keys_file: str | os.PathLike[str] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
    cors_origins: list[str] | None = None,
    ray_address: str | None = None,
) -> None:
    """Run the server under uvicorn; refuses a non-loopback address unless API keys are configured."""
    import uvicorn

    keys = load_keys(keys_file)
    if not keys and not is_loopback(host):
        raise InvalidInputError(
            f"refusing to serve on {host} without an API key: set LATENTSEARCH_API_KEY (or --keys-file), "
            "or bind to 127.0.0.1"
        )
    app = create_app(
        home, keys=keys, max_body=max_body, max_batch=max_batch, cors_origins=cors_origins, ray_address=ray_address
    )
    uvicorn.run(app, host=host, port=port, log_level="info")
