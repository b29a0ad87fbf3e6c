"""Collection operations on synthetic vectors (meaning does not matter here)."""

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.index.faiss_index import CHECKPOINT_FILE, INDEX_FILE

from .conftest import random_vectors

KINDS = ["flat", "hnsw", "ivf", "ivfpq", "sq8", "auto"]


def make(home, name="vecs", n=0, dim=16, index="flat", metric="cosine", seed=0):
    col = ls.create(name, encoder="precomputed", dim=dim, index=index, metric=metric, home=home)
    if n:
        vectors = random_vectors(n, dim, seed)
        col.add([f"v{i}" for i in range(n)], vectors=vectors, metadata=[{"g": i % 100, "i": i} for i in range(n)])
    return col


def test_create_open_list_drop(home):
    assert ls.list_collections(home=home) == []
    col = make(home, "a", n=10)
    make(home, "b").close()
    col.close()
    assert ls.list_collections(home=home) == ["a", "b"]
    reopened = ls.open("a", home=home)
    assert reopened.count() == 10 and reopened.dim == 16 and reopened.encoder_name == "precomputed"
    reopened.close()
    ls.drop("a", home=home)
    assert ls.list_collections(home=home) == ["b"]
    with pytest.raises(ls.CollectionNotFoundError, match="not found"):
        ls.open("a", home=home)
    with pytest.raises(ls.CollectionNotFoundError):
        ls.drop("a", home=home)
    with pytest.raises(ls.ConflictError, match="already exists"):
        make(home, "b")


