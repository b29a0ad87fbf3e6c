"""Sharded collections on a local Ray cluster: the same answers as one collection, and no silent loss."""

import json
import time

import numpy as np
import pytest

import latentsearch as ls

ray = pytest.importorskip("ray", reason='needs Ray: pip install "latentsearch[distributed]"')

from latentsearch.backends.sharded import ShardError, is_sharded, shard_of  # noqa: E402

from .conftest import random_vectors, topic_items  # noqa: E402

N, DIM = 1500, 16


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture
def pair(home):
    """The same data in one flat collection and in a flat collection of three shards."""
    vectors = random_vectors(N, DIM, 11)
    ids = [f"v{i}" for i in range(N)]
    metadata = [{"g": i % 20, "word": f"token{i % 50}"} for i in range(N)]
    texts = [f"item {i} about token{i % 50}" for i in range(N)]
    single = ls.create("single", encoder="precomputed", dim=DIM, index="flat", home=home)
    single.add(ids, texts, vectors=vectors, metadata=metadata)
    sharded = ls.create("sharded", encoder="precomputed", dim=DIM, index="flat", home=home, shards=3)
    assert sharded.add(ids, texts, vectors=vectors, metadata=metadata) == N
    yield single, sharded, vectors
    single.close()
    sharded.close()


def as_pairs(hits):
    return [(h.id, round(h.score, 5)) for h in hits]


def test_items_are_routed_by_a_stable_hash(pair, home):
    single, sharded, _ = pair
    assert is_sharded("sharded", home) and "sharded" in ls.list_collections(home=home)
    assert sharded.count() == N and sum(sharded.info()["shard_counts"]) == N
    counts = [sum(shard_of(f"v{i}", 3) == s for i in range(N)) for s in range(3)]
    assert sharded.info()["shard_counts"] == counts
    assert shard_of("abc", 7) == shard_of("abc", 7) and 0 <= shard_of("abc", 7) < 7
    got = sharded.get(["v5", "v1000"], with_vectors=True)
    assert [g.id for g in got] == ["v5", "v1000"] and np.allclose(
        got[0].vector, single.get(["v5"], with_vectors=True)[0].vector
    )


def test_search_filters_and_more_like_this_equal_one_collection(pair):
    single, sharded, _ = pair
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.normal(size=DIM)
        assert as_pairs(sharded.search(q, k=10)) == as_pairs(single.search(q, k=10))
        where = {"g": int(rng.integers(0, 20))}
        assert as_pairs(sharded.search(q, k=10, where=where)) == as_pairs(single.search(q, k=10, where=where))
    assert as_pairs(sharded.search(like="v7", k=5)) == as_pairs(single.search(like="v7", k=5))
    for where in (None, {"g": 7}):
        expected = as_pairs(single.search("token7 item", k=40, mode="lexical", where=where))
        assert as_pairs(sharded.search("token7 item", k=40, mode="lexical", where=where)) == expected
    for item in ("v7", "v1234"):  # hybrid: the item's vector and its text, fused
        expected = as_pairs(single.search(like=item, k=10, mode="hybrid"))
        assert as_pairs(sharded.search(like=item, k=10, mode="hybrid")) == expected

    # Explanations and snippets too (scores rounded: floats summed in another order).
    def explained(col, **query):
        hits = col.search(k=8, explain=True, **query)
        return [
            (h.id, h.snippet, {k: round(v, 5) if isinstance(v, float) else v for k, v in h.details.items()})
            for h in hits
        ]

    for query in ({"query": "token7 item", "mode": "lexical"}, {"like": "v7", "mode": "hybrid"}):
        many = explained(sharded, **query)
        assert many == explained(single, **query) and "**token7**" in many[0][1]

    # include=: the same fields as one collection reads, vectors included.
    for include in ([], ["metadata", "vector"], ["text", "passage"]):
        one = single.search("token7 item", k=5, mode="lexical", include=include)
        many = sharded.search("token7 item", k=5, mode="lexical", include=include)
        assert [(h.id, h.text, h.metadata, h.passage, h.snippet) for h in many] == [
            (h.id, h.text, h.metadata, h.passage, h.snippet) for h in one
        ]
        assert all(np.array_equal(a.vector, b.vector) if "vector" in include else a.vector is b.vector is None
                   for a, b in zip(many, one))  # fmt: skip


