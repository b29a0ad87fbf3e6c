"""The embedded vector stores people pick instead of latentsearch, behind one small interface, so that
``benchmarks.performance`` (section ``peers``) measures them all on the same data in the same run.

Each store is used as its documentation shows, with its defaults (its own index parameters), on disk
in a folder of its own, euclidean distance, a numeric ``b`` field per item for filters, and ids and
that field returned with every hit (what an application reads). The stores are optional
(``pip install -e ".[bench]"``); one that is not installed is reported and skipped.

- latentsearch: ``create(index="hnsw", metric="l2")`` (HNSW32, ef 64), ``where="b < N"``.
- Chroma ``PersistentClient`` (HNSW M 16, ef 100), ``where={"b": {"$lt": N}}``.
- LanceDB, local: no index (its default: an exact scan) and with ``IVF_HNSW_SQ``; ``prefilter=True``.
- Qdrant's local mode (``QdrantClient(path=...)``: exact search in Python, what its docs offer for
  embedded use), ``Range(lt=N)``. It is about a hundred times slower than the others, so it is timed
  on fewer queries in one round.
"""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Peer:
    """One store: build it from arrays, search it (optionally under ``b < limit``), reopen it."""

    name = ""
    module = ""  # what must import for the store to run
    queries = 200  # how many queries each timing runs
    rounds = 3

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def build(self, ids: list[str], vectors: np.ndarray, buckets: np.ndarray) -> None:
        raise NotImplementedError

    def search(self, query: np.ndarray, k: int, limit: int | None = None) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        """Let go of everything in memory, so the folder is what rests on disk."""

    def open(self) -> None:
        raise NotImplementedError

    def available(self) -> bool:
        try:
            __import__(self.module)
        except ImportError:
            return False
        return True


class LatentsearchPeer(Peer):
    name = "latentsearch HNSW32"
    module = "latentsearch"

    def build(self, ids, vectors, buckets):
        import latentsearch as ls

        self.col = ls.create(
            "peer", encoder="precomputed", dim=vectors.shape[1], metric="l2", index="hnsw", home=self.folder
        )
        self.col.add(ids, vectors=vectors, metadata=[{"b": int(b)} for b in buckets])
        # Filters walked as on a collection without its filter partition, the conservative comparison: a
        # repeated filter earns a sub-index of its matches, and the writes keep the partition
        # (benchmarks.performance's repeated, small-writes and bulk-loaded columns), which the peers lack.
        self.col.backend.subindexes.limit = 0
        self.col.backend.index.partitioner.enabled = False

    def search(self, query, k, limit=None):
        hits = self.col.search(query, k=k, where=None if limit is None else f"b < {limit}")
        return [h.id for h in hits]

    def close(self):
        self.col.close()

    def open(self):
        import latentsearch as ls

        self.col = ls.open("peer", home=self.folder)


class ChromaPeer(Peer):
    name = "Chroma PersistentClient"
    module = "chromadb"

    def _client(self) -> Any:
        import chromadb
        from chromadb.config import Settings

        return chromadb.PersistentClient(path=str(self.folder), settings=Settings(anonymized_telemetry=False))

    def build(self, ids, vectors, buckets):
        self.client = self._client()
        self.col = self.client.create_collection("bench", configuration={"hnsw": {"space": "l2"}})
        step = self.client.get_max_batch_size()  # Chroma refuses larger batches
        for start in range(0, len(ids), step):
            stop = start + step
            self.col.add(
                ids=ids[start:stop],
                embeddings=vectors[start:stop],
                metadatas=[{"b": int(b)} for b in buckets[start:stop]],
            )

    def search(self, query, k, limit=None):
        found = self.col.query(
            query_embeddings=query[None],
            n_results=k,
            where=None if limit is None else {"b": {"$lt": limit}},
            include=["metadatas", "distances"],
        )
        return found["ids"][0]

    def close(self):
        self.col = None
        self.client.clear_system_cache()  # the client is cached per path: drop it so reopening reads the disk
        self.client = None

    def open(self):
        self.client = self._client()
        self.col = self.client.get_collection("bench")


class LanceDBPeer(Peer):
    name = "LanceDB (no index)"
    module = "lancedb"
    index = False

    def build(self, ids, vectors, buckets):
        import lancedb
        import pyarrow as pa

        self.db = lancedb.connect(str(self.folder))
        flat = pa.array(np.ascontiguousarray(vectors).ravel())
        table = pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]), "b": buckets})
        self.table = self.db.create_table("bench", table)
        if self.index:
            self.table.create_index("l2", vector_column_name="vector", index_type="IVF_HNSW_SQ")

    def search(self, query, k, limit=None):
        search = self.table.search(query).limit(k).select(["id", "b", "_distance"])
        if limit is not None:
            search = search.where(f"b < {limit}", prefilter=True)
        return [row["id"] for row in search.to_list()]

    def close(self):
        self.table = self.db = None

    def open(self):
        import lancedb

        self.db = lancedb.connect(str(self.folder))
        self.table = self.db.open_table("bench")


