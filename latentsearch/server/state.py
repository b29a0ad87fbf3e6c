"""What the routes share, kept on the app (``app.state.server``) and handed to them as a dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from latentsearch.server.errors import TooLargeError
from latentsearch.server.jobs import Jobs
from latentsearch.server.registry import Registry


@dataclass
class ServerState:
    """One app's open collections, background jobs and batch limit."""

    registry: Registry
    jobs: Jobs
    max_batch: int

    def check_batch(self, n: int) -> None:
        """Refuse a request of more than ``max_batch`` items (413)."""
        if n > self.max_batch:
            raise TooLargeError(f"{n:,} items in one request, over the limit of {self.max_batch:,}: split the batch")


def server_state(request: Request) -> ServerState:
    """Route dependency: the app's :class:`ServerState`."""
    return request.app.state.server


State = Annotated[ServerState, Depends(server_state)]
