"""Outlier scorers, thresholds, explanations and new-item checks."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.analysis.outliers import EnsembleScorer, IsolationForestScorer, KNNScorer, LOFScorer, make_scorer
from latentsearch.cli import app


def planted(n=1000, n_out=10, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(n, dim)).astype(np.float32)
    far = (rng.normal(size=(n_out, dim)) * 0.5 + 8 * rng.choice([-1, 1], size=(n_out, dim))).astype(np.float32)
    return np.concatenate([normal, far]), set(range(n, n + n_out))


@pytest.fixture
def planted_collection(home):
    vectors, _ = planted(n=990)
    col = ls.create("pl", encoder="precomputed", dim=8, metric="l2", index="hnsw", home=home)
    ids = [f"n{i}" for i in range(990)] + [f"out{i}" for i in range(10)]
    col.add(ids, vectors=vectors, metadata=[{"i": i} for i in range(len(ids))])
    yield col
    col.close()


@pytest.mark.parametrize("method", ["knn", "lof", "iforest", "ensemble"])
def test_planted_anomalies_are_flagged(planted_collection, method):
    results = planted_collection.outliers(method, k=10, contamination=0.01)
    assert len(results) == 10
    found = {r.id for r in results}
    assert len({f"out{i}" for i in range(10)} & found) >= 9
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_knn_and_lof_match_brute_force_and_scikit_learn():
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

    vectors, _ = planted(n=400, n_out=5)
    knn = KNNScorer(5).fit(vectors)
    dists, _ = NearestNeighbors(n_neighbors=6).fit(vectors).kneighbors(vectors)
    assert np.allclose(knn.train_scores_, dists[:, 5], atol=1e-4)
    mean = KNNScorer(5, aggregate="mean").fit(vectors)
    assert np.allclose(mean.train_scores_, dists[:, 1:].mean(1), atol=1e-4)
    lof = LOFScorer(5).fit(vectors)
    reference = -LocalOutlierFactor(n_neighbors=5).fit(vectors).negative_outlier_factor_
    assert np.allclose(lof.train_scores_, reference, rtol=1e-3)
    new = np.random.default_rng(9).normal(size=(20, 8)).astype(np.float32)
    sk = LocalOutlierFactor(n_neighbors=5, novelty=True).fit(vectors)
    assert np.allclose(lof.score_samples(new), -sk.score_samples(new), rtol=1e-3)


def test_off_topic_sentence_is_flagged_with_minilm(home):
    cooking = [
        "Simmer the tomato sauce with garlic and basil.",
        "Knead the dough until smooth and let it rise.",
        "Roast the vegetables with olive oil and salt.",
        "Whisk the eggs and sugar for the sponge cake.",
        "Season the soup with pepper and lemon.",
        "Fry the onions until golden before adding rice.",
        "Bake the bread in a hot oven for forty minutes.",
        "Marinate the chicken in yogurt and spices overnight.",
        "Chop the herbs finely and sprinkle them over the pasta.",
        "Melt the butter and stir in the flour for a roux.",
        "Grill the fish and serve it with a wedge of lime.",
        "Blanch the beans, then plunge them into ice water.",
        "Caramelise the sugar slowly for the custard topping.",
        "Toast the spices in a dry pan to release their aroma.",
        "Slice the potatoes thinly for the gratin.",
        "The telescope detected radio bursts from a distant galaxy.",
    ]
    col = ls.create("kitchen", index="flat", home=home)
    col.add([f"c{i}" for i in range(len(cooking))], cooking)
    for method in ("knn", "lof"):
        top = col.outliers(method, k=3, contamination=0.05)
        assert top[0].id == "c15", method
        assert "telescope" in top[0].text
    checked = col.check(["Stir the risotto until creamy.", "Interest rates rose again this quarter."], k=3, fpr=0.1)
    assert [r.flagged for r in checked] == [False, True]
    assert checked[1].score > checked[0].score
    assert col.count() == len(cooking)  # checking adds nothing


@pytest.mark.parametrize(
    ("threshold", "rate"),
    [({"fpr": 0.05}, 0.05), ({"contamination": 0.05}, 0.05), ({"percentile": 90}, 0.10), ({"fpr": 0.01}, 0.01)],
)
@pytest.mark.parametrize("method", ["knn", "lof", "iforest"])
def test_false_alarm_rate_on_held_out_normal_data(threshold, rate, method):
    rng = np.random.default_rng(1)
    fit, held_out = rng.normal(size=(3000, 6)), rng.normal(size=(6000, 6))
    scorer = make_scorer(method, k=10, **threshold).fit(fit)
    observed = scorer.predict(held_out).mean()
    assert abs(observed - rate) < max(0.35 * rate, 0.006), (method, threshold, observed)
    p = scorer.p_values(scorer.score_samples(held_out))
    assert abs((p <= 0.05).mean() - 0.05) < 0.015  # conformal p-values are calibrated


def test_explanations(planted_collection):
    results = planted_collection.outliers("knn", k=10, contamination=0.01, neighbors=4)
    flagged = {r.id for r in results}
    for r in results:
        assert r.flagged and r.percentile >= 99.0 and r.p_value <= 0.011
        assert len(r.neighbors) == 4
        assert all(n["id"] not in flagged for n in r.neighbors)  # nearest *normal* items
        distances = [n["distance"] for n in r.neighbors]
        assert distances == sorted(distances) and distances[0] > 0
    everything = planted_collection.outliers("knn", flagged_only=False, top=30)
    assert len(everything) == 30 and sum(r.flagged for r in everything) == 10


def test_scores_written_back_as_metadata(planted_collection):
    planted_collection.outliers("knn", contamination=0.01, write=True)
    items = planted_collection.get(["out3", "n5"])
    assert items[0].metadata["outlier"] is True and items[1].metadata["outlier"] is False
    assert items[0].metadata["outlier_score"] > items[1].metadata["outlier_score"]
    assert items[1].metadata["i"] == 5  # other metadata kept
    hits = planted_collection.search(like="n0", k=20, where="outlier = true")
    assert {h.id for h in hits} == {f"out{i}" for i in range(10)}


def test_check_new_vectors(planted_collection):
    rng = np.random.default_rng(5)
    normal = rng.normal(size=(5, 8))
    far = normal + 12
    results = planted_collection.check(np.concatenate([normal, far]), fpr=0.01)
    assert [r.flagged for r in results] == [False] * 5 + [True] * 5
    assert all(r.neighbors for r in results)


def test_ensemble_is_a_rank_average(planted_collection):
    scorer = EnsembleScorer([KNNScorer(5), IsolationForestScorer()], contamination=0.01).fit(planted_collection)
    assert scorer.train_scores_.min() >= 0 and scorer.train_scores_.max() <= 100
    knn, forest = scorer.scorers
    expected = (knn.percentiles(knn.train_scores_) + forest.percentiles(forest.train_scores_)) / 2
    assert np.allclose(scorer.train_scores_, expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.outliers("zscore"), "unknown outlier method"),
        (lambda c: c.outliers("knn", k=5000), "needs more than 5000 items"),
        (lambda c: c.outliers("knn", k=0), "k must be"),
        (lambda c: c.outliers("knn", contamination=0.6), "contamination must be"),
        (lambda c: c.outliers("knn", contamination=0.1, fpr=0.1), "give one threshold"),
        (lambda c: c.check([[1.0, 2.0]]), "wrong vector dimension"),
        (lambda c: c.check([[np.nan] * 8]), "NaN"),
        (lambda c: c.check(["some text"]), "precomputed vectors"),
    ],
)
def test_bad_input(planted_collection, call, message):
    with pytest.raises(ls.LatentSearchError, match=message):
        call(planted_collection)


def test_too_few_items(home):
    col = ls.create("tiny", encoder="precomputed", dim=2, home=home)
    col.add(["a", "b"], vectors=[[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ls.InvalidInputError, match="fewer than 3 items"):
        col.outliers()
    with pytest.raises(ls.InvalidInputError, match="not fitted"):
        KNNScorer().score_samples([[1.0, 2.0]])


def test_cli_outliers_and_check(planted_collection, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["outliers", "pl", "--top", "5", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 5 and all(r["id"].startswith("out") and r["flagged"] for r in rows)
    table = runner.invoke(app, ["outliers", "pl", "--method", "lof", "--write"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "nearest normal items" in table.stdout and "wrote outlier_score" in table.stdout
    np.save(tmp_path / "q.npy", np.full((1, 8), 12.0, dtype=np.float32))
    checked = json.loads(runner.invoke(app, ["check", "pl", "--vectors", str(tmp_path / "q.npy"), "--json"]).stdout)
    assert checked[0]["flagged"] is True
    bad = runner.invoke(app, ["check", "pl"])
    assert bad.exit_code == 1 and "give texts" in bad.stderr