def test_long_documents_on_shards_rank_by_passage_as_one_collection(home):
    """Passages on shards: the same documents, passages, ranks and snippets as one collection. The
    documents are encoded once, by the single collection, and written to the shards as they are
    stored (what ``resize`` moves), so no encoder actor needs to start."""
    from .test_passages import COOKING, QUERY, report

    single = ls.create("single-docs", home=home)
    ids = ["report", "cake", "memo", "long"]
    texts = [report(), COOKING, "A memo about the canteen menu.", report(90, tail="Closing remarks.")]
    single.add(ids, texts, metadata=[{"n": i} for i in range(4)])
    sharded = ls.create("sharded-docs", home=home, shards=3)
    sharded.backend.write(single.backend.batch_of(ids), upsert=False)
    assert sharded.passage_count() == single.passage_count() > 10 and sharded.count() == 4

    def seen(hits):
        return [(h.id, round(h.score, 5), h.passage.index, h.passage.start, h.passage.end, h.snippet) for h in hits]

    query = single.encode([QUERY])[0]
    assert seen(sharded.search(query, k=4)) == seen(single.search(query, k=4))
    assert sharded.search(query, k=1)[0].passage.index > 0
    ranks = [(h.id, h.passage.rank) for h in sharded.search(query, k=4)]
    assert ranks == [(h.id, h.passage.rank) for h in single.search(query, k=4)]
    for options in ({"mode": "lexical"}, {"where": {"n": 2}}):
        text = {"query": "volcano lava ash"} if options.get("mode") else {"query": query}
        assert seen(sharded.search(k=3, **text, **options)) == seen(single.search(k=3, **text, **options))
    assert seen(sharded.search(like="long", k=3, mode="hybrid")) == seen(single.search(like="long", k=3, mode="hybrid"))
    assert [p.start for p in sharded.passages("report")] == [p.start for p in single.passages("report")]
    sharded.resize(2)  # moved items keep their passages
    assert seen(sharded.search(query, k=4)) == seen(single.search(query, k=4))
    assert sharded.passage_count() == single.passage_count()
    sharded.upsert(["report"], vectors=single.vectors_of(["cake"]), texts=[COOKING])  # a long one becomes short
    assert sharded.passage_count() == single.passage_count() - len(single.passages("report")) + 1
    sharded.close()
    single.close()


def test_recommendations_equal_one_collection(pair):
    single, sharded, _ = pair
    for strategy in ("average", "best_score"):
        expected = single.recommend(["v1", "v2"], ["v3"], k=8, strategy=strategy)
        got = sharded.recommend(["v1", "v2"], ["v3"], k=8, strategy=strategy)
        assert as_pairs(got) == as_pairs(expected), strategy
    with pytest.raises(ls.ItemNotFoundError):
        sharded.recommend(["ghost"])
    # Diversity, histories and filters run through the same code as one collection's.
    for options in ({"diversity": 0.5}, {"where": {"g": 4}, "strategy": "best_score", "diversity": 0.3}):
        assert as_pairs(sharded.recommend(["v1", "v9"], k=6, **options)) == as_pairs(
            single.recommend(["v1", "v9"], k=6, **options)
        ), options
    history = [("v1", 1.0, 1000.0), ("v2", 2.0, 5000.0)]
    assert as_pairs(sharded.recommend_for(history, k=5, half_life=3600)) == as_pairs(
        single.recommend_for(history, k=5, half_life=3600)
    )
    with pytest.raises(ls.ItemNotFoundError, match="unknown user 'u1'"):
        sharded.recommend(user="u1")


@pytest.mark.slow  # about 40 s: fits interactions on shards
def test_learned_users_on_shards_equal_one_collection(home, tmp_path):
    rng = np.random.default_rng(5)
    rows = ["user_id\titem_id\trating\ttimestamp"]
    for u in range(30):
        group = "g" if u % 2 else "h"
        for t, i in enumerate(rng.choice(15, size=6, replace=False)):
            rows.append(f"u{u}\t{group}{i}\t{rng.integers(1, 6)}\t{1000 + t}")
    path = tmp_path / "ratings.tsv"
    path.write_text("\n".join(rows) + "\n")
    options = {"rating": "rating", "time": "timestamp", "factors": 6, "home": home}
    single = ls.fit_interactions(path, into="one", **options)
    sharded = ls.fit_interactions(path, into="many", shards=3, **options)
    assert is_sharded("many", home) and sharded.user_count() == single.user_count() == 30
    for user in ("u1", "u4"):
        got, expected = sharded.recommend(user=user, k=5), single.recommend(user=user, k=5)
        assert as_pairs(got) == as_pairs(expected) and len(got) == 5
        seen = {item for item, _ in sharded.user_profile(user)[1]}
        assert not seen & {h.id for h in got}
    assert as_pairs(sharded.recommend(user="u1", k=5, diversity=0.4)) == as_pairs(
        single.recommend(user="u1", k=5, diversity=0.4)
    )
    single.close()
    sharded.close()


