"""Items: add (now or as a background job), upload images, get, delete, update metadata, thumbnails."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from latentsearch.errors import InvalidInputError, NotFoundError
from latentsearch.io import items as rows_io
from latentsearch.server.auth import reader, writer
from latentsearch.server.models import AddBody, IdsBody, JobStarted, MetadataBody
from latentsearch.server.state import State

router = APIRouter()


@router.post(
    "/api/collections/{name}/items",
    dependencies=[Depends(writer)],
    responses={202: {"model": JobStarted, "description": "With background: the job started; poll its status"}},
)
def add_items(name: str, body: AddBody, server: State) -> Any:
    server.check_batch(len(body.items))
    col = server.registry.get(name)
    if col.manifest.get("modality") in ("image", "joint") and any(it.uri for it in body.items):
        # A uri would make the server read a file the client names, anywhere on its disk.
        raise InvalidInputError(
            f"collection {col.name!r} encodes images: upload them with POST /api/collections/{col.name}/images"
        )
    rows = [dict(it) for it in body.items]  # shallow: the vectors are not copied
    if body.background:
        job = server.jobs.start(
            lambda progress: rows_io.add_items(col, rows, upsert=body.upsert, progress=progress), len(rows)
        )
        return JSONResponse({"job": job, "status": f"/api/jobs/{job}"}, status_code=202)
    return {"added": rows_io.add_items(col, rows, upsert=body.upsert), "count": col.count()}


@router.post("/api/collections/{name}/images", dependencies=[Depends(writer)])
def add_images(
    name: str, server: State, files: list[UploadFile] = File(...), upsert: bool = Form(False)
) -> dict[str, Any]:
    server.check_batch(len(files))
    col = server.registry.get(name)
    added, ids = rows_io.add_image_files(
        col, [(upload.filename or "upload", upload.file) for upload in files], upsert=upsert
    )
    return {"added": added, "ids": ids, "count": col.count()}


@router.get("/api/collections/{name}/items", dependencies=[Depends(reader)])
def get_items(name: str, server: State, ids: list[str] = Query(...), vectors: bool = False) -> list[dict[str, Any]]:
    server.check_batch(len(ids))
    return [item.to_dict() for item in server.registry.get(name).get(ids, with_vectors=vectors)]


@router.post("/api/collections/{name}/items/delete", dependencies=[Depends(writer)])
def delete_items(name: str, body: IdsBody, server: State) -> dict[str, Any]:
    server.check_batch(len(body.ids))
    col = server.registry.get(name)
    return {"deleted": col.delete(body.ids), "count": col.count()}


@router.post("/api/collections/{name}/items/metadata", dependencies=[Depends(writer)])
def update_metadata(name: str, body: MetadataBody, server: State) -> dict[str, Any]:
    server.check_batch(len(body.updates))
    return {"updated": server.registry.get(name).update_metadata(body.updates)}


@router.get("/api/collections/{name}/thumbnails/{item_id:path}", dependencies=[Depends(reader)])
def thumbnail(name: str, item_id: str, server: State) -> Response:
    found = server.registry.get(name).thumbnails([item_id])
    if item_id not in found:
        raise NotFoundError(f"item {item_id!r} has no thumbnail in collection {name!r}")
    return Response(found[item_id], media_type="image/jpeg")


@router.get("/api/jobs/{job_id}", dependencies=[Depends(reader)])
def job_status(job_id: str, server: State) -> dict[str, Any]:
    return server.jobs.get(job_id)
