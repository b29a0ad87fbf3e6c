"""Cluster labels and density clustering on text whose topics are known.

Data: descriptions of Debian packages from 12 archive sections (:func:`benchmarks.datasets.debian_packages`,
about 2,900 texts; the section is the topic) and the demo corpus (Python's documentation, about 1,100
texts; the module, or "help topic", is the topic), both on the default encoder.

Measured, side by side in one run:

- **labels** of k-means clusters (12 on the packages, 20 on the demo): *topic hits*, the share of
  clusters whose label holds one of the 15 words most typical of the cluster's majority topic
  (log-odds with an informative Dirichlet prior, Monroe et al. 2008, computed from the known topics);
  *first*, the share whose first word is one; *generic*, the share of labels holding a word found in
  at least 15% of all texts ("package", "contains", "files"). latentsearch's labels against
  BERTopic's default c-TF-IDF (no ``reduce_frequent_words``, no distinctiveness filter), the
  labeller before;
- ``-n auto``: noise share, number of clusters and the adjusted Rand index of the clustered items
  against their topics, for latentsearch's UMAP (5-d) + HDBSCAN against HDBSCAN on the raw vectors
  with the earlier minimum size (min(15, n / 20)).

It also draws the demo corpus's map coloured by cluster (``benchmarks/results/demo_clusters.png``) and
puts the demo's cluster table in the README.

Usage: ``python -m benchmarks.clusters``
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter

import numpy as np

from benchmarks import report
from benchmarks.datasets import cache_dir, debian_packages

TOPIC_WORDS = 15  # typical words per known topic
GENERIC_SHARE = 0.15  # a word in this share of all texts or more is generic
K = {"packages": 12, "demo": 20}


def typical_words(texts: list[str], topics: list[str]) -> dict[str, set[str]]:
    """The TOPIC_WORDS words most over-represented in each topic (log-odds ratio with an informative
    Dirichlet prior, z-scored)."""
    from sklearn.feature_extraction.text import CountVectorizer

    from latentsearch.analysis.latent import LABEL_TOKENS

    vectorizer = CountVectorizer(stop_words="english", token_pattern=LABEL_TOKENS, min_df=3)
    counts = vectorizer.fit_transform(texts)
    vocab = vectorizer.get_feature_names_out()
    total = np.asarray(counts.sum(0)).ravel().astype(float)
    prior = total / total.sum() * 500
    labels = np.array(topics)
    out = {}
    for topic in sorted(set(topics)):
        yi = np.asarray(counts[labels == topic].sum(0)).ravel()
        yj = total - yi
        a = prior.sum()
        delta = np.log((yi + prior) / (yi.sum() + a - yi - prior)) - np.log((yj + prior) / (yj.sum() + a - yj - prior))
        z = delta / np.sqrt(1 / (yi + prior) + 1 / (yj + prior))
        out[topic] = set(vocab[np.argsort(-z)[:TOPIC_WORDS]])
    return out


def generic_words(texts: list[str]) -> set[str]:
    from sklearn.feature_extraction.text import CountVectorizer

    from latentsearch.analysis.latent import LABEL_TOKENS

    vectorizer = CountVectorizer(stop_words="english", token_pattern=LABEL_TOKENS, binary=True)
    share = np.asarray(vectorizer.fit_transform(texts).mean(0)).ravel()
    return set(vectorizer.get_feature_names_out()[share >= GENERIC_SHARE])


def label_scores(words: dict[int, list[str]], labels: np.ndarray, topics: np.ndarray, typical, generic) -> dict:
    hits = first_hits = generic_hits = 0
    for c, label in words.items():
        majority = Counter(topics[labels == c]).most_common(1)[0][0]
        terms = {w for term in label for w in term.split()}
        hits += bool(terms & typical[majority])
        first_hits += bool(label) and bool(set(label[0].split()) & typical[majority])
        generic_hits += bool(terms & generic)
    n = len(words)
    return {"topic_hits": hits / n, "first_word_hits": first_hits / n, "generic": generic_hits / n}


def measure(name: str, col, corpus_ids: list[str], texts: list[str], topics: list[str]) -> dict:
    from sklearn.cluster import HDBSCAN, KMeans
    from sklearn.metrics import adjusted_rand_score

    from latentsearch.analysis.latent import auto_cluster_labels, class_tfidf_words

    ids, vectors = col.matching_vectors()
    by_id = dict(zip(corpus_ids, zip(texts, topics)))
    texts = [by_id[i][0] for i in ids]
    topic_array = np.array([by_id[i][1] for i in ids])
    typical, generic = typical_words(texts, list(topic_array)), generic_words(texts)
    labels = KMeans(n_clusters=K[name], random_state=0, n_init=4).fit_predict(vectors)
    ours = class_tfidf_words(texts, labels, 5)
    plain = class_tfidf_words(texts, labels, 5, distinct_ratio=0, reduce_frequent_words=False)  # BERTopic's default
    row = {
        "corpus": name,
        "items": len(ids),
        "topics": len(set(topics)),
        "k": K[name],
        "labels": label_scores(ours, labels, topic_array, typical, generic),
        "labels_ctfidf": label_scores(plain, labels, topic_array, typical, generic),
        "examples": {str(c): {"ours": ours[c], "ctfidf": plain[c]} for c in sorted(ours)[:6]},
    }
    for method, fit in (
        ("auto", lambda: auto_cluster_labels(vectors, col.metric, 0)),
        ("hdbscan_raw", lambda: HDBSCAN(min_cluster_size=max(2, min(15, len(ids) // 20))).fit_predict(vectors)),
    ):
        start = time.perf_counter()
        found = fit()
        clustered = found != -1
        row[method] = {
            "noise": float(np.mean(~clustered)),
            "clusters": int(len(set(found.tolist()) - {-1})),
            "ari": float(adjusted_rand_score(topic_array[clustered], found[clustered])) if clustered.any() else 0.0,
            "seconds": time.perf_counter() - start,
        }
    print(f"  {name}: {row}")
    return row


def main() -> None:
    import latentsearch as ls
    from latentsearch.workflows.demo import demo_corpus
    from latentsearch.workflows.maps import draw_map

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = ls.connect(tmp)
        packages = debian_packages()["docs"]
        demo = demo_corpus()
        corpora = {
            "packages": ([d["id"] for d in packages], [d["text"] for d in packages], [d["section"] for d in packages]),
            "demo": (
                [d["id"] for d in demo],
                [d["text"] for d in demo],
                [d["metadata"].get("module", "help topics") for d in demo],
            ),
        }
        for name, (ids, texts, topics) in corpora.items():
            print(f"{name}: encoding {len(ids):,} texts")
            col = db.create(name, index="hnsw")
            cached = cache_dir() / f"clusters-{name}-{len(ids)}-minilm.npy"  # the encoding is most of the run
            if cached.exists():
                col.add(ids, texts, vectors=np.load(cached))
            else:
                col.add(ids, texts)
                np.save(cached, col.vectors_of(ids))
            rows.append(measure(name, col, ids, texts, topics))
            if name == "demo":
                found = col.clusters(K[name], seed=0)
                table = [[c.cluster, c.size, c.label, c.examples[0]["id"]] for c in found]
                draw_map(col, report.RESULTS / "demo_clusters.png", method="umap", color_by="cluster_label")
            col.close()
    results = {"corpora": rows, "demo_clusters": table}
    path = report.save("clusters", results)  # (adds the machine the figures come from)
    update_readme(results)
    print(f"saved {path}")


def _labels(scores: dict) -> str:
    return f"{scores['topic_hits']:.0%} / {scores['first_word_hits']:.0%} / {scores['generic']:.0%}"


def update_readme(results: dict) -> None:
    rows = []
    for r in results["corpora"]:
        rows.append(
            [
                f"{r['corpus']} ({r['items']:,} texts, {r['topics']} topics)",
                r["k"],
                _labels(r["labels"]),
                _labels(r["labels_ctfidf"]),
                f"{r['auto']['noise']:.0%}, {r['auto']['clusters']} clusters, ARI {r['auto']['ari']:.2f}",
                f"{r['hdbscan_raw']['noise']:.0%}, {r['hdbscan_raw']['clusters']} clusters, "
                f"ARI {r['hdbscan_raw']['ari']:.2f}",
            ]
        )
    text = (
        "Labels of k-means clusters (*topic*: share of labels holding one of the 15 words most typical of the "
        "cluster's majority topic; *first*: share whose first word is one; *generic*: share holding a word "
        "found in 15% of all texts or more; the baseline is BERTopic's default c-TF-IDF), and `-n auto` "
        "(noise share, clusters, adjusted Rand index of the clustered items against the known topics):\n\n"
        + report.markdown_table(
            [
                "corpus",
                "k",
                "labels: topic / first / generic",
                "BERTopic c-TF-IDF",
                "`-n auto` (UMAP + HDBSCAN)",
                "HDBSCAN on raw vectors",
            ],
            rows,
        )
        + "\n\nThe demo corpus (`latentsearch demo`), `latentsearch clusters demo -n 20`:\n\n"
        + report.markdown_table(["cluster", "size", "label", "example"], results["demo_clusters"])
        + "\n\n![the demo corpus, UMAP, coloured by cluster](benchmarks/results/demo_clusters.png)\n\n"
        + f"`python -m benchmarks.clusters`; {results['machine']['cpu_count']} CPU cores, {results['machine']['date']}."
    )
    report.update_readme("clusters", text)


if __name__ == "__main__":
    main()