@pytest.mark.slow  # about 40 s: fits interactions on shards twice
def test_sharded_fit_interactions_and_create_are_atomic(home, tmp_path, monkeypatch):
    """Sharded collections are built in a hidden work folder too: a failure while storing the users
    (or while creating the shards) leaves nothing under the name, and a rerun builds it whole."""
    from latentsearch.backends.local import LocalBackend
    from latentsearch.backends.sharded import ShardedBackend

    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id\n" + "".join(f"u{u},i{(u + j) % 9}\n" for u in range(12) for j in range(3)))

    def fail(*args, **kwargs):
        raise RuntimeError("killed while storing users")

    with monkeypatch.context() as patch:
        patch.setattr(ShardedBackend, "put_users", fail)
        with pytest.raises(RuntimeError, match="killed"):
            ls.fit_interactions(path, into="cf", factors=3, shards=2, home=home)
    real_create, made = LocalBackend.create, []

    def second_shard_fails(folder, manifest):
        if folder.name.startswith("shard-"):
            if made:
                fail()
            made.append(folder.name)
        return real_create(folder, manifest)

    with monkeypatch.context() as patch:
        patch.setattr(LocalBackend, "create", staticmethod(second_shard_fails))
        with pytest.raises(RuntimeError, match="killed"):
            ls.create("big", encoder="precomputed", dim=4, shards=2, home=home)
    assert made == ["shard-00"]
    assert ls.list_collections(home=home) == [] and list(home.iterdir()) == []
    col = ls.fit_interactions(path, into="cf", factors=3, shards=2, home=home)
    assert col.user_count() == 12 and col.count() == 9 and len(col.recommend(user="u1", k=2)) == 2
    col.close()
    again = ls.fit_interactions(path, into="cf", factors=2, shards=2, home=home, replace=True)
    assert again.dim == 2 and again.user_count() == 12
    again.close()
    assert sorted(p.name for p in home.iterdir()) == ["cf"]


def test_batch_search_and_the_latent_space_equal_one_collection(pair):
    single, sharded, vectors = pair
    queries = vectors[:6] + 0.05
    for where in (None, {"g": 3}):
        got, expected = sharded.search_batch(queries, k=5, where=where), single.search_batch(queries, k=5, where=where)
        assert [as_pairs(h) for h in got] == [as_pairs(h) for h in expected]
    steps = [(s.id, round(s.score, 5)) for s in sharded.interpolate("v1", "v2", steps=6)]
    assert steps == [(s.id, round(s.score, 5)) for s in single.interpolate("v1", "v2", steps=6)]
    assert len(steps) == 6 and not {"v1", "v2"} & {item for item, _ in steps}  # each step shows another item

    # PCA is unique up to each axis's sign: the same coordinates per item, in any order.
    one, many = single.project("pca"), sharded.project("pca")
    assert sorted(many.ids) == sorted(one.ids) and many.sampled_from == N
    mine = dict(zip(many.ids, many.coords))
    theirs = np.stack([mine[i] for i in one.ids])
    signs = np.sign((theirs * one.coords).sum(0))
    assert np.allclose(theirs * signs, one.coords, atol=1e-3)
    # The shards return the vectors in another order: PCA sums them in another order too, so the
    # coordinates agree to float noise (1e-3 above) and near-tied neighbour ranks may swap.
    assert many.trustworthiness == pytest.approx(one.trustworthiness, abs=1e-3)
    seq = sharded.seq
    assert sharded.project("pca").coords.tobytes() == many.coords.tobytes()  # from the cache

    clusters = sharded.clusters(4, seed=0)
    assert sum(c.size for c in clusters) == N and sharded.seq > seq  # written to every shard's items
    first = clusters[0]
    members = sharded.search_batch(vectors[:50], k=N, where={"cluster": first.cluster})
    assert {h.metadata["cluster_label"] for hits in members for h in hits} == {first.label}
    assert len({h.id for hits in members for h in hits}) == first.size

    sharded.update_metadata({"v1": {"tag": "x"}, "v7": {"word": None}})
    assert sharded.get(["v1"])[0].metadata["tag"] == "x" and "word" not in sharded.get(["v7"])[0].metadata
    assert [h.id for h in sharded.search(vectors[1], k=3, where={"tag": "x"})] == ["v1"]
    assert [h.id for h in sharded.search("item 1 about token1", k=3, mode="lexical", where={"tag": "x"})] == ["v1"]
    with pytest.raises(ls.ItemNotFoundError, match="nothing was updated"):
        sharded.update_metadata({"v2": {"tag": "y"}, "ghost": {"tag": "y"}})
    assert "tag" not in sharded.get(["v2"])[0].metadata
    spread = [f"v{i}" for i in range(10) if shard_of(f"v{i}", 3) != shard_of("v2", 3)][0]
    with pytest.raises(ls.InvalidInputError):  # checked before any shard writes
        sharded.update_metadata({"v2": {"tag": "y"}, spread: {"tag": float("nan")}})
    with pytest.raises(ls.InvalidInputError, match="non-empty strings"):
        sharded.update_metadata({3: {"tag": "y"}})
    assert "tag" not in sharded.get(["v2"])[0].metadata
    before = as_pairs(sharded.search(vectors[9], k=5))
    sharded.compact()
    assert as_pairs(sharded.search(vectors[9], k=5)) == before


