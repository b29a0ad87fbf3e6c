"""The JSON bodies of the HTTP API: request models (strict, bounded by latentsearch.limits) and the
shapes of its answers. The search body is derived from :class:`~latentsearch.SearchRequest`, so a
search option added there appears here, with its description and bounds, without touching the server."""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from latentsearch import limits
from latentsearch.analysis.latent import PROJECTIONS
from latentsearch.encoders.passages import DEFAULT_MAX_PASSAGES, MAX_PASSAGES_LIMIT
from latentsearch.records import INCLUDE_FIELDS
from latentsearch.search.request import SearchRequest
from latentsearch.search.tuning import DEFAULT_SAMPLE, MAX_SAMPLE


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: str = Field(description="What was wrong, where, and what to do, in one line.")
    type: str | None = Field(None, description="The library's exception class, for errors the engine raised.")


class JobStarted(BaseModel):
    job: str = Field(description="The job id.")
    status: str = Field(description="Where to poll the job's progress: /api/jobs/{job}.")


# Bounds from latentsearch.limits, so the schema (and /docs) states what the library enforces.
def _k() -> Any:
    return Field(10, ge=1, le=limits.MAX_K, description=f"Number of results, 1 to {limits.MAX_K:,}.")


def _seed() -> Any:
    return Field(0, ge=0, le=limits.MAX_SEED)


class Body(BaseModel):
    """A JSON request body, validated strictly: a value of the wrong JSON type is refused (422), never
    coerced (``"background": 0`` is not false, ``"seed": false`` is not 0), as the schema says."""

    model_config = ConfigDict(strict=True)


class LabelledQueryBody(Body):
    query: str = Field(min_length=1, description="A query text.")
    relevant: list[str] = Field(min_length=1, max_length=1_000, description="Ids of the items answering it.")


class TuneBody(Body):
    queries: list[LabelledQueryBody] | None = Field(None, max_length=1_000, description="Labelled queries.")
    sample: int = Field(DEFAULT_SAMPLE, ge=0, le=MAX_SAMPLE, description="Pseudo-queries made from its texts.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    reset: bool = Field(False, description="Forget the tuned fusion instead: back to the default.")


class CreateBody(Body):
    name: str
    encoder: str = "minilm"
    index: str = "auto"
    metric: str = "cosine"
    dim: int | None = Field(None, ge=1, le=limits.MAX_DIM)
    stride: int | None = Field(None, ge=1, le=100_000, description="Tokens between passage starts (long texts).")
    max_passages: int = Field(
        DEFAULT_MAX_PASSAGES, ge=1, le=MAX_PASSAGES_LIMIT, description="Passages per text, at most."
    )


class ItemBody(Body):
    id: str
    text: str | None = None
    uri: str | None = None
    vector: list[float] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddBody(Body):
    items: list[ItemBody]
    upsert: bool = False
    background: bool = Field(False, description="Run as a job: returns a job id to poll at /api/jobs/{id}.")


class IdsBody(Body):
    ids: list[str]


class MetadataBody(Body):
    updates: dict[str, dict[str, Any]] = Field(
        description='Fields to merge into each item\'s metadata by id: {"doc-1": {"reviewed": true}}; null removes one.'
    )


# --- search: derived from the library's request ----------------------------------------------------------

# What to search for: exactly one of these is given (not null). The schema says so (oneOf), and the
# route answers 400 otherwise, with the same one-line error as every other refusal of the engine.
SEARCH_TARGETS = ("query", "vector", "like")
# The JSON types of SearchRequest fields whose Python type is wider than JSON (an image, a numpy array);
# every other field's type is its annotation in SearchRequest.
SEARCH_JSON_TYPES: dict[str, Any] = {
    "query": str | None,
    "vector": list[float] | None,
    "like": str | None,
    "include": list[Literal[INCLUDE_FIELDS]] | None,  # type: ignore[valid-type]
}
BOUNDS = ("ge", "gt", "le", "lt")


class _SearchBase(Body):
    model_config = ConfigDict(
        strict=True,
        json_schema_extra={
            "oneOf": [{"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in SEARCH_TARGETS]
        },
    )


def search_body_model(request_type: type = SearchRequest, name: str = "SearchBody") -> type[BaseModel]:
    """A strict request model with the fields of the dataclass ``request_type``: each field's JSON type
    (:data:`SEARCH_JSON_TYPES`, else its annotation), default, description and bounds (``ge``/``le``...
    from its metadata), and a schema that asks for exactly one of :data:`SEARCH_TARGETS`."""
    hints = typing.get_type_hints(request_type)
    fields: dict[str, Any] = {}
    for spec in dataclasses.fields(request_type):
        options = {key: spec.metadata[key] for key in BOUNDS if key in spec.metadata}
        if spec.default is not dataclasses.MISSING:
            options["default"] = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            options["default_factory"] = spec.default_factory
        json_type = SEARCH_JSON_TYPES.get(spec.name, hints[spec.name])
        fields[spec.name] = (json_type, Field(description=spec.metadata.get("description"), **options))
    return create_model(
        name,
        __base__=_SearchBase,
        __doc__="A search: exactly one of query, vector or like, and the options of latentsearch.SearchRequest.",
        __module__=__name__,
        **fields,
    )


SearchBody = search_body_model()


def search_request(body: BaseModel) -> SearchRequest:
    """The library's request for a search body (its fields are SearchRequest's, by construction)."""
    return SearchRequest(**{spec.name: getattr(body, spec.name) for spec in dataclasses.fields(SearchRequest)})


# --- recommendations and analysis ------------------------------------------------------------------------


class RecommendBody(Body):
    positive: list[Any] | None = None
    negative: list[Any] | None = None
    user: str | None = None
    k: int = _k()
    strategy: str = "average"
    diversity: float = 0.0
    where: dict[str, Any] | str | None = None
    exclude: list[str] = Field(default_factory=list)


class HistoryBody(Body):
    history: list[Any]
    k: int = _k()
    half_life: float | None = None
    where: dict[str, Any] | str | None = None
    diversity: float = 0.0


class CheckBody(Body):
    texts: list[str] | None = None
    vectors: list[list[float]] | None = None
    method: str = "knn"
    k: int = _k()
    contamination: float | None = None
    fpr: float | None = None


class ClustersBody(Body):
    n: Annotated[int, Field(ge=1, le=limits.MAX_CLUSTERS)] | Literal["auto"] = 8
    where: dict[str, Any] | str | None = None
    write: bool = True
    seed: int = _seed()
    words: Annotated[int, Field(ge=1, le=limits.MAX_LABEL_WORDS)] = 5
    bigrams: bool = False


class MapJobBody(Body):
    """A projection to compute in the background (what ``GET .../map`` would compute while the client waits)."""

    method: Literal[PROJECTIONS] = "umap"  # type: ignore[valid-type]
    dim: int = Field(2, ge=2, le=3)
    sample: int | None = Field(None, ge=1, le=limits.MAX_SAMPLE, description="At most this many items (seeded).")
    seed: int = _seed()
