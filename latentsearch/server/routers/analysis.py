"""Analysis: outliers, checking new inputs, maps (projections, the web page's map view, projections
computed in the background), clusters, interpolation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from latentsearch import limits
from latentsearch.analysis.plots import map_payload
from latentsearch.errors import InvalidInputError
from latentsearch.server.auth import reader, writer
from latentsearch.server.jobs import Progress, map_job_key
from latentsearch.server.models import CheckBody, ClustersBody, JobStarted, MapJobBody
from latentsearch.server.state import State
from latentsearch.workflows.mapview import FALLBACK_SAMPLE, map_view

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


@router.get("/api/collections/{name}/map/view", dependencies=[Depends(reader)])
def map_view_data(
    name: str, server: State, sample: int = Query(FALLBACK_SAMPLE, ge=1, le=limits.MAX_SAMPLE)
) -> dict[str, Any]:
    """The web page's map: the cached UMAP projection, else PCA of at most ``sample`` items, with
    ``preferred`` (umap), ``ready`` (whether this is it) and ``job`` (the id of the job computing it, if
    one runs). Never computes UMAP: ``POST .../map/jobs`` does, in the background."""
    col = server.registry.get(name)
    view = map_view(col, sample=sample)
    job = None if view.ready else server.jobs.running(map_job_key(name, MapJobBody(method=view.preferred)))
    return {**map_payload(col, view.projection), "preferred": view.preferred, "ready": view.ready, "job": job}


@router.post(
    "/api/collections/{name}/map/jobs",
    status_code=202,
    dependencies=[Depends(reader)],  # as GET .../map: it computes a projection and caches it, nothing else
)
def start_projection(name: str, body: MapJobBody, server: State) -> JobStarted:
    """Compute a projection in the background (cached as ``GET .../map`` caches it); poll the job at
    ``/api/jobs/{id}``. While one runs, asking for the same projection again returns its job."""
    col = server.registry.get(name)

    def work(progress: Progress) -> None:
        col.project(body.method, dim=body.dim, sample=body.sample, seed=body.seed, stage=progress.stage)

    job = server.jobs.start(work, 1, key=map_job_key(name, body))
    return JobStarted(job=job, status=f"/api/jobs/{job}")


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