def test_home_from_environment(home):
    make(home, "envcol").close()  # the fixture set LATENTSEARCH_HOME to home
    assert "envcol" in ls.list_collections()
    assert ls.open("envcol").path == home / "envcol"


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "x" * 65, "a b"])
def test_invalid_collection_names(home, name):
    with pytest.raises(ls.InvalidInputError, match="invalid collection name"):
        ls.create(name, encoder="precomputed", dim=4, home=home)
    assert not home.exists() or list(home.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_add_get_search_delete_with_every_index(home, kind):
    n = 12_000 if kind in ("ivf", "ivfpq") else 3_000  # enough to train the real index
    col = make(home, n=n, index=kind)
    vectors = random_vectors(n, 16, 0)
    expected_family = {"flat": "Flat", "hnsw": "HNSW", "ivf": "IVF", "ivfpq": "IVF", "sq8": "SQ8", "auto": "Flat"}
    assert col.backend.index.factory.startswith(expected_family[kind])
    assert col.count() == n
    # Each vector finds itself first.
    for i in (0, 17, n - 1):
        hits = col.search(vectors[i], k=3)
        assert hits[0].id == f"v{i}"
        assert hits[0].score == pytest.approx(1.0, abs=0.02)
        assert hits[0].metadata == {"g": i % 100, "i": i}
    # More like this excludes the item itself.
    assert all(h.id != "v17" for h in col.search(like="v17", k=5))
    assert len(col.search(like="v17", k=5)) == 5
    # Delete: gone from get, count and search.
    assert col.delete(["v17", "v0"]) == 2
    assert col.count() == n - 2
    assert all(h.id not in ("v17", "v0") for h in col.search(vectors[17], k=10))
    with pytest.raises(ls.ItemNotFoundError):
        col.get(["v17"])
    col.close()
    # Survives a reopen (checkpoint), still without the deleted items.
    col = ls.open("vecs", home=home)
    assert col.count() == n - 2
    assert col.search(vectors[17], k=1)[0].id != "v17"
    assert col.search(vectors[5], k=1)[0].id == "v5"
    col.close()


def test_upsert_replaces_vector_text_and_metadata(home):
    col = make(home, n=100, index="hnsw")
    new = random_vectors(1, 16, 99)[0]
    with pytest.raises(ls.ConflictError, match="already exists"):
        col.add(["v3"], vectors=[new])
    col.upsert(["v3", "fresh"], vectors=np.stack([new, -new]), metadata=[{"g": "new"}, None])
    assert col.count() == 101
    item = col.get(["v3"], with_vectors=True)[0]
    assert item.metadata == {"g": "new"}
    assert np.allclose(item.vector, new / np.linalg.norm(new), atol=1e-6)
    assert col.search(new, k=1)[0].id == "v3"
    old = random_vectors(100, 16, 0)[3]
    assert col.search(old, k=1)[0].id != "v3"  # the old vector is gone from the index
    col.close()


def test_hnsw_tombstones_and_compaction(home):
    col = make(home, n=1000, index="hnsw")
    col.delete([f"v{i}" for i in range(100)])
    assert len(col.backend.index.tombstones) == 100
    assert col.backend.index.ntotal == 1000
    vectors = random_vectors(1000, 16, 0)
    hits = col.search(vectors[50], k=20)
    assert len(hits) == 20 and all(int(h.id[1:]) >= 100 for h in hits)  # no deleted item comes back
    col.compact()
    assert col.backend.index.tombstones == set() and col.backend.index.ntotal == 900
    assert col.search(vectors[500], k=1)[0].id == "v500"
    # Deleting a large share triggers compaction by itself.
    col.delete([f"v{i}" for i in range(100, 500)])
    assert col.backend.index.ntotal == 500 and not col.backend.index.tombstones
    col.close()


def test_a_delete_after_searching_hnsw_is_honoured_by_the_next_search(home):
    # Searches reuse their FAISS parameters (and tombstone selector): a delete must renew them, in this
    # process or another one, so k live results still come back.
    col = make(home, n=300, index="hnsw")
    query = random_vectors(300, 16, 0)[7]
    first = [h.id for h in col.search(query, k=5)]
    col.delete([first[0]])
    again = [h.id for h in col.search(query, k=5)]
    assert len(again) == 5 and first[0] not in again and again[:4] == first[1:]
    other = ls.open(col.name, home=home)
    other.delete([again[0]])
    other.close()
    third = [h.id for h in col.search(query, k=5)]
    assert len(third) == 5 and again[0] not in third and third[:4] == again[1:]
    col.close()


def test_update_metadata_merges_fields_all_or_nothing(home):
    col = make(home, n=20)
    assert col.search(random_vectors(20, 16, 0)[3], k=1, where={"reviewed": True}) == []  # caches the filter
    assert col.update_metadata({"v3": {"reviewed": True}, "v4": {"g": None}}) == 2
    assert col.get(["v3"])[0].metadata["reviewed"] is True and "g" not in col.get(["v4"])[0].metadata
    assert [h.id for h in col.search(random_vectors(20, 16, 0)[3], k=5, where={"reviewed": True})] == ["v3"]
    seq = col.seq
    with pytest.raises(ls.ItemNotFoundError, match="unknown id 'ghost'.*nothing was updated"):
        col.update_metadata({"v5": {"reviewed": True}, "ghost": {"reviewed": True}})
    with pytest.raises(ls.InvalidInputError):
        col.update_metadata({"v5": {"score": float("nan")}})
    with pytest.raises(ls.InvalidInputError):
        col.update_metadata({"v5": ["not", "a", "dict"]})
    assert col.seq == seq and "reviewed" not in col.get(["v5"])[0].metadata
    assert col.update_metadata({}) == 0
    col.close()


def test_l2_metric_scores_are_negated_distances(home):
    col = make(home, n=50, metric="l2")
    vectors = random_vectors(50, 16, 0)
    hits = col.search(vectors[7] + 0.5, k=2)
    assert hits[0].id == "v7"
    assert hits[0].score == pytest.approx(-np.linalg.norm(np.full(16, 0.5)), rel=1e-4)
    assert hits[0].score >= hits[1].score
    col.close()


def test_other_process_writes_are_caught_up(home):
    reader = make(home, n=20)
    assert reader.search(random_vectors(20, 16, 0)[3], k=1)[0].id == "v3"
    writer = ls.open("vecs", home=home)
    extra = random_vectors(5, 16, 42)
    writer.add([f"x{i}" for i in range(5)], vectors=extra)
    writer.delete(["v3"])
    writer.close()
    assert reader.search(extra[2], k=1)[0].id == "x2"  # the reader's index caught up
    assert reader.search(random_vectors(20, 16, 0)[3], k=1)[0].id != "v3"
    reader.close()


def test_stale_checkpoint_catches_up_without_rebuild(home, caplog):
    col = make(home, n=200, index="hnsw")
    col.close()  # checkpoint at 200 items
    col = ls.open("vecs", home=home)
    col.backend.store.insert(["late"], ["vector"], [None], [None], [{}], col.prepare_vectors(random_vectors(1, 16, 7)))
    col.backend.store.close()
    col = ls.open("vecs", home=home)
    assert col.search(random_vectors(1, 16, 7)[0], k=1)[0].id == "late"
    assert col.backend.index.ntotal == 201
    assert "rebuilding" not in caplog.text
    col.close()


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "garbage", "delete", "checkpoint"])
def test_corrupt_index_is_rebuilt_from_sqlite(home, damage, caplog):
    col = make(home, n=500, index="hnsw")
    col.close()
    path = home / "vecs" / INDEX_FILE
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(flipped))
    elif damage == "garbage":
        path.write_bytes(b"not a faiss index")
    elif damage == "delete":
        path.unlink()
    else:
        (home / "vecs" / CHECKPOINT_FILE).write_text("{broken")
    col = ls.open("vecs", home=home)
    vectors = random_vectors(500, 16, 0)
    assert col.search(vectors[123], k=1)[0].id == "v123"
    assert col.backend.index.ntotal == 500
    if damage != "delete":
        assert "rebuilding the index" in caplog.text
    col.close()
    # The rebuilt index was checkpointed: the next open loads it as is.
    caplog.clear()
    col = ls.open("vecs", home=home)
    col.search(vectors[1], k=1)
    assert "rebuilding" not in caplog.text
    col.close()


def test_encoder_mismatch_is_refused(home):
    make(home).close()
    with pytest.raises(ls.EncoderMismatchError, match="built with encoder 'precomputed'"):
        ls.open("vecs", home=home, encoder="minilm")


def test_ivf_moves_from_exact_to_trained_index_as_it_grows(home):
    col = make(home, n=100, index="ivf")
    assert col.backend.index.factory == "Flat"
    vectors = random_vectors(2000, 16, 5)
    col.add([f"w{i}" for i in range(2000)], vectors=vectors)
    assert col.backend.index.factory.startswith("IVF")
    assert col.search(vectors[10], k=1, nprobe=64)[0].id == "w10"
    col.close()
