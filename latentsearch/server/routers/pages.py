"""The web page (a single page over the API), its script, and the health check."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

WEB = Path(__file__).parents[1] / "web"  # latentsearch/server/web: the page and its script

router = APIRouter()


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html")


@router.get("/app.js", include_in_schema=False)
def script() -> FileResponse:
    return FileResponse(WEB / "app.js", media_type="text/javascript")


@router.get("/healthz", include_in_schema=False)
def health() -> dict[str, str]:
    return {"status": "ok"}