def test_outlier_neighbours_are_found_across_shards(pair):
    single, sharded, vectors = pair
    expected, got = single.outliers("knn", k=5, contamination=0.02), sharded.outliers("knn", k=5, contamination=0.02)
    assert [r.id for r in got] == [r.id for r in expected]
    assert np.allclose([r.score for r in got], [r.score for r in expected], atol=1e-5)
    assert [n["id"] for n in got[0].neighbors] == [n["id"] for n in expected[0].neighbors]
    # Novelty checks of new vectors, and scores written back, equal one collection's too.
    new = np.stack([vectors[3] + 0.01, vectors[3] * 40 - 7])
    one, many = single.check(new, k=5, fpr=0.05), sharded.check(new, k=5, fpr=0.05)
    assert [(r.flagged, round(r.score, 4), round(r.p_value, 4)) for r in many] == [
        (r.flagged, round(r.score, 4), round(r.p_value, 4)) for r in one
    ]
    assert [n["id"] for n in many[0].neighbors] == [n["id"] for n in one[0].neighbors]
    flagged = sharded.outliers("lof", k=5, write=True)
    marked = sharded.search_batch(vectors[:1], k=N, where={"outlier": True})[0]
    assert sorted(h.id for h in marked) == sorted(r.id for r in flagged)


def test_writes_and_errors(pair):
    _, sharded, vectors = pair
    with pytest.raises(ls.ConflictError, match="already exists"):
        sharded.add(["new", "v3"], vectors=vectors[:2])
    assert sharded.count() == N  # the new id was not written either
    sharded.upsert(["v3"], vectors=-vectors[3:4])
    assert sharded.search(-vectors[3], k=1)[0].id == "v3"
    assert sharded.delete(["v3", "v4"]) == 2 and sharded.count() == N - 2
    assert "v4" not in {h.id for h in sharded.search("item 4 about token4", k=50, mode="lexical")}
    with pytest.raises(ls.ItemNotFoundError):
        sharded.delete(["v3"])
    with pytest.raises(ls.InvalidInputError, match="wrong vector dimension"):
        sharded.search([1.0, 2.0])
    with pytest.raises(ls.InvalidInputError, match="needs an autoencoder collection"):
        sharded.outliers("reconstruction")  # as on one collection: the encoder cannot reconstruct
    with pytest.raises(ls.InvalidInputError, match="nothing to encode"):
        sharded.add(["photo"], uris=["photo.jpg"])  # a vector collection: uris alone are not images
    with pytest.raises(ls.InvalidInputError, match="alpha"):
        sharded.search(like="v1", mode="hybrid", fusion="weighted", alpha=2.0)


