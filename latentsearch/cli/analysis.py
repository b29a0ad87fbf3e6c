"""Commands that study a collection's latent space: outliers, check, map, clusters, interpolate,
and fit-interactions (item and user vectors learned from interactions)."""

from __future__ import annotations

from pathlib import Path
from time import perf_counter
from typing import Annotated, Any

import typer
from rich.table import Table

from latentsearch.analysis.plots import DEFAULT_MAX_COLORS
from latentsearch.cli.app import (
    HomeOption,
    JsonOption,
    command,
    connect,
    console,
    err,
    escape,
    model_loading,
    open_collection,
    print_json,
    progress_bar,
    snippet,
    split_ids,
)
from latentsearch.errors import InvalidInputError
from latentsearch.limits import MAX_COLORS

MethodOption = Annotated[
    str,
    typer.Option(
        help="knn (k-th neighbour distance), lof, iforest, ensemble, or reconstruction (ae:PATH collections)."
    ),
]
KOption = Annotated[int, typer.Option("-k", "--k", help="Neighbours for knn and lof.")]
ContaminationOption = Annotated[float | None, typer.Option(help="Share of the collection to flag [default: 0.01].")]
FprOption = Annotated[
    float | None, typer.Option(help="Instead: flag at this false-alarm rate (conformal p-value <= fpr).")
]


@command("fit-interactions")
def fit_interactions(
    source: Annotated[Path, typer.Argument(help="CSV/TSV of interactions, one row per (user, item).")],
    into: Annotated[str, typer.Option(help="Collection to create with the learned item vectors.")],
    user: Annotated[str, typer.Option(help="User id column.")] = "user_id",
    item: Annotated[str, typer.Option(help="Item id column.")] = "item_id",
    rating: Annotated[str | None, typer.Option(help="Rating column (strength); absent: every row counts 1.")] = None,
    time: Annotated[str | None, typer.Option(help="Timestamp column (unix seconds), kept for recency.")] = None,
    factors: Annotated[int, typer.Option(help="Latent dimensions.")] = 32,
    replace: Annotated[bool, typer.Option(help="Replace the collection if it exists.")] = False,
    shards: Annotated[int | None, typer.Option(help="Split the collection over this many Ray shards.")] = None,
    home: HomeOption = None,
) -> None:
    """Learn item and user vectors from interactions (truncated SVD) and store them as a collection."""
    from latentsearch.workflows.interactions import fit_interactions as fit

    db = connect(home)
    start = perf_counter()
    with progress_bar(f"storing item vectors in {into}") as update:
        col = fit(
            source,
            into=into,
            user=user,
            item=item,
            rating=rating,
            time=time,
            factors=factors,
            replace=replace,
            home=db.home,
            shards=shards,
            ray_address=db.ray_address,
            progress=update,
        )
    with col:
        console.print(
            f"learned {col.dim} factors for {col.count():,} items and {col.user_count():,} users in "
            f"{perf_counter() - start:.1f}s; try: latentsearch recommend {into} --user USER"
        )


def print_outliers(results: list[Any], as_json: bool, *, label: str = "id") -> None:
    """Outlier scores as JSON, or as a table with each one's nearest normal items."""
    if as_json:
        print_json([r.to_dict() for r in results])
        return
    if not results:
        console.print("nothing flagged")
        return
    table = Table(label, "score", "percentile", "p-value", "flagged", "nearest normal items", "text")
    for i, r in enumerate(results, 1):
        near = ", ".join(f"{n['id']} ({n['distance']:.3g})" for n in r.neighbors[:3])
        table.add_row(
            escape(str(r.id) if r.id is not None else f"#{i}"),
            f"{r.score:.4f}",
            f"{r.percentile:.1f}",
            f"{r.p_value:.3g}",
            "yes" if r.flagged else "no",
            escape(near),
            escape(snippet(r.text, 50)),
        )
    console.print(table)


