"""A LangChain vector store over a collection: ``LatentSearchVectorStore``.

It speaks LangChain's :class:`~langchain_core.vectorstores.VectorStore` interface (and passes the
standard integration suite LangChain publishes, ``langchain-tests``) while everything happens in a
collection: a LangChain ``Document`` is an item (``id``, ``page_content`` its text, ``metadata`` its
metadata), ``filter`` is the collection's filter (a dict or an expression string), scores are the
collection's (cosine similarity by default: higher is closer). Texts are encoded by the collection's
own model, or by a LangChain ``Embeddings`` object when one is given (the collection is then
``precomputed``, of that model's dimension). Needs ``pip install "latentsearch[langchain]"``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the LangChain store needs langchain-core: pip install "latentsearch[langchain]"') from exc

from latentsearch.collection import Collection
from latentsearch.connection import connect
from latentsearch.errors import InvalidInputError
from latentsearch.records import Hit

DEFAULT_COLLECTION = "langchain"


class LatentSearchVectorStore(VectorStore):
    """A LangChain vector store whose documents live in a latentsearch collection.

    ``LatentSearchVectorStore(collection)`` wraps an open collection (its model encodes the texts);
    ``LatentSearchVectorStore(collection, embedding)`` encodes them with a LangChain ``Embeddings``
    (the collection must then be ``precomputed`` with that dimension: :meth:`create` makes one).
    """

    def __init__(self, collection: Collection, embedding: Embeddings | None = None) -> None:
        if embedding is None and collection.encoder_name == "precomputed":
            raise InvalidInputError(
                f"collection {collection.name!r} holds precomputed vectors: give the LangChain Embeddings "
                "that made them (LatentSearchVectorStore(collection, embedding))"
            )
        self.collection = collection
        self._embedding = embedding

    @classmethod
    def create(
        cls,
        name: str = DEFAULT_COLLECTION,
        *,
        embedding: Embeddings | None = None,
        home: str | Path | None = None,
        exist_ok: bool = False,
        **settings: Any,
    ) -> LatentSearchVectorStore:
        """A store over a new collection ``name`` (``exist_ok``: or the existing one). Without
        ``embedding`` it encodes with the collection's model (``settings["encoder"]``, default
        MiniLM); with one, the collection is ``precomputed`` with the embedding's dimension (measured
        by embedding one word). Other ``settings`` (``metric``, ``index``...) go to ``create``."""
        db = connect(home)
        if exist_ok and db.exists(name):
            return cls(db.open(name), embedding)
        if embedding is not None:
            settings = {**settings, "encoder": "precomputed", "dim": len(embedding.embed_query("dimension"))}
        return cls(db.create(name, **settings), embedding)

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        collection_name: str = DEFAULT_COLLECTION,
        home: str | Path | None = None,
        **kwargs: Any,
    ) -> LatentSearchVectorStore:
        """A new store (collection ``collection_name`` in ``home``) holding ``texts``."""
        store = cls.create(collection_name, embedding=embedding, home=home, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @property
    def embeddings(self) -> Embeddings | None:
        """The LangChain Embeddings this store encodes with (None: the collection's own model)."""
        return self._embedding

    # --- writes -----------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add (or replace, by id) texts in one transaction; ids left out or None are new UUIDs."""
        texts = list(texts)
        given = list(ids) if ids is not None else [None] * len(texts)
        if len(given) != len(texts) or (metadatas is not None and len(metadatas) != len(texts)):
            raise InvalidInputError(f"got {len(texts)} texts, {len(given)} ids and {len(metadatas or texts)} metadatas")
        item_ids = [i if i is not None else str(uuid.uuid4()) for i in given]
        if not texts:
            return []
        vectors = None if self._embedding is None else np.asarray(self._embedding.embed_documents(texts), np.float32)
        self.collection.upsert(item_ids, texts, vectors=vectors, metadata=metadatas)
        return item_ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (ids not in the collection are ignored); ``None``: every document."""
        if ids is None:
            ids = [item.id for item in self.collection.iter_items()]
        present = self.collection.existing_ids(ids)
        if present:
            self.collection.delete([i for i in dict.fromkeys(ids) if i in present])
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents of these ids that exist (missing ones are left out)."""
        present = self.collection.existing_ids(list(ids))
        wanted = [i for i in dict.fromkeys(ids) if i in present]
        return [
            Document(id=item.id, page_content=item.text or "", metadata=item.metadata)
            for item in self.collection.get(wanted)
        ]

    # --- search -----------------------------------------------------------------------------------

    def _query_vector(self, query: str) -> np.ndarray:
        if self._embedding is not None:
            return np.asarray(self._embedding.embed_query(query), np.float32)
        return self.collection.encode([query])[0]

    def _search(self, vector: Any, k: int, filter: Any, include: list[str] | None = None) -> list[Hit]:
        return self.collection.search(np.asarray(vector, np.float32), k=k, where=filter, include=include)

    def similarity_search(self, query: str, k: int = 4, filter: Any = None, **kwargs: Any) -> list[Document]:
        """The ``k`` documents nearest ``query`` (by meaning), optionally under a collection ``filter``."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter=filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents and their scores (the collection's: cosine similarity unless its metric is l2,
        whose score is minus the distance): higher is closer."""
        return [(_document(hit), hit.score) for hit in self._search(self._query_vector(query), k, filter)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents nearest a query vector (of the store's embedding dimension)."""
        return [_document(hit) for hit in self._search(embedding, k, filter)]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search_by_vector` for a text query."""
        return self.max_marginal_relevance_search_by_vector(
            self._query_vector(query).tolist(), k, fetch_k, lambda_mult, filter=filter
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` of the ``fetch_k`` nearest documents that maximal marginal relevance picks: near
        the query and (by ``1 - lambda_mult``) far from each other."""
        hits = self._search(embedding, max(k, fetch_k), filter, include=["text", "metadata", "vector"])
        if not hits:
            return []
        query = self.collection.prepare_vectors(embedding)[0]
        picked = maximal_marginal_relevance(query, [hit.vector for hit in hits], lambda_mult=lambda_mult, k=k)
        return [_document(hits[i]) for i in picked]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Scores onto LangChain's 0 (far) to 1 (the same): cosine similarity from [-1, 1], minus an l2
        distance by 1 / (1 + distance), an inner product by a logistic curve."""
        metric = self.collection.metric
        if metric == "cosine":
            return lambda score: (1.0 + score) / 2.0
        if metric == "l2":
            return lambda score: 1.0 / (1.0 - score)
        return lambda score: 1.0 / (1.0 + math.exp(-score))


def _document(hit: Hit) -> Document:
    return Document(id=hit.id, page_content=hit.text or "", metadata=hit.metadata or {})
