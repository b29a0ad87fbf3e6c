"""Commands that rank items: search (text, image, vector or like an item) and recommend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from latentsearch.cli.app import (
    HomeOption,
    JsonOption,
    command,
    console,
    escape,
    model_loading,
    open_collection,
    print_json,
    snippet,
    split_ids,
)
from latentsearch.errors import InvalidInputError


@command()
def search(
    name: str,
    query: Annotated[str | None, typer.Argument(help="Text to search for.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 10,
    where: Annotated[
        str | None,
        typer.Option(help='Metadata filter, e.g. \'lang = "en" and (year >= 2000 or tag in ("a", "b"))\'.'),
    ] = None,
    like: Annotated[str | None, typer.Option(help="Find items like this item id (itself excluded).")] = None,
    vector: Annotated[Path | None, typer.Option(help="A .npy file holding one query vector.")] = None,
    image: Annotated[Path | None, typer.Option(help="An image file to search by (image collections).")] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="vector (meaning), lexical (BM25 on words) or hybrid (both, fused; best for codes and names)."
        ),
    ] = "vector",
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: rrf (reciprocal rank) or weighted (scores).")] = "rrf",
    alpha: Annotated[float, typer.Option(help="Weighted fusion: weight of the vector score (0..1).")] = 0.5,
    rrf_k: Annotated[int, typer.Option(help="RRF constant: larger flattens the rank weights.")] = 60,
    explain: Annotated[bool, typer.Option("--explain", help="Show each mode's rank and score.")] = False,
    ef_search: Annotated[int | None, typer.Option(help="HNSW: candidates explored (recall vs speed).")] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF: lists probed (recall vs speed).")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search by text (vector, lexical or hybrid), by an image (--image), a vector (--vector) or an item (--like)."""
    from latentsearch import SearchRequest
    from latentsearch.io.inputs import load_vectors

    if sum(x is not None for x in (query, like, vector, image)) != 1:
        raise InvalidInputError("give exactly one of QUERY, --like ID, --image FILE or --vector FILE.npy")
    request = SearchRequest(
        query=image if image is not None else query,
        vector=load_vectors(vector, "query vector") if vector is not None else None,
        like=like,
        k=k,
        where=where,
        mode=mode,
        fusion=fusion,
        alpha=alpha,
        rrf_k=rrf_k,
        explain=explain,
        ef_search=ef_search,
        nprobe=nprobe,
    )
    with open_collection(name, home) as col, model_loading(col, request.needs_encoder):
        hits = col.search(request)
    print_hits(hits, as_json, explain=explain)


@command()
def recommend(
    name: str,
    like: Annotated[list[str] | None, typer.Option(help="Item ids to find more of (repeat or comma-separate).")] = None,
    unlike: Annotated[list[str] | None, typer.Option(help="Item ids to steer away from.")] = None,
    like_text: Annotated[list[str] | None, typer.Option(help="A text describing what to find more of.")] = None,
    user: Annotated[str | None, typer.Option(help="A user learned by fit-interactions.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of recommendations.")] = 10,
    strategy: Annotated[str, typer.Option(help="average or best_score (see --help of the Python API).")] = "average",
    diversity: Annotated[float, typer.Option(help="0 = most relevant, up to 1 = most varied (MMR).")] = 0.0,
    where: Annotated[str | None, typer.Option(help="Metadata filter expression.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Item ids never to recommend.")] = None,
    blend: Annotated[
        str | None, typer.Option(help="With --user: a content collection over the same ids to blend in.")
    ] = None,
    blend_weight: Annotated[float, typer.Option(help="Weight of the blended content ranking (0..1).")] = 0.5,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recommend items like some (--like, --like-text), unlike others (--unlike), or for a --user."""
    positive: list[Any] = split_ids(like) + [{"text": t} for t in like_text or []]
    negative = split_ids(unlike)
    if user is None and not positive:
        raise InvalidInputError("give --like ID (or --like-text TEXT), or --user USER")
    with open_collection(name, home) as col:
        content = open_collection(blend, home) if blend else None
        try:
            hits = col.recommend(
                positive or None,
                negative or None,
                user=user,
                k=k,
                strategy=strategy,
                where=where,
                exclude=split_ids(exclude),
                diversity=diversity,
                blend=content,
                blend_weight=blend_weight,
            )
        finally:
            if content is not None:
                content.close()
    print_hits(hits, as_json)


def print_hits(hits: list[Any], as_json: bool, *, explain: bool = False) -> None:
    """Hits as JSON, or as a table (with each mode's rank when ``explain``)."""
    if as_json:
        print_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        console.print("no results")
        return
    columns = ["#", "score", "id", "text / uri", "metadata"]
    if explain:
        columns[2:2] = ["vector rank (score)", "lexical rank (score)", "passage rank (score)"]
    table = Table(*columns)
    for rank, hit in enumerate(hits, 1):
        metadata = escape(json.dumps(hit.metadata, ensure_ascii=False))
        row = [str(rank), f"{hit.score:.4g}", hit.id, _highlight(hit) + _where(hit), metadata]
        if explain:
            details = hit.details or {}
            row[2:2] = [_rank_cell(details, "vector"), _rank_cell(details, "lexical"), _rank_cell(details, "passage")]
        table.add_row(*row)
    console.print(table)


def _highlight(hit: Any) -> str:
    """The snippet with its matched words in bold, or the start of the text."""
    if hit.snippet:
        parts = escape(" ".join(hit.snippet.split())).split("**")
        return "".join(f"[bold yellow]{p}[/]" if i % 2 else p for i, p in enumerate(parts))
    return escape(snippet(hit.passage.text if hit.passage is not None else hit.text or hit.uri))


def _where(hit: Any) -> str:
    """Where in a long document the hit matched: its passage, characters and page (nothing for a
    text that is one passage)."""
    passage = hit.passage
    if passage is None or (passage.start == 0 and passage.end >= len(hit.text or "") and passage.page is None):
        return ""
    page = f", page {passage.page}" if passage.page is not None else ""
    return f"\n[dim]passage {passage.index + 1}: characters {passage.start:,}–{passage.end:,}{page}[/]"


def _rank_cell(details: dict[str, Any], mode: str) -> str:
    rank = details.get(f"{mode}_rank")
    return "-" if rank is None else f"{rank} ({details[f'{mode}_score']:.3g})"
