"""Collaborative latent factors learned from user-item interactions.

The interactions become a sparse user × item matrix (1 per interaction, or the rating when a rating
column is given); a truncated SVD of it (PureSVD, Cremonesi et al. 2010, through scikit-learn)
gives item vectors ``V`` and user vectors ``R_u V`` (the user's row folded in), so that
``user · item = R_u V Vᵀ`` scores every item for the user. Item vectors are stored as a collection
with the inner-product metric (their length carries popularity, which cosine would throw away); user
vectors and histories go into the same SQLite file.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from latentsearch.backends.base import ProgressFn
from latentsearch.errors import ConflictError, InvalidInputError
from latentsearch.io.ingest import open_text

if TYPE_CHECKING:
    from latentsearch.collection import Collection


@dataclass
class Interactions:
    """Interactions as parallel arrays."""

    users: np.ndarray  # str
    items: np.ndarray  # str
    values: np.ndarray  # float
    times: np.ndarray | None = None  # float seconds


@dataclass
class Factors:
    """Learned latent factors."""

    item_ids: list[str]
    item_vectors: np.ndarray
    user_ids: list[str]
    user_vectors: np.ndarray
    explained_variance_ratio: float


def read_interactions(
    path: str | os.PathLike[str],
    *,
    user: str = "user_id",
    item: str = "item_id",
    rating: str | None = None,
    time: str | None = None,
) -> Interactions:
    """Read a CSV/TSV of interactions (delimiter detected). Header names may carry a ``:type`` suffix
    (as in RecBole's ``.inter`` files: ``user_id:token``); ``user``, ``item`` etc. match the part before it.
    """
    path = Path(path)
    with open_text(path) as handle:
        head = handle.readline()
        if not head.strip():
            raise InvalidInputError(f"{path}: empty file, expected a header row")
        delimiter = "\t" if "\t" in head else ","
        names = [name.strip().split(":")[0] for name in next(csv.reader([head], delimiter=delimiter))]
        wanted = {"user": user, "item": item, "rating": rating, "time": time}
        columns = {}
        for role, name in wanted.items():
            if name is None:
                continue
            if name not in names:
                raise InvalidInputError(f"{path}: no column {name!r} for the {role} (columns: {', '.join(names)})")
            columns[role] = names.index(name)
        try:
            rows = list(csv.reader(handle, delimiter=delimiter))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InvalidInputError(f"{path}: cannot read the rows ({exc})") from None
    if not rows:
        raise InvalidInputError(f"{path}: no interactions after the header")
    try:
        users = np.array([row[columns["user"]] for row in rows])
        items = np.array([row[columns["item"]] for row in rows])
        values = np.array([float(row[columns["rating"]]) for row in rows]) if rating else np.ones(len(rows))
        times = np.array([float(row[columns["time"]]) for row in rows]) if time else None
    except (IndexError, ValueError) as exc:
        raise InvalidInputError(f"{path}: malformed row ({exc}); ratings and times must be numbers") from None
    if not np.isfinite(values).all() or (times is not None and not np.isfinite(times).all()):
        raise InvalidInputError(f"{path}: ratings and times must be finite numbers")
    return Interactions(users, items, values, times)


def fit_factors(interactions: Interactions, *, factors: int = 32, seed: int = 0) -> Factors:
    """Truncated SVD of the user × item matrix: item vectors ``V``, user vectors ``R V``."""
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD

    user_ids, user_index = np.unique(interactions.users, return_inverse=True)
    item_ids, item_index = np.unique(interactions.items, return_inverse=True)
    n_components = min(int(factors), len(item_ids) - 1, len(user_ids) - 1)
    if n_components < 1:
        raise InvalidInputError("need at least two users and two items to learn factors")
    matrix = sp.csr_matrix(
        (interactions.values.astype(np.float64), (user_index, item_index)), shape=(len(user_ids), len(item_ids))
    )
    svd = TruncatedSVD(n_components=n_components, random_state=seed).fit(matrix)
    item_vectors = svd.components_.T.astype(np.float32)
    user_vectors = np.asarray(matrix @ item_vectors, dtype=np.float32)
    return Factors(
        [str(i) for i in item_ids],
        item_vectors,
        [str(u) for u in user_ids],
        user_vectors,
        float(svd.explained_variance_ratio_.sum()),
    )


def fit_interactions(
    path: str | os.PathLike[str],
    *,
    into: str,
    user: str = "user_id",
    item: str = "item_id",
    rating: str | None = None,
    time: str | None = None,
    factors: int = 32,
    index: str = "flat",
    replace: bool = False,
    home: str | os.PathLike[str] | None = None,
    shards: int | None = None,
    ray_address: str | None = None,
    progress: ProgressFn | None = None,
) -> Collection:
    """Learn item and user vectors from an interaction file and store them as collection ``into``
    (split over ``shards`` Ray actors when given).

    Items get metadata ``{"interactions": n}``; users are stored with their histories so that
    ``collection.recommend(user=...)`` leaves out what they have already seen.
    """
    from latentsearch.connection import connect

    if isinstance(factors, bool) or not isinstance(factors, int) or factors < 1:
        raise InvalidInputError(f"factors must be a whole number >= 1, got {factors!r}")
    db = connect(home, ray_address=ray_address)
    if not replace and db.exists(into):
        raise ConflictError(
            f"collection {into!r} already exists in {db.home}: pass replace (CLI: --replace) to rebuild it"
        )
    interactions = read_interactions(path, user=user, item=item, rating=rating, time=time)
    learned = fit_factors(interactions, factors=factors)
    dim = learned.item_vectors.shape[1]
    # Built whole in a hidden work folder and renamed into place: a crash at any point leaves either
    # nothing new under the name (the next run cleans the work folder) or the whole result.
    settings = {"encoder": "precomputed", "dim": dim, "metric": "ip", "index": index, "shards": shards}
    with db.building(into, replace=replace, **settings) as col:
        _fill(col, learned, interactions, progress)
    return db.open(into)


def _fill(col: Collection, learned: Factors, interactions: Interactions, progress: ProgressFn | None) -> None:
    """Store the learned item vectors (with their interaction counts) and users in a new collection."""
    counts = dict(zip(*np.unique(interactions.items, return_counts=True)))
    col.add(
        learned.item_ids,
        vectors=learned.item_vectors,
        metadata=[{"interactions": int(counts[i])} for i in learned.item_ids],
        progress=progress,
    )
    histories: dict[str, list] = {u: [] for u in learned.user_ids}
    order = np.argsort(interactions.times, kind="stable") if interactions.times is not None else None
    for i in order if order is not None else range(len(interactions.users)):
        ts = None if interactions.times is None else float(interactions.times[i])
        histories[str(interactions.users[i])].append([str(interactions.items[i]), ts])
    col.put_users([(u, v, histories[u]) for u, v in zip(learned.user_ids, learned.user_vectors)], replace_all=True)
