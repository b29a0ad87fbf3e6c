"""Collections: list, create, describe, drop."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from latentsearch.server.auth import reader, writer
from latentsearch.server.models import CreateBody
from latentsearch.server.state import State

router = APIRouter()


@router.get("/api/collections", dependencies=[Depends(reader)])
def list_collections(server: State) -> list[dict[str, Any]]:
    return server.registry.describe_all()


@router.post("/api/collections", status_code=201, dependencies=[Depends(writer)])
def create_collection(body: CreateBody, server: State) -> dict[str, Any]:
    options = body.model_dump(exclude={"name"})
    return server.registry.create(body.name, **options).info()


@router.get("/api/collections/{name}", dependencies=[Depends(reader)])
def info(name: str, server: State) -> dict[str, Any]:
    return server.registry.get(name).info()


@router.delete("/api/collections/{name}", dependencies=[Depends(writer)])
def drop(name: str, server: State) -> dict[str, Any]:
    server.registry.drop(name)
    return {"dropped": name}