def test_approximate_indexes_keep_their_recall(home):
    vectors, queries = random_vectors(4000, DIM, 5), random_vectors(50, DIM, 6)
    ids = [f"v{i}" for i in range(len(vectors))]
    single = ls.create("s", encoder="precomputed", dim=DIM, index="hnsw", home=home)
    single.add(ids, vectors=vectors)
    sharded = ls.create("h", encoder="precomputed", dim=DIM, index="hnsw", home=home, shards=2)
    sharded.add(ids, vectors=vectors)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def recall(col):
        total = 0.0
        for q in queries:
            truth = {ids[j] for j in np.argsort(-(normed @ (q / np.linalg.norm(q))))[:10]}
            total += len(truth & {h.id for h in col.search(q, k=10)}) / 10
        return total / len(queries)

    assert recall(sharded) >= recall(single) - 0.02  # the stated margin
    single.close()
    sharded.close()


def wait_until_dead(actor, timeout: float = 60.0) -> None:
    """ray.kill only asks for the kill: wait until the actor refuses calls, so the test does not race it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.pid.remote(), timeout=10)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError):
            return
        time.sleep(0.1)
    raise AssertionError("the killed actor kept answering")


def test_a_killed_shard_is_retried_or_reported(pair):
    _, sharded, vectors = pair
    expected = as_pairs(sharded.search(vectors[10], k=5))
    ray.kill(sharded.backend.actors[1], no_restart=False)  # Ray restarts it and retries the call
    assert as_pairs(sharded.search(vectors[10], k=5)) == expected
    ray.kill(sharded.backend.actors[2], no_restart=True)  # gone for good: an error, never a partial answer
    wait_until_dead(sharded.backend.actors[2])
    with pytest.raises(ShardError, match="is gone"):
        sharded.search(vectors[10], k=5)


def test_the_server_keeps_one_handle_per_sharded_collection(pair, home):
    from fastapi.testclient import TestClient

    from latentsearch.server import Registry, create_app

    registry = Registry(home)
    first = registry.get("sharded")
    assert registry.get("sharded") is first  # not reopened (new actors) on every request
    registry.close()
    _, sharded, vectors = pair
    with TestClient(create_app(home)) as client:
        found = client.post("/api/collections/sharded/search", json={"vector": vectors[5].tolist(), "k": 3}).json()
        drawn = client.get("/api/collections/sharded/map").json()
    assert [h["id"] for h in found] == [h.id for h in sharded.search(vectors[5], k=3)]
    assert len(drawn["ids"]) == N and drawn["texts"][0].startswith("item ")


def test_every_http_endpoint_serves_a_sharded_collection(pair, home):
    from fastapi.testclient import TestClient

    from latentsearch.server import create_app

    _, sharded, vectors = pair
    calls = [
        ("get", "/api/collections", None),
        ("get", "/api/collections/sharded", None),
        ("post", "/api/collections/sharded/items", {"items": [{"id": "new", "vector": vectors[1].tolist()}]}),
        ("get", "/api/collections/sharded/items?ids=v1&ids=new", None),
        ("post", "/api/collections/sharded/items/metadata", {"updates": {"v1": {"seen": True}}}),
        ("post", "/api/collections/sharded/search", {"query": "token3 item", "mode": "lexical", "k": 3}),
        ("post", "/api/collections/sharded/search", {"like": "v2", "mode": "hybrid", "explain": True}),
        ("post", "/api/collections/sharded/recommend", {"positive": ["v1"], "diversity": 0.3}),
        ("post", "/api/collections/sharded/recommend/history", {"history": ["v1", "v2"]}),
        ("get", "/api/collections/sharded/outliers?k=5", None),
        ("post", "/api/collections/sharded/check", {"vectors": [vectors[3].tolist()], "k": 5}),
        ("post", "/api/collections/sharded/clusters", {"n": 3}),
        ("get", "/api/collections/sharded/interpolate?start=v1&end=v2&steps=4", None),
        ("post", "/api/collections/sharded/items/delete", {"ids": ["new"]}),
    ]
    with TestClient(create_app(home)) as client:
        for method, url, body in calls:
            response = getattr(client, method)(url, **({"json": body} if body is not None else {}))
            assert response.status_code in (200, 201), (url, response.text)
        assert client.get("/api/collections/sharded/thumbnails/v1").status_code == 404
        assert client.get("/api/collections/sharded").json()["count"] == N


def test_resize_rebalances(pair):
    single, sharded, vectors = pair
    moved = sharded.resize(4)
    assert 0 < moved < N
    counts = sharded.info()["shard_counts"]
    assert counts == [sum(shard_of(f"v{i}", 4) == s for i in range(N)) for s in range(4)]
    q = vectors[42] + 0.1
    assert as_pairs(sharded.search(q, k=10)) == as_pairs(single.search(q, k=10))
    assert json.loads((sharded.path / "sharded.json").read_text())["shards"] == 4


@pytest.mark.slow  # about a minute: Ray encoder actors each load the model
def test_text_ingestion_over_encoder_actors_and_the_cli(home, tmp_path):
    from typer.testing import CliRunner

    from latentsearch.cli import app

    ids, texts, metadata = topic_items()
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t, **m}) + "\n" for i, t, m in zip(ids, texts, metadata)))
    runner = CliRunner()
    assert runner.invoke(app, ["create", "docs", "--shards", "2"]).exit_code == 0
    added = runner.invoke(app, ["add", "docs", str(path)])
    assert added.exit_code == 0, added.output
    hits = json.loads(runner.invoke(app, ["search", "docs", "telescopes and planets", "-k", "3", "--json"]).stdout)
    assert [h["metadata"]["topic"] for h in hits] == ["astronomy"] * 3
    hybrid = json.loads(
        runner.invoke(app, ["search", "docs", "parallax", "--mode", "hybrid", "-k", "2", "--json"]).stdout
    )
    assert hybrid[0]["id"] == "astronomy-3"
    listed = json.loads(runner.invoke(app, ["list", "--json"]).stdout)
    assert listed == [{"name": "docs", "count": 20, "encoder": "minilm", "dim": 384, "shards": 2}]
    drawn = runner.invoke(app, ["map", "docs", "--out", str(tmp_path / "m.png")])
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "m.png").read_bytes().startswith(b"\x89PNG")
    checked = json.loads(runner.invoke(app, ["check", "docs", "orbits of distant planets", "--json"]).stdout)
    assert checked[0]["neighbors"][0]["id"].startswith("astronomy")
    explained = runner.invoke(app, ["search", "docs", "parallax", "--explain", "--mode", "hybrid", "--json"])
    assert json.loads(explained.stdout)[0]["details"]["lexical_rank"] == 1
    varied = json.loads(
        runner.invoke(app, ["recommend", "docs", "--like", "astronomy-1", "--diversity", "0.5", "--json"]).stdout
    )
    assert len(varied) == 10 and "astronomy-1" not in [h["id"] for h in varied]
    bad = runner.invoke(app, ["outliers", "docs", "--method", "reconstruction"])
    assert (
        bad.exit_code == 1 and "needs an autoencoder collection" in bad.stderr
    )  # as on one collection: shards score reconstructions too
    # Re-encoded into a new collection: sharded like its source, searched as it was; in place refused first.
    refused = runner.invoke(app, ["reencode", "docs", "--encoder", "minilm-int8"])
    assert refused.exit_code == 1 and "is sharded: its shards cannot switch" in refused.stderr
    reencoded = runner.invoke(app, ["reencode", "docs", "--encoder", "minilm-int8", "--into", "docs8"])
    assert reencoded.exit_code == 0, reencoded.output
    listed = {c["name"]: c for c in json.loads(runner.invoke(app, ["list", "--json"]).stdout)}
    assert listed["docs8"] == {"name": "docs8", "count": 20, "encoder": "minilm-int8", "dim": 384, "shards": 2}
    hits = json.loads(runner.invoke(app, ["search", "docs8", "telescopes and planets", "-k", "3", "--json"]).stdout)
    assert [h["metadata"]["topic"] for h in hits] == ["astronomy"] * 3


def test_bad_text_numbers_and_nesting_are_refused_before_any_shard_writes(pair):
    """Issue #15 items 1-2 on shards: the driver checks, so no shard writes and nothing deep is sent."""
    _, sharded, vectors = pair
    before = (sharded.count(), sharded.seq)
    deep: dict = {"g": 1}
    for _ in range(5_000):
        deep = {"$not": deep}
    for call, message in (
        (lambda: sharded.add(["new", "\ud800"], vectors=vectors[:2]), "not valid Unicode"),
        (lambda: sharded.add(["new"], ["x\udfff"], vectors=vectors[:1]), "not valid Unicode"),
        (lambda: sharded.add(["new"], vectors=vectors[:1], metadata=[{"k": "\ud800"}]), "not valid Unicode"),
        (lambda: sharded.add(["new"], vectors=vectors[:1], metadata=[{"big": 2**64}]), "64-bit"),
        (lambda: sharded.update_metadata({"v1": {"k": "\udfff"}}), "not valid Unicode"),
        (lambda: sharded.search(vectors[0], where=deep), "nested deeper than 32"),
        (lambda: sharded.search_batch(vectors[:2], where={"g": 2**70}), "64-bit"),
        (lambda: sharded.matching_vectors(deep), "nested deeper than 32"),
        (lambda: sharded.search(vectors[0], k=10**6), "k must be from"),
        (lambda: sharded.search(vectors[0], ef_search=0), "ef_search must be from"),
        (lambda: sharded.interpolate("ghost", "ghost", steps=10**9), "steps must be from"),
    ):
        with pytest.raises(ls.InvalidInputError, match=message):
            call()
    assert (sharded.count(), sharded.seq) == before


