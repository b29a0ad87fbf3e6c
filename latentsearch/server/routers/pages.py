"""The web page (a single page over the API), its script and icon, and the health check."""

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


@router.get("/favicon.svg", include_in_schema=False)
@router.get("/favicon.ico", include_in_schema=False)  # browsers ask for it unbidden: the same icon, no 404
def icon() -> FileResponse:
    return FileResponse(WEB / "favicon.svg", media_type="image/svg+xml")


@router.get("/healthz", include_in_schema=False)
def health() -> dict[str, str]:
    return {"status": "ok"}
