"""Recommendations: strategies, diversity, histories, learned user factors, and bad input."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.cli import app

DIM = 8


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def cluster(center, n, spread, seed):
    rng = np.random.default_rng(seed)
    return np.stack([unit(center + spread * rng.normal(size=DIM)) for _ in range(n)])


E = np.eye(DIM, dtype=np.float32)


@pytest.fixture
def clusters(home):
    """Clusters a (around e0), b (around e1), m (halfway between a and b), n (around e0+e2)."""
    groups = {
        "a": cluster(E[0], 20, 0.05, 1),
        "b": cluster(E[1], 20, 0.05, 2),
        "m": cluster(E[0] + E[1], 20, 0.05, 3),
        "n": cluster(E[0] + 0.8 * E[2], 20, 0.05, 4),
    }
    col = ls.create("rec", encoder="precomputed", dim=DIM, index="hnsw", home=home)
    for name, vectors in groups.items():
        col.add([f"{name}{i}" for i in range(len(vectors))], vectors=vectors, metadata=[{"group": name}] * len(vectors))
    yield col
    col.close()


def groups(hits):
    return [h.id[0] for h in hits]


def test_average_recommends_near_the_positives_and_excludes_them(clusters):
    hits = clusters.recommend(["a0", "a1"], k=10)
    assert groups(hits) == ["a"] * 10
    assert not {"a0", "a1"} & {h.id for h in hits}
    assert "a2" not in [h.id for h in clusters.recommend(["a0"], k=30, exclude=["a2"])]


def test_a_negative_example_pushes_its_neighbours_down(clusters):
    plain = groups(clusters.recommend(["a0"], k=40))
    steered = groups(clusters.recommend(["a0"], ["n0"], k=40))

    def mean_rank_of_n(ranking):
        return np.mean([i for i, g in enumerate(ranking) if g == "n"] or [40])

    assert "n" in plain[:40]
    assert mean_rank_of_n(steered) > mean_rank_of_n(plain) + 3
    # best_score: candidates closer to the negative than to any positive fall below all others.
    best = clusters.recommend(["a0"], ["n0"], k=40, strategy="best_score")
    scores = [h.score for h in best]
    assert all(s < 0 for h, s in zip(best, scores) if h.id.startswith("n"))
    assert groups(best)[:19] == ["a"] * 19


def test_best_score_differs_from_average_for_two_distant_positives(clusters):
    average = groups(clusters.recommend(["a0", "b0"], k=10, strategy="average"))
    best = groups(clusters.recommend(["a0", "b0"], k=10, strategy="best_score"))
    assert average.count("m") >= 8  # the mean of a and b lies in m
    assert set(best) <= {"a", "b"} and "a" in best and "b" in best


def test_diversity_spreads_recommendations(clusters):
    # Cluster a holds near-duplicates: pure relevance returns only them, MMR mixes in other clusters.
    plain = groups(clusters.recommend(["a0"], k=10))
    diverse = groups(clusters.recommend(["a0"], k=10, diversity=0.7))
    assert plain == ["a"] * 10
    assert diverse[0] == "a" and len(set(diverse)) >= 2
    slightly = groups(clusters.recommend(["a0"], k=10, diversity=0.1))
    assert slightly.count("a") >= diverse.count("a")


def test_filters_apply_to_recommendations(clusters):
    hits = clusters.recommend(["a0"], k=5, where={"group": "b"})
    assert groups(hits) == ["b"] * 5


def test_history_recency_decay(clusters):
    old, recent = 0.0, 90 * 24 * 3600.0
    history = [("a0", 1.0, old), ("a1", 1.0, old), ("b0", 1.0, recent)]
    decayed = groups(clusters.recommend_for(history, k=5, half_life=7 * 24 * 3600))
    assert decayed == ["b"] * 5  # the old a-items count ~0.01 each
    equal = groups(clusters.recommend_for(["a0", "a1", "b0"], k=5))
    assert "b" not in equal  # without decay, two a-items outweigh one b-item
    weighted = groups(clusters.recommend_for([("a0", 1.0), ("b0", 10.0)], k=5))
    assert weighted == ["b"] * 5
    seen = {"a0", "a1", "b0"}
    assert not seen & {h.id for h in clusters.recommend_for(list(seen), k=60)}
    dicts = clusters.recommend_for([{"id": "b0", "timestamp": recent}, {"id": "a0", "timestamp": old}], k=3)
    assert groups(dicts) == ["b"] * 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.recommend(["ghost"]), "unknown id 'ghost'"),
        (lambda c: c.recommend([]), "at least one positive"),
        (lambda c: c.recommend(None, ["a0"]), "at least one positive"),
        (lambda c: c.recommend([[1.0, 2.0]]), "wrong vector dimension"),
        (lambda c: c.recommend([[np.nan] * DIM]), "NaN"),
        (lambda c: c.recommend(["a0"], strategy="magic"), "unknown strategy"),
        (lambda c: c.recommend(["a0"], diversity=1.5), "diversity"),
        (lambda c: c.recommend(["a0"], k=0), "k must be"),
        (lambda c: c.recommend(["a0"], ["a0"], negative_weight=1.0), "cancel out"),
        (lambda c: c.recommend([{"colour": "red"}]), "must be"),
        (lambda c: c.recommend([{"text": "hi"}]), "precomputed vectors"),
        (lambda c: c.recommend(user="nobody"), "unknown user 'nobody'"),
        (lambda c: c.recommend_for([]), "non-empty list"),
        (lambda c: c.recommend_for([("a0", -1.0)]), "weight -1.0"),
        (lambda c: c.recommend_for([("a0", 1.0, 5.0), "a1"]), "timestamp for every"),
        (lambda c: c.recommend_for(["ghost"]), "unknown id 'ghost'"),
    ],
)
def test_bad_input_gives_clear_errors(clusters, call, message):
    with pytest.raises(ls.LatentSearchError, match=message):
        call(clusters)


def test_recommend_by_meaning_with_minilm(topics):
    hits = topics.recommend(["cooking-0", "cooking-1"], k=3)
    assert [h.metadata["topic"] for h in hits] == ["cooking"] * 3
    by_text = topics.recommend([{"text": "stars and planets"}, "astronomy-0"], k=3)
    assert [h.metadata["topic"] for h in by_text] == ["astronomy"] * 3
    assert "astronomy-0" not in [h.id for h in by_text]


@pytest.fixture
def ratings(tmp_path):
    """Two taste groups: users u0-u9 like items g0-g9, users v0-v9 like items h0-h9; each user saw 6."""
    rng = np.random.default_rng(0)
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for group, items in (("u", "g"), ("v", "h")):
        for user in range(10):
            for t, item in enumerate(rng.choice(10, size=6, replace=False)):
                rows.append(f"{group}{user}\t{items}{item}\t{rng.integers(3, 6)}\t{1000 + t}")
    rows.append("v0\tg0\t1\t999")  # a stray interaction across groups
    path = tmp_path / "ratings.inter"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_fit_interactions_recommends_from_the_users_taste(home, ratings):
    col = ls.fit_interactions(ratings, into="cf", rating="rating", time="timestamp", factors=4, home=home)
    assert col.metric == "ip" and col.count() == 20 and col.user_count() == 20
    _, history = col.user_profile("u3")
    assert len(history) == 6 and [t for _, t in history] == sorted(t for _, t in history)
    seen = {item for item, _ in history}
    hits = col.recommend(user="u3", k=4)
    assert len(hits) == 4
    assert all(h.id.startswith("g") and h.id not in seen for h in hits)
    assert all(h.metadata["interactions"] >= 1 for h in hits)
    col.close()


def test_blend_with_a_content_collection(home, ratings):
    cf = ls.fit_interactions(ratings, into="cf", factors=4, home=home)
    content = ls.create("content", encoder="precomputed", dim=DIM, home=home)
    ids = [f"{p}{i}" for p in "gh" for i in range(10)]
    content.add(ids, vectors=np.stack([unit(E[0] if i[0] == "g" else E[1]) + 0.01 * k for k, i in enumerate(ids)]))
    pure = cf.recommend(user="u3", k=4, blend=content, blend_weight=0.0)
    assert [h.id for h in pure] == [h.id for h in cf.recommend(user="u3", k=4)]
    blended = cf.recommend(user="u3", k=4, blend=content, blend_weight=0.5)
    assert len(blended) == 4 and all(h.id.startswith("g") for h in blended)
    _, history = cf.user_profile("u3")
    assert not {h.id for h in blended} & {item for item, _ in history}
    cf.close()
    content.close()


def test_cli_recommend_and_fit_interactions(home, ratings, clusters):
    runner = CliRunner()
    result = runner.invoke(
        app, ["fit-interactions", str(ratings), "--into", "cf", "--rating", "rating", "--factors", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "20 items and 20 users" in result.stdout
    again = runner.invoke(app, ["fit-interactions", str(ratings), "--into", "cf"])
    assert again.exit_code == 1 and "already exists" in again.stderr
    hits = json.loads(runner.invoke(app, ["recommend", "cf", "--user", "u1", "-k", "3", "--json"]).stdout)
    assert len(hits) == 3 and all(h["id"].startswith("g") for h in hits)
    hits = json.loads(runner.invoke(app, ["recommend", "rec", "--like", "a0,a1", "--unlike", "n0", "--json"]).stdout)
    assert len(hits) == 10 and not {"a0", "a1"} & {h["id"] for h in hits}
    table = runner.invoke(app, ["recommend", "rec", "--like", "a0", "--diversity", "0.3", "-k", "3"])
    assert table.exit_code == 0 and "a" in table.stdout
    bad = runner.invoke(app, ["recommend", "rec"])
    assert bad.exit_code == 1 and "give --like" in bad.stderr
    missing = runner.invoke(app, ["fit-interactions", str(ratings), "--into", "x", "--user", "customer"])
    assert missing.exit_code == 1 and "no column 'customer'" in missing.stderr


@pytest.mark.parametrize("step", ["add", "put_users"])
def test_fit_interactions_that_fails_midway_leaves_nothing_and_reruns(home, ratings, monkeypatch, step):
    """The steps of fit_interactions happen in a hidden work folder: a failure in any of them leaves no
    collection under the name (and no work folder), so a rerun builds it. (tests/test_crash_points.py
    kills it before each file operation, in the slow suite.)"""
    from latentsearch.collection import Collection

    def fail(*args, **kwargs):
        raise RuntimeError(f"killed in {step}")

    with monkeypatch.context() as patch:
        patch.setattr(Collection, step, fail)
        with pytest.raises(RuntimeError, match=f"killed in {step}"):
            ls.fit_interactions(ratings, into="cf", factors=4, home=home)
    assert "cf" not in ls.list_collections(home=home)
    assert [p.name for p in home.iterdir() if p.name.startswith(".")] == []
    col = ls.fit_interactions(ratings, into="cf", factors=4, home=home)
    assert col.user_count() == 20 and col.count() == 20 and len(col.recommend(user="u1", k=3)) == 3
    col.close()
