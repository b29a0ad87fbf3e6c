"""Commands that rank items: search (text, image, vector or like an item) and recommend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from latentsearch.analysis.layers import without_layers
from latentsearch.cli.app import (
    HomeOption,
    JsonOption,
    LayersOption,
    command,
    console,
    escape,
    model_loading,
    open_collection,
    print_json,
    progress_bar,
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
            help="auto (hybrid for a text, with the fusion `tune` chose; vector for the rest), vector (meaning), "
            "lexical (BM25 on words) or hybrid (both, fused)."
        ),
    ] = "auto",
    fusion: Annotated[
        str | None, typer.Option(help="Fusion: convex (weighted scores) or rrf (reciprocal rank); default: tuned.")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="Fusion: weight of the vector side (0..1); default: tuned.")
    ] = None,
    rrf_k: Annotated[int, typer.Option(help="RRF constant: larger flattens the rank weights.")] = 60,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show each mode's rank, score and share of the fused score.")
    ] = False,
    ef_search: Annotated[int | None, typer.Option(help="HNSW: candidates explored (recall vs speed).")] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF: lists probed (recall vs speed).")] = None,
    include: Annotated[
        str | None,
        typer.Option(
            help="What each hit carries beside id and score, comma-separated: text, metadata, passage, vector "
            "(default: text,metadata,passage; '' for ids and scores only, the fastest)."
        ),
    ] = None,
    layers: LayersOption = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search by text (auto, vector, lexical or hybrid), by an image (--image), a vector (--vector) or an item
    (--like). Scores: cosine similarity (vector), BM25 (lexical), 0-1 (auto and hybrid: see `tune --help`)."""
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
        include=include,
    )
    with open_collection(name, home) as col, model_loading(col, request.needs_encoder):
        hits = col.search(request)
        hidden = frozenset() if layers else col.layer_fields
    print_hits(hits, as_json, explain=explain, hidden=hidden)


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
    layers: LayersOption = False,
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
        hidden = frozenset() if layers else col.layer_fields
    print_hits(hits, as_json, hidden=hidden)


@command()
def tune(
    name: str,
    queries: Annotated[
        Path | None,
        typer.Option(help='Labelled queries, JSONL: {"query": "text", "relevant": ["id", ...]} a line.'),
    ] = None,
    sample: Annotated[int, typer.Option(help="Pseudo-queries made from the collection's texts (0: none).")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the pseudo-query sample.")] = 0,
    reset: Annotated[bool, typer.Option("--reset", help="Forget the tuned fusion: back to the default.")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Learn how `auto` and `hybrid` search fuse meaning (vector) and words (lexical) for this collection.

    Makes pseudo-queries from the collection's own texts (a sentence of an item, cut out of it, as the
    query; the item as its answer), and uses your labelled --queries when given; measures vector,
    lexical and every fusion (convex at vector weights 0 to 1, RRF) by nDCG@10, and stores the best in
    the collection's manifest. The stored items never change. Fused scores are on a 0-1 scale: the
    weighted sum of each mode's score as a share of its best candidate's (1: best in both modes).
    """
    from latentsearch.search.fusion import DEFAULT_FUSION

    with open_collection(name, home) as col:
        if reset:
            had = col.reset_search_tuning()
            what = "forgot the tuned fusion" if had else "nothing was tuned"
            console.print(f"{name}: {what}; searches use the default ({DEFAULT_FUSION.describe()})")
            return
        with progress_bar(f"tuning {name}", unit="queries") as update:
            report = col.tune_search(queries, sample=sample, seed=seed, progress=update)
    if as_json:
        print_json(report.to_dict())
        return
    table = Table("queries", "search", "nDCG@10", "MRR@10", "recall@100")
    labels = {"vector": "vector", "lexical": "lexical", "rrf": "RRF (k=60, 0.5)", "default": "default fusion"}
    labels["tuned"] = f"chosen: {report.chosen.describe()}"
    for query_set, results in report.measured.items():
        for key, values in results.items():
            count = f"{query_set} ({report.queries[query_set]})"
            table.add_row(count, labels[key], *(f"{values[m]:.3f}" for m in ("ndcg@10", "mrr@10", "recall@100")))
    console.print(table)
    console.print(
        f"{name}: stored {report.chosen.describe()} (default: {report.default.describe()}); "
        f"{report.corpus['items']:,} items, {report.corpus['passages']:,} passages measured in "
        f"{report.seconds:.1f}s. Undo with: latentsearch tune {name} --reset"
    )


def print_hits(hits: list[Any], as_json: bool, *, explain: bool = False, hidden: frozenset[str] = frozenset()) -> None:
    """Hits as JSON, or as a table (with each mode's rank, score and share of a fused score when
    ``explain``; without the layer fields ``hidden``). Scores print with 4 decimals, every one the same."""
    if as_json:
        print_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        console.print("no results")
        return
    columns = ["#", "score", "id", "text / uri", "metadata"]
    if explain:
        columns.insert(2, "mode: rank (score) + share")
    table = Table(*columns)
    for rank, hit in enumerate(hits, 1):
        shown = without_layers(hit.metadata, hidden)
        metadata = "" if shown is None else escape(json.dumps(shown, ensure_ascii=False))
        row = [str(rank), f"{hit.score:.4f}", hit.id, _highlight(hit) + _where(hit), metadata]
        if explain:
            details = hit.details or {}
            cells = [_rank_cell(details, mode) for mode in ("vector", "lexical", "passage")]
            if details.get("plan"):  # how a filtered vector search ran
                cells.append(f"plan: {details['plan']}")
            row.insert(2, "\n".join(cells))
        table.add_row(*row)
    console.print(table)


def _highlight(hit: Any) -> str:
    """The snippet with its matched words in bold, or the start of the text."""
    if hit.snippet:
        parts = escape(" ".join(hit.snippet.split())).split("**")
        return "".join(f"[bold yellow]{p}[/]" if i % 2 else p for i, p in enumerate(parts))
    return escape(snippet(hit.passage.text if hit.passage is not None else hit.text or hit.uri or ""))


def _where(hit: Any) -> str:
    """Where in a long document the hit matched: its passage, characters and page (nothing for a
    text that is one passage)."""
    passage = hit.passage
    if passage is None or (passage.start == 0 and passage.end >= len(hit.text or "") and passage.page is None):
        return ""
    page = f", page {passage.page}" if passage.page is not None else ""
    return f"\n[dim]passage {passage.index + 1}: characters {passage.start:,}–{passage.end:,}{page}[/]"


def _rank_cell(details: dict[str, Any], mode: str) -> str:
    """``mode: rank (score)``, and ``+ share`` of the fused score when the search was fused."""
    rank, share = details.get(f"{mode}_rank"), details.get(f"{mode}_contribution")
    cell = f"{mode}: -" if rank is None else f"{mode}: {rank} ({details[f'{mode}_score']:.4f})"
    return cell if share is None else f"{cell} + {share:.4f}"
