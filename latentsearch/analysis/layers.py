"""Derived metadata layers: fields latentsearch computes and writes into items' metadata (clusters,
outlier scores) so that filters and maps use them like any other field (``--where 'cluster = 3'``,
``--color-by cluster``). Each layer is recorded in the manifest under ``layers``: result tables and
the web page leave its fields out unless asked, and computing a layer again replaces it whole (an
item outside the new run loses the old values instead of keeping stale ones)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from latentsearch.collection import Collection


@dataclass(frozen=True)
class Layer:
    """A named set of metadata fields that one analysis writes."""

    name: str
    fields: tuple[str, ...]


CLUSTERS = Layer("clusters", ("cluster", "cluster_label"))
OUTLIERS = Layer("outliers", ("outlier_score", "outlier"))


def layer_fields(manifest: Mapping[str, Any]) -> frozenset[str]:
    """The metadata fields of every layer a collection's manifest records."""
    layers = manifest.get("layers") or {}
    return frozenset(f for info in layers.values() for f in info.get("fields", ()))


def without_layers(metadata: Mapping[str, Any] | None, hidden: frozenset[str]) -> dict[str, Any] | None:
    """``metadata`` without the layer fields ``hidden`` (for display)."""
    if metadata is None:
        return None
    return {k: v for k, v in metadata.items() if k not in hidden}


def write_layer(collection: Collection, layer: Layer, values: Mapping[str, Mapping[str, Any]], info: dict) -> None:
    """Replace ``layer``: set ``values`` (id -> the layer's fields), remove the layer's fields from
    every other item carrying them, and record the layer (with ``info``) in the manifest."""
    stale = set()
    for name in layer.fields:
        ids, _ = collection.matching_vectors({name: {"$ne": None}})
        stale.update(ids)
    cleared = dict.fromkeys(layer.fields)  # a JSON merge patch's null removes the field
    updates = {item_id: cleared for item_id in stale - set(values)}
    updates.update(values)
    collection.update_metadata(updates)
    layers = dict(collection.manifest.get("layers") or {})
    layers[layer.name] = {"fields": list(layer.fields), **info}
    collection.backend.write_manifest({"layers": layers})