@command()
def outliers(
    name: str,
    method: MethodOption = "knn",
    k: KOption = 10,
    contamination: ContaminationOption = None,
    fpr: FprOption = None,
    top: Annotated[int, typer.Option(help="Show at most this many, most anomalous first.")] = 20,
    write: Annotated[
        bool, typer.Option("--write", help="Store outlier_score and outlier in every item's metadata.")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Flag the items that sit far from their neighbours, with scores and their nearest normal items."""
    with open_collection(name, home) as col, progress_bar(f"scoring {name}") as update:
        results = col.outliers(method, k=k, contamination=contamination, fpr=fpr, top=top, write=write, progress=update)
    print_outliers(results, as_json)
    if write and not as_json:
        console.print(f"wrote outlier_score and outlier to the metadata of every item in {name}")


@command()
def check(
    name: str,
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts (or, for image collections, image files) to check.")
    ] = None,
    vectors: Annotated[Path | None, typer.Option(help="A .npy file of vectors to check instead.")] = None,
    method: MethodOption = "knn",
    k: KOption = 10,
    contamination: ContaminationOption = None,
    fpr: FprOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check whether new texts (or vectors) would be outliers in a collection, without adding them."""
    from latentsearch.io.inputs import check_encodes, check_inputs, load_vectors

    if bool(texts) == (vectors is not None):
        raise InvalidInputError("give texts to check, or --vectors FILE.npy")
    array = load_vectors(vectors) if vectors is not None else None  # a bad file is refused before opening
    with open_collection(name, home) as col:
        inputs = check_inputs(col, texts=texts, vectors=array)
        with model_loading(col, check_encodes(inputs)):
            results = col.check(inputs, method=method, k=k, contamination=contamination, fpr=fpr)
    print_outliers(results, as_json, label="input")


@command("map")
def map_(
    name: str,
    output: Annotated[Path, typer.Option("--out", "-o", help="map.html (interactive, offline) or map.png.")],
    method: Annotated[str, typer.Option(help="pca, tsne or umap.")] = "umap",
    dim: Annotated[int, typer.Option(help="2 or 3 (3-D in HTML; the PNG shows the first two axes).")] = 2,
    color_by: Annotated[
        str | None, typer.Option(help="Metadata field to colour by, e.g. a label, cluster or outlier_score.")
    ] = None,
    max_colors: Annotated[
        int,
        typer.Option(help=f"Colour the N most frequent values of --color-by (1-{MAX_COLORS}); the rest: grey 'other'."),
    ] = DEFAULT_MAX_COLORS,
    where: Annotated[str | None, typer.Option(help="Only items matching this filter.")] = None,
    sample: Annotated[
        int | None, typer.Option(help="At most this many items [default: t-SNE 10,000, UMAP 50,000, PCA 100,000].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and the projection.")] = 0,
    path: Annotated[str | None, typer.Option(help="Draw the interpolation path between two ids: A,B.")] = None,
    steps: Annotated[int, typer.Option(help="Steps of the path.")] = 8,
    home: HomeOption = None,
) -> None:
    """Draw the latent space as a 2-D/3-D map (PCA, t-SNE or UMAP), coloured by a field."""
    from latentsearch.workflows.maps import draw_map

    ends = None
    if path is not None:
        ends = split_ids([path])
        if len(ends) != 2:
            raise InvalidInputError(f"--path takes two ids separated by a comma, got {path!r}")
    with open_collection(name, home) as col, err.status(f"projecting {name} with {method}…") as status:
        drawn = draw_map(
            col,
            output,
            method=method,
            dim=dim,
            color_by=color_by,
            max_colors=max_colors,
            where=where,
            sample=sample,
            seed=seed,
            path=(ends[0], ends[1]) if ends else None,
            steps=steps,
            stage=lambda message: status.update(message + "…"),
        )
    projection = drawn.projection
    sampled = f" (sampled from {projection.sampled_from:,})" if projection.sampled_from > len(projection.ids) else ""
    console.print(
        f"wrote {drawn.path}: {len(projection.ids):,} items{sampled}, {method} trustworthiness "
        f"{projection.trustworthiness:.3f}"
    )


@command()
def clusters(
    name: str,
    n: Annotated[
        str, typer.Option("-n", help="Number of clusters (k-means), or 'auto' (UMAP to 5-d, then HDBSCAN).")
    ] = "8",
    where: Annotated[str | None, typer.Option(help="Only items matching this filter.")] = None,
    seed: Annotated[int, typer.Option(help="k-means and UMAP seed.")] = 0,
    words: Annotated[int, typer.Option(help="Words in each cluster's label.")] = 5,
    bigrams: Annotated[bool, typer.Option("--bigrams", help="Let labels hold two-word phrases.")] = False,
    write: Annotated[
        bool,
        typer.Option(
            help="Keep the clusters as the collection's clusters layer (cluster and cluster_label in the "
            "metadata, for --where and --color-by; replaces the last clustering)."
        ),
    ] = True,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cluster the items and label each cluster with its most distinctive words.

    Words every cluster shares are left out."""
    count: int | str = n
    if n != "auto":
        try:
            count = int(n)
        except ValueError:
            raise InvalidInputError(f"-n takes a number of clusters or 'auto', got {n!r}") from None
    with open_collection(name, home) as col:
        found = col.clusters(count, where=where, seed=seed, words=words, bigrams=bigrams, write=write)
    if as_json:
        print_json([c.to_dict() for c in found])
        return
    table = Table("cluster", "size", "label", "examples")
    for c in found:
        table.add_row(
            str(c.cluster),
            str(c.size),
            escape(c.label),
            escape(" | ".join(snippet(e["text"] or e["id"], 40) for e in c.examples)),
        )
    console.print(table)
    total = sum(c.size for c in found)
    noise = sum(c.size for c in found if c.cluster == -1)
    summary = f"{len(found) - (noise > 0)} clusters of {total:,} items"
    if count == "auto":
        summary += f"; noise (in no cluster, -1): {noise:,} items ({noise / total:.0%})"
    if write:
        summary += f". Kept as the clusters layer: --where 'cluster = {found[0].cluster}', --color-by cluster"
    console.print(summary)


@command()
def interpolate(
    name: str,
    start: Annotated[str, typer.Argument(help="Item id to start from.")],
    end: Annotated[str, typer.Argument(help="Item id to end at.")],
    steps: Annotated[int, typer.Option(help="Number of points on the path (ends included).")] = 8,
    where: Annotated[str | None, typer.Option(help="Only items matching this filter.")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Walk the latent space from one item to another.

    At each step: the nearest item that is neither end, its similarity to both ends, and whether it lies
    between them (closer to each than they are to each other)."""
    with open_collection(name, home) as col:
        path = col.interpolate(start, end, steps=steps, where=where)
    if as_json:
        print_json([s.to_dict() for s in path])
        return
    if not path:
        console.print(f"no item other than {start!r} and {end!r} to walk through")
        return
    table = Table("t", "nearest item", "score", f"to {start}", f"to {end}", "between", "text")
    for step in path:
        table.add_row(
            f"{step.t:.2f}",
            escape(step.id),
            f"{step.score:.4f}",
            f"{step.to_start:.4f}",
            f"{step.to_end:.4f}",
            "yes" if step.between else "no",
            escape(snippet(step.text, 60)),
        )
    console.print(table)
    if not any(step.between for step in path):
        console.print(
            f"nothing lies between {start!r} and {end!r}: every other item is farther from one of them than "
            "they are from each other"
        )