@pytest.fixture(scope="module")
def autoencoder_images(tmp_path_factory):
    """A small autoencoder trained on digits, and a folder of digit images with one photo among them."""
    from PIL import Image
    from sklearn.datasets import load_digits, load_sample_images

    from latentsearch.encoders.autoencoder import (
        AutoencoderConfig,
        images_to_array,
        save_autoencoder,
        train_autoencoder,
    )

    config = AutoencoderConfig(image_size=16, channels=1, latent_dim=8, base_filters=8)
    digits = [Image.fromarray(np.rint(im * 255 / 16).astype(np.uint8), "L") for im in load_digits().images]
    model, losses = train_autoencoder(images_to_array(digits[:600], config), config, epochs=6, batch_size=64, seed=0)
    model_dir = save_autoencoder(model, config, tmp_path_factory.mktemp("ae") / "model", losses=losses)
    folder = tmp_path_factory.mktemp("pictures")
    for i, image in enumerate(digits[600:660]):
        image.resize((32, 32)).save(folder / f"d{i:02d}.png")
    Image.fromarray(load_sample_images().images[1][100:164, 200:264]).save(folder / "zz_photo.png")
    return model_dir, sorted(folder.iterdir())


def test_images_and_reconstruction_scores_on_shards_equal_one_collection(autoencoder_images, home):
    model_dir, files = autoencoder_images
    db = ls.connect(home)
    single = db.create("ae-one", encoder=f"ae:{model_dir}", index="flat")
    sharded = db.create("ae-many", encoder=f"ae:{model_dir}", index="flat", shards=3)
    assert type(single) is type(sharded)  # one Collection class, whatever the backend
    ids, uris = [f.name for f in files], [str(f) for f in files]
    vectors = single.encoder.encode(files)  # encoded once here: the encoder actors are the slow test's
    for col in (single, sharded):
        assert col.add(ids, vectors=vectors, uris=uris) == len(ids)
    assert [it.kind for it in sharded.get(ids[:3])] == ["image"] * 3
    assert sharded.thumbnails(ids[:5]) == single.thumbnails(ids[:5]) and len(sharded.thumbnails(ids[:5])) == 5
    for q in (0, 7, 60):
        assert as_pairs(sharded.search(vectors[q], k=6)) == as_pairs(single.search(vectors[q], k=6))
    assert as_pairs(sharded.search(like="d03.png", k=5)) == as_pairs(single.search(like="d03.png", k=5))
    one, many = (col.outliers("reconstruction", contamination=0.02, flagged_only=False) for col in (single, sharded))
    assert [(r.id, round(r.score, 6)) for r in many] == [(r.id, round(r.score, 6)) for r in one]
    assert many[0].id == "zz_photo.png" and many[0].flagged
    checked = [col.check([files[-1], files[1]], method="reconstruction", fpr=0.05) for col in (single, sharded)]
    assert [(r.flagged, round(r.score, 6)) for r in checked[1]] == [(r.flagged, round(r.score, 6)) for r in checked[0]]
    assert [r.flagged for r in checked[1]] == [True, False]
    knn = [[r.id for r in col.outliers("knn", k=5, contamination=0.05)] for col in (single, sharded)]
    assert knn[1] == knn[0]
    moved = sharded.resize(2)  # images keep their kind and thumbnail when they change shard
    assert moved > 0 and sharded.thumbnails(ids) == single.thumbnails(ids)
    assert {it.kind for it in sharded.items()} == {"image"}
    single.close()
    sharded.close()


