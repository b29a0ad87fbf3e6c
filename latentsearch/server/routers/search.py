"""Search (by text, vector, item or image) and recommendations."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, UploadFile

from latentsearch import limits
from latentsearch.search.tuning import LabelledQuery
from latentsearch.server.auth import reader, writer
from latentsearch.server.models import HistoryBody, RecommendBody, SearchBody, TuneBody, search_request
from latentsearch.server.state import State

router = APIRouter()


@router.post("/api/collections/{name}/search", dependencies=[Depends(reader)])
def search(name: str, body: SearchBody, server: State) -> list[dict[str, Any]]:  # type: ignore[valid-type]
    return [hit.to_dict() for hit in server.registry.get(name).search(search_request(body))]


@router.post("/api/collections/{name}/tune", dependencies=[Depends(writer)])
def tune(name: str, body: TuneBody, server: State) -> dict[str, Any]:
    """Tune the collection's fusion (or, with ``reset``, forget it); the report of ``latentsearch tune``."""
    col = server.registry.get(name)
    if body.reset:
        return {"reset": col.reset_search_tuning(), "fusion": col.search_fusion.to_dict()}
    queries = [LabelledQuery(q.query, tuple(q.relevant)) for q in body.queries] if body.queries else None
    return col.tune_search(queries, sample=body.sample, seed=body.seed).to_dict()


@router.post("/api/collections/{name}/search/image", dependencies=[Depends(reader)])
def search_image(
    name: str, server: State, file: UploadFile = File(...), k: int = Form(10, ge=1, le=limits.MAX_K)
) -> list[dict[str, Any]]:
    # The encoders read image files: the upload is one for the time of the search.
    with tempfile.NamedTemporaryFile(suffix=Path(file.filename or "q.jpg").suffix) as handle:
        shutil.copyfileobj(file.file, handle)
        handle.flush()
        return [hit.to_dict() for hit in server.registry.get(name).search(Path(handle.name), k=k)]


@router.post("/api/collections/{name}/recommend", dependencies=[Depends(reader)])
def recommend(name: str, body: RecommendBody, server: State) -> list[dict[str, Any]]:
    hits = server.registry.get(name).recommend(
        body.positive,
        body.negative,
        user=body.user,
        k=body.k,
        strategy=body.strategy,
        diversity=body.diversity,
        where=body.where,
        exclude=body.exclude,
    )
    return [hit.to_dict() for hit in hits]


@router.post("/api/collections/{name}/recommend/history", dependencies=[Depends(reader)])
def recommend_history(name: str, body: HistoryBody, server: State) -> list[dict[str, Any]]:
    history = [tuple(h) if isinstance(h, list) else h for h in body.history]  # JSON [id, time] pairs
    hits = server.registry.get(name).recommend_for(
        history, k=body.k, half_life=body.half_life, where=body.where, diversity=body.diversity
    )
    return [hit.to_dict() for hit in hits]
