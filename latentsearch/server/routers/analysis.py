"""Analysis: outliers, checking new inputs, maps (projections), clusters, interpolation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from latentsearch import limits
from latentsearch.analysis.plots import map_payload
from latentsearch.errors import InvalidInputError
from latentsearch.server.auth import reader, writer
from latentsearch.server.models import CheckBody, ClustersBody
from latentsearch.server.state import State

router = APIRouter()


@router.get("/api/collections/{name}/outliers", dependencies=[Depends(reader)])
def outliers(
    name: str,
    server: State,
    method: str = "knn",
    k: int = Query(10, ge=1, le=limits.MAX_K),
    contamination: float | None = None,
    fpr: float | None = None,
    top: int = Query(20, ge=0, le=limits.MAX_K),
) -> list[dict[str, Any]]:
    found = server.registry.get(name).outliers(method, k=k, contamination=contamination, fpr=fpr, top=top)
    return [r.to_dict() for r in found]


@router.post("/api/collections/{name}/check", dependencies=[Depends(reader)])
def check(name: str, body: CheckBody, server: State) -> list[dict[str, Any]]:
    if (body.texts is None) == (body.vectors is None):
        raise InvalidInputError("give texts or vectors to check")
    inputs = body.texts if body.texts is not None else body.vectors
    server.check_batch(len(inputs))
    found = server.registry.get(name).check(
        inputs, method=body.method, k=body.k, contamination=body.contamination, fpr=body.fpr
    )
    return [r.to_dict() for r in found]


@router.get("/api/collections/{name}/map", dependencies=[Depends(reader)])
def map_data(
    name: str,
    server: State,
    method: str = "pca",
    dim: int = Query(2, ge=2, le=3),
    sample: int | None = Query(None, ge=1, le=limits.MAX_SAMPLE),
    seed: int = Query(0, ge=0, le=limits.MAX_SEED),
) -> dict[str, Any]:
    col = server.registry.get(name)
    return map_payload(col, col.project(method, dim=dim, sample=sample, seed=seed))


@router.post("/api/collections/{name}/clusters", dependencies=[Depends(writer)])
def clusters(name: str, body: ClustersBody, server: State) -> list[dict[str, Any]]:
    found = server.registry.get(name).clusters(
        body.n, where=body.where, write=body.write, seed=body.seed, words=body.words, bigrams=body.bigrams
    )
    return [c.to_dict() for c in found]


@router.get("/api/collections/{name}/interpolate", dependencies=[Depends(reader)])
def interpolate(
    name: str, start: str, end: str, server: State, steps: int = Query(8, ge=2, le=limits.MAX_STEPS)
) -> list[dict[str, Any]]:
    return [s.to_dict() for s in server.registry.get(name).interpolate(start, end, steps=steps)]