@pytest.mark.slow  # the encoder actors each import torch and load the model
def test_image_folders_are_encoded_by_the_encoder_actors(autoencoder_images, home):
    from latentsearch.io.ingest import ingest, read_input

    model_dir, files = autoencoder_images
    db = ls.connect(home)
    single = db.create("img-one", encoder=f"ae:{model_dir}", index="flat")
    sharded = db.create("img-many", encoder=f"ae:{model_dir}", index="flat", shards=2)
    records = read_input(files[0].parent, images=True)
    for col in (single, sharded):
        assert ingest(col, records) == len(files)
    assert sharded.count() == single.count() and sharded.thumbnails(["d01.png"]) == single.thumbnails(["d01.png"])
    np.testing.assert_allclose(sharded.vectors_of(["d05.png"]), single.vectors_of(["d05.png"]), atol=1e-5)
    got, expected = sharded.search(files[4], k=5), single.search(files[4], k=5)
    assert [h.id for h in got] == [h.id for h in expected] and got[0].id == files[4].name
    single.close()
    sharded.close()


def test_a_sharded_collection_made_before_passages_is_upgraded_on_open(tmp_path):
    """A sharded collection written by the release before passages (tests/data/format-v1): every
    shard and the shared full-text store are upgraded, and every search works as before."""
    import shutil
    from pathlib import Path

    home = tmp_path / "v1"
    shutil.copytree(Path(__file__).parent / "data" / "format-v1", home)
    col = ls.open("oldshards", home=home)
    assert col.count() == 5 and col.passage_count() == 5
    assert col.search("lava", k=1, mode="lexical")[0].id == "t0"
    assert col.search("bread", k=1, mode="lexical")[0].passage.text == "item 1 about baking bread"
    vector = col.vectors_of(["t3"])[0]
    assert col.search(vector, k=1)[0].id == "t3"
    assert "t5" not in col.existing_ids(["t5"])
    col.add(["t9"], ["item 9 about volcanic lava"], vectors=vector[None, :] * -1)
    assert {h.id for h in col.search("lava", k=2, mode="lexical")} == {"t0", "t9"}
    col.close()