class LanceDBIndexedPeer(LanceDBPeer):
    name = "LanceDB IVF_HNSW_SQ"
    index = True


class QdrantLocalPeer(Peer):
    name = "Qdrant local mode"
    module = "qdrant_client"
    queries = 50
    rounds = 1

    def _client(self) -> Any:
        from qdrant_client import QdrantClient

        return QdrantClient(path=str(self.folder))

    def build(self, ids, vectors, buckets):
        from qdrant_client import models

        self.client = self._client()
        self.client.create_collection(
            "bench", vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.EUCLID)
        )
        for start in range(0, len(ids), 5000):
            stop = start + 5000
            batch = models.Batch(
                ids=[int(i) for i in ids[start:stop]],  # Qdrant's ids are integers or UUIDs
                vectors=vectors[start:stop].tolist(),
                payloads=[{"b": int(b)} for b in buckets[start:stop]],
            )
            self.client.upsert("bench", points=batch, wait=True)

    def search(self, query, k, limit=None):
        from qdrant_client import models

        where = (
            None
            if limit is None
            else models.Filter(must=[models.FieldCondition(key="b", range=models.Range(lt=limit))])
        )
        found = self.client.query_points("bench", query=query, limit=k, query_filter=where, with_payload=True)
        return [str(p.id) for p in found.points]

    def close(self):
        self.client.close()
        self.client = None

    def open(self):
        self.client = self._client()


PEERS = (LatentsearchPeer, ChromaPeer, LanceDBPeer, LanceDBIndexedPeer, QdrantLocalPeer)
FILTER_PERCENTS = (10, 1)


def compare(base: np.ndarray, queries: np.ndarray, home: Path, k: int = 10) -> list[dict]:
    """Every available peer on the same vectors: ingest seconds (one round: building twice would double
    the run), disk bytes per vector once closed, reopening (open + first search), and recall@10 and
    queries/s one query at a time, unfiltered and under filters matching 10% and 1% of the items (the
    best of the peer's rounds; the stores are run one after another, each alone in memory)."""
    import faiss

    rng = np.random.default_rng(0)
    buckets = rng.integers(0, 10_000, size=len(base))
    ids = [str(i) for i in range(len(base))]
    limits = {None: None, **{pct: pct * 100 for pct in FILTER_PERCENTS}}  # buckets below limit: pct of items
    truths = {}
    for pct, limit in limits.items():
        subset = np.arange(len(base)) if limit is None else np.flatnonzero(buckets < limit)
        _, rows = faiss.knn(queries, base[subset], k)
        truths[pct] = [set(subset[row[row >= 0]].astype(str).tolist()) for row in rows]
    out = []
    for peer_type in PEERS:
        folder = home / f"peer-{peer_type.__name__}"
        folder.mkdir()
        peer = peer_type(folder)
        if not peer.available():
            print(f"  {peer.name}: not installed (pip install -e '.[bench]')")
            continue
        start = time.perf_counter()
        peer.build(ids, base, buckets)
        ingest = time.perf_counter() - start
        peer.close()
        gc.collect()
        disk = folder_bytes(folder)
        start = time.perf_counter()
        peer.open()
        peer.search(queries[0], k)
        reopen = time.perf_counter() - start
        row: dict = {
            "store": peer.name,
            "vectors": len(base),
            "ingest_seconds": ingest,
            "ingest_vectors_per_s": len(base) / ingest,
            "disk_bytes_per_vector": disk / len(base),
            "reopen_seconds": reopen,
            "queries": peer.queries,
        }
        qs = queries[: peer.queries]
        for pct, limit in limits.items():
            label = "unfiltered" if pct is None else f"filtered_{pct}pct"
            rounds = []
            for _ in range(peer.rounds):
                start = time.perf_counter()
                found = [peer.search(q, k, limit) for q in qs]
                rounds.append(time.perf_counter() - start)
            row[f"qps_{label}"] = len(qs) / min(rounds)
            row[f"recall_{label}"] = float(
                np.mean([len(set(f) & t) / max(len(t), 1) for f, t in zip(found, truths[pct])])
            )
        peer.close()
        del peer
        gc.collect()
        shutil.rmtree(folder, ignore_errors=True)
        out.append(row)
        print("  " + ", ".join(f"{key} {v:.3g}" if isinstance(v, float) else f"{key} {v}" for key, v in row.items()))
    return out