@pytest.mark.slow
def test_tuning_a_sharded_collection_equals_one_collection_and_persists(home):
    """The same pseudo-queries and labelled queries measure the same on shards as on one collection;
    the fusion is kept in sharded.json."""
    from .test_tuning import CODES, TICKET

    single = ls.create("single-tickets", home=home)
    help_desk = " Call the help desk if it happens again."
    texts = [TICKET.format(code=c, floor=i % 7) + help_desk for i, c in enumerate(CODES)]
    single.add(CODES, texts)
    sharded = ls.create("sharded-tickets", home=home, shards=2)
    sharded.backend.write(single.backend.batch_of(CODES), upsert=False)
    from latentsearch.search.tuning import LabelledQuery

    queries = [LabelledQuery(c, (c,)) for c in CODES[:12]]
    expected = single.tune_search(queries, sample=40)
    report = sharded.tune_search(queries, sample=40)
    assert report.measured == expected.measured and report.chosen == expected.chosen
    sharded.close()
    reopened = ls.open("sharded-tickets", home=home)
    assert reopened.search_fusion == expected.chosen
    assert reopened.reset_search_tuning()
    reopened.close()
    from latentsearch.search.fusion import DEFAULT_FUSION

    assert ls.open("sharded-tickets", home=home).search_fusion == DEFAULT_FUSION
    single.close()


def test_a_file_ingested_in_small_writes_partitions_every_shard_at_its_end(home):
    from latentsearch.io.ingest import Records, ingest

    n, dim = 24_000, 8  # about 12,000 a shard: each past the partition's 10,000
    rng = np.random.default_rng(31)
    centres = rng.normal(size=(50, dim)).astype(np.float32) * 4  # (clustered: the partition's check passes)
    vectors = (centres[rng.integers(0, 50, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    col = ls.create("bulk", encoder="precomputed", dim=dim, metric="l2", index="hnsw", home=home, shards=2)
    records = Records([f"v{i}" for i in range(n)], vectors=vectors, metadata=[{"g": i % 10} for i in range(n)])
    assert ingest(col, records) == n  # (in writes of 2,048 items: none a bulk write on any shard)
    shards = col.backend._all("info")
    assert all(info["filter_partition_lists"] for info in shards), shards
    hits = col.search(vectors[5], k=5, where="g = 5")
    assert hits[0].id == "v5" and all(h.metadata["g"] == 5 for h in hits)
    col.close()
