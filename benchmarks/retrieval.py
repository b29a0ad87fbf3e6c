"""Retrieval quality of lexical, vector, hybrid and auto search on four labelled text sets, and on long documents.

1. Reuters-21578 grain and corn subsets shipped in Debian's ``weka`` package (2,158 news articles,
   160 about grain, 69 about corn; see benchmarks/datasets.py). 20 queries below, 10 per topic, from
   keyword-style to paraphrases; an article is relevant when it carries the query's topic label.
2. Python's documentation (the demo corpus: help topics and standard-library docstrings, shipped with
   Python). 28 queries below with the API items that answer them: paraphrases ("delete a directory
   tree" -> shutil.rmtree) and identifiers ("zip_longest"), as people search code docs.

3. WordNet definitions (``wordnet_set``): 10,000 synsets' definitions; 200 queries, each a synset's
   lemmas or one of its example sentences, answered by that synset alone.
4. The long documents of section ``longdocs`` (below), with their 150 headline queries.

Reported per set and search (issue #18): nDCG@10 (binary gains), its gap to the set's best single mode,
MRR@10, recall@100 and the mean latency of one search call, for lexical, vector, RRF, the weighted
fusion of before #18, ``auto`` untuned (the default fusion), ``auto`` tuned on pseudo-queries
(``tune_search()``), and ``auto`` tuned on half the labelled queries and measured on the other half
(both ways round); then the mean over the sets and each search's worst gap.

3. Long documents (section ``longdocs``, issue #17): the Reuters articles again, without their
   headlines, concatenated 10 to 20 at a time into 129 documents (median 1,818 words, 2,527 word
   pieces), far beyond MiniLM's window of 254 word pieces. A query is one article's headline, and its
   answer is the document holding that article, which starts either in the first half of the first
   window or after the first window (see ``long_documents``). Reported per mode and position: recall@10
   and MRR@10 for a collection that embeds only the first window (``max_passages=1``, the old
   truncation) and one with passages (the defaults); how often the hit's passage shows the answer
   article; BM25 over passages (the product's lexical mode) against BM25 over whole documents; ingest
   documents/s and passages/s, and ingest time against length.

    python -m benchmarks.retrieval [--rebuild] [--only retrieval|longdocs]

Writes benchmarks/results/retrieval.json and benchmarks/results/longdocs.json, and the README tables
between the bench:retrieval and bench:longdocs markers.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import math
import re
import sqlite3
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report
from benchmarks.datasets import cache_dir, reuters

QUERIES = {
    "corn": [
        "corn",
        "maize",
        "US corn crop production estimates",
        "corn export tenders and shipments",
        "price of corn futures",
        "feed grain sales to the Soviet Union",
        "maize harvest in southern Africa",
        "sorghum and corn imports",
        "farmers idle acres under the corn program",
        "yellow kernels bought by Asian importers",
    ],
    "grain": [
        "grain",
        "wheat exports",
        "cereal crops harvest",
        "grain shipments to China",
        "agriculture department crop report",
        "rice and barley production",
        "government subsidies for wheat farmers",
        "harvest shortfall because of drought",
        "Soviet Union buys American wheat",
        "European Community export restitution tender",
    ],
}
PYDOCS_QUERIES = {
    "compress bytes in memory": ["gzip.compress", "zlib.compress", "lzma.compress"],
    "delete a directory tree": ["shutil.rmtree"],
    "find an executable on PATH": ["shutil.which"],
    "create a temporary folder that is removed automatically": ["tempfile.TemporaryDirectory", "tempfile.mkdtemp"],
    "serialize an object to a JSON string": ["json.dumps"],
    "parse a URL into its components": ["urllib.parse.urlparse", "urllib.parse.urlsplit"],
    "escape a string for use in a shell command": ["shlex.quote"],
    "split a command line like a shell would": ["shlex.split"],
    "pause the program for some seconds": ["time.sleep"],
    "walk a directory tree": ["os.walk", "os.fwalk"],
    "generate a secure random token for URLs": ["secrets.token_urlsafe", "secrets.token_hex", "secrets.token_bytes"],
    "keyed message authentication code": ["hmac", "hmac.new", "hmac.HMAC", "hmac.digest"],
    "memoize function results": ["functools.lru_cache", "functools.cache"],
    "double-ended queue with fast appends and pops at both ends": ["collections.deque"],
    "count occurrences of items": ["collections.Counter"],
    "tuple with named fields": ["collections.namedtuple", "typing.NamedTuple"],
    "fix some arguments of a function": ["functools.partial"],
    "median of data": ["statistics.median", "statistics.median_low", "statistics.median_high"],
    "run a program and capture its output": [
        "subprocess.check_output",
        "subprocess.run",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
    ],
    "create all missing parent directories": ["os.makedirs"],
    "read an environment variable": ["os.getenv"],
    "unique identifier based on host and time": ["uuid.uuid1"],
    "urlsafe_b64encode": ["base64.urlsafe_b64encode"],
    "getaddrinfo": ["socket.getaddrinfo"],
    "NamedTemporaryFile": ["tempfile.NamedTemporaryFile"],
    "file_digest": ["hashlib.file_digest"],
    "zip_longest": ["itertools.zip_longest"],
    "BoundedSemaphore": ["threading.BoundedSemaphore"],
}
MODES = {
    "lexical (BM25)": {"mode": "lexical"},
    "vector (MiniLM)": {"mode": "vector"},
    "hybrid (RRF k=60, 0.5)": {"mode": "hybrid", "fusion": "rrf", "alpha": 0.5},
    "hybrid (convex min-max 0.5, before #18)": None,  # the old weighted fusion, rebuilt from both rankings
    "auto, untuned (the default fusion)": {"mode": "auto"},
}
TUNED = "auto, tuned on pseudo-queries"
CROSS = "auto, tuned on labelled queries (2-fold)"
SINGLE = ("lexical (BM25)", "vector (MiniLM)")

# Long documents (section "longdocs"): how they are made, and what is measured on them.
LONGDOC_SEED = 17
ARTICLES_PER_DOC = (10, 20)  # inclusive bounds of one long document's article count
WINDOW = 254  # all-MiniLM-L6-v2's window in word pieces, without [CLS] and [SEP]
QUERIES_PER_BUCKET = {"first window": 50, "later": 100}
MIN_BODY_WORDS = 40  # a query's article has enough text to be found by
LENGTH_WORDS = (500, 1000, 2000, 4000)  # the linear-cost check: the same documents cut to these lengths
LENGTH_DOCS = 20  # 10,000 to 80,000 words a length: seconds of encoding even at the shortest
LONGDOC_COLLECTIONS = {  # label: (collection name, create settings)
    "before passages (first window only)": ("longdocs-first", {"max_passages": 1}),
    "passages": ("longdocs", {}),
}
DOC_BM25 = "lexical (BM25 over whole documents)"
PASSAGE_BM25 = "lexical (BM25 over passages)"
VECTOR, HYBRID = "vector (MiniLM)", "hybrid (RRF k=60)"
_TRAILER = re.compile(r"\s*Reuter\s*\x03?\s*$")
_WORD = re.compile(r"\S+")


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    """Binary-gain nDCG@k."""
    dcg = sum(1.0 / math.log2(i + 2) for i, doc in enumerate(ranked[:k]) if doc in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def cached_collection(home: Path, name: str, items: list[dict], rebuild: bool, **settings: Any):
    """A flat MiniLM collection of ``items`` ({id, text, metadata}), encoded once and cached.

    ``settings`` go to ``create`` (``max_passages=1``, say). The seconds the add took are kept in
    ``NAME.ingest.json`` beside the collection (see ``ingest_seconds``) with a fingerprint of the items and
    settings: a cached collection built from other items is rebuilt, and a cached run still reports the
    ingest time its collection was built in.
    """
    import latentsearch as ls
    from latentsearch.encoders import get_encoder

    stamp = home / f"{name}.ingest.json"
    fingerprint = hashlib.sha256(json.dumps([settings, [[d["id"], d["text"]] for d in items]]).encode()).hexdigest()
    if not rebuild and name in ls.list_collections(home=home):
        col = ls.open(name, home=home)
        saved = json.loads(stamp.read_text()) if stamp.exists() else {}
        # Collections cached before the stamps existed have none: they are checked by their count alone.
        if col.count() == len(items) and saved.get("fingerprint", fingerprint) == fingerprint:
            return col
        col.close()
    if name in ls.list_collections(home=home):
        ls.drop(name, home=home)
    col = ls.create(name, encoder="minilm", index="flat", home=home, **settings)
    get_encoder("minilm").load()  # loading the model is not ingest time
    start = time.perf_counter()
    col.add(
        [d["id"] for d in items],
        [d["text"] for d in items],
        metadata=[d["metadata"] for d in items],
        progress=lambda done, total: print(f"\rencoding {name}: {done}/{total}", end="", flush=True),
    )
    seconds = time.perf_counter() - start
    print()
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "seconds": seconds, "date": time.strftime("%Y-%m-%d")}))
    return col


def ingest_seconds(home: Path, name: str) -> float | None:
    """The seconds the add of cached collection ``name`` took when it was built (None if not recorded)."""
    stamp = home / f"{name}.ingest.json"
    return json.loads(stamp.read_text())["seconds"] if stamp.exists() else None


def scores_of(ranked: list[str], relevant: set[str]) -> dict[str, float]:
    """nDCG@10, MRR@10 and recall@100 of one ranking."""
    first = next((1 / (i + 1) for i, doc in enumerate(ranked[:10]) if doc in relevant), 0.0)
    recall = sum(doc in relevant for doc in ranked[:100]) / len(relevant)
    return {"ndcg@10": ndcg_at(ranked, relevant), "mrr@10": first, "recall@100": recall}


def old_weighted(col, query: str) -> list[str]:
    """The weighted fusion of before #18: min-max over each mode's top 100, weight 0.5."""
    from latentsearch.search.fusion import Fusion, fuse

    rankings = {mode: [(h.id, h.score) for h in col.search(query, k=100, mode=mode)] for mode in ("vector", "lexical")}
    return [doc for doc, _ in fuse(rankings, Fusion("convex", 0.5))]


def evaluate(col, queries: list[tuple[str, set[str]]]) -> tuple[dict, dict]:
    """Mean metrics per mode (and the tuned fusions), and nDCG@10 per query and mode. The collection's
    tuned fusion is reset before and after."""
    from latentsearch.search.tuning import LabelledQuery

    col.reset_search_tuning()
    col.search(queries[0][0], k=1, mode="vector")  # load the model before timing
    results: dict[str, dict] = {}
    per_query: dict[str, dict[str, float]] = {}

    def run(name: str, search: Callable[[str], list[str]], subset: list[int] | None = None) -> list[dict]:
        rows = []
        for i in range(len(queries)) if subset is None else subset:
            query, rel = queries[i]
            started = time.perf_counter()
            ranked = search(query)
            rows.append({**scores_of(ranked, rel), "latency": time.perf_counter() - started, "i": i})
            per_query.setdefault(query, {})[name] = round(rows[-1]["ndcg@10"], 4)
        return rows

    def summarise(name: str, rows: list[dict], **extra: Any) -> None:
        results[name] = {m: float(np.mean([r[m] for r in rows])) for m in ("ndcg@10", "mrr@10", "recall@100")}
        results[name]["latency_ms"] = 1000 * float(np.mean([r["latency"] for r in rows]))
        results[name] |= extra
        print(f"  {name:42s} " + "  ".join(f"{k} {v:.3f}" for k, v in results[name].items() if isinstance(v, float)))

    for name, options in MODES.items():
        if options is None:
            summarise(name, run(name, lambda q: old_weighted(col, q)))
        else:
            summarise(name, run(name, lambda q, o=options: [h.id for h in col.search(q, k=100, **o)]))
    report = col.tune_search()
    rows = run(TUNED, lambda q: [h.id for h in col.search(q, k=100)])
    summarise(TUNED, rows, fusion=report.chosen.describe(), tuning_seconds=report.seconds)
    # Labelled queries, tuned on one half and measured on the other, both ways round.
    rows, chosen = [], []
    folds = [list(range(0, len(queries), 2)), list(range(1, len(queries), 2))]
    for train, test in (folds, folds[::-1]):
        labelled = [LabelledQuery(queries[i][0], tuple(sorted(queries[i][1]))) for i in train]
        chosen.append(col.tune_search(labelled, sample=0).chosen.describe())
        rows += run(CROSS, lambda q: [h.id for h in col.search(q, k=100)], test)
    summarise(CROSS, rows, fusion=" / ".join(chosen))
    col.reset_search_tuning()
    return results, per_query


def datasets(rebuild: bool):
    """Yield (name, collection, [(query, relevant ids)]) for each benchmark set."""
    from latentsearch.workflows.demo import demo_corpus

    home = cache_dir() / "home"
    docs = reuters()["docs"]
    items = [
        {"id": d["id"], "text": d["text"], "metadata": {"corn": d["corn"], "grain": d["grain"], "split": d["split"]}}
        for d in docs
    ]
    relevant = {topic: {d["id"] for d in docs if d[topic]} for topic in QUERIES}
    queries = [(q, relevant[topic]) for topic, qs in QUERIES.items() for q in qs]
    yield "Reuters-21578 corn+grain", cached_collection(home, "reuters", items, rebuild), queries
    corpus = demo_corpus()
    present = {item["id"] for item in corpus}
    queries = [(q, set(ids) & present) for q, ids in PYDOCS_QUERIES.items() if set(ids) & present]
    yield "Python docs", cached_collection(home, "pydocs", corpus, rebuild), queries
    items, queries = wordnet_set()
    yield "WordNet definitions", cached_collection(home, "wordnet", items, rebuild), queries
    long_set = long_documents()
    items = [{"id": d["id"], "text": d["text"], "metadata": {"articles": len(d["articles"])}} for d in long_set["docs"]]
    queries = [(q["query"], {q["doc"]}) for q in long_set["queries"]]
    yield "Long documents (Reuters headlines)", cached_collection(home, "longdocs", items, rebuild), queries


WORDNET_SEED = 18
WORDNET_SYNSETS = 10_000  # the collection: this many synsets' definitions
WORDNET_QUERIES = {"lemmas": 100, "example": 100}  # queries of each kind, from synsets in the collection


def wordnet_set() -> tuple[list[dict], list[tuple[str, set[str]]]]:
    """The WordNet set, made deterministically (seed ``WORDNET_SEED``) from Debian's ``wordnet-base``:
    ``WORDNET_SYNSETS`` synsets drawn at random from those whose definition has 4 words or more, each an
    item whose text is its definition (without the example sentences) and whose metadata is its part of
    speech. Queries are short and answered by exactly one item: a synset's lemmas joined by commas
    ("dress uniform"), or one of its example sentences ("socks worn wrong side out"). Neither is a span
    of the definition, and the lemmas are often words the definition never uses, so this set has a
    character of its own: short dictionary text, where meaning matters more than shared words."""
    from benchmarks.datasets import wordnet

    rng = np.random.default_rng(WORDNET_SEED)
    pool = [s for s in wordnet()["synsets"] if len(s["definition"].split()) >= 4]
    chosen = [pool[i] for i in sorted(rng.choice(len(pool), WORDNET_SYNSETS, replace=False))]
    items = [{"id": s["id"], "text": s["definition"], "metadata": {"pos": s["id"][0]}} for s in chosen]
    with_examples = [s for s in chosen if s["examples"]]
    by_example = [with_examples[i] for i in rng.choice(len(with_examples), WORDNET_QUERIES["example"], replace=False)]
    taken = {s["id"] for s in by_example}
    rest = [s for s in chosen if s["id"] not in taken]
    by_lemmas = [rest[i] for i in rng.choice(len(rest), WORDNET_QUERIES["lemmas"], replace=False)]
    queries = [(", ".join(s["lemmas"]), {s["id"]}) for s in by_lemmas]
    queries += [(s["examples"][int(rng.integers(len(s["examples"])))], {s["id"]}) for s in by_example]
    return items, queries


def headline_and_body(text: str) -> tuple[str, str]:
    """A raw Reuters text's headline (its leading upper-case words) and its body, cleaned: SGML entities
    decoded, the ``Reuter`` trailer dropped, and each paragraph's hard line wraps joined (so a line break
    in the body is a paragraph's end, as the passage splitter reads it)."""
    text = _TRAILER.sub("", html.unescape(text))
    words = list(_WORD.finditer(text))
    n = next((i for i, w in enumerate(words) if re.search("[a-z]", w.group())), len(words))
    # The headline runs into the body's first word when that is upper case: "... SANCTIONS A Japanese",
    # "... IN WEEK U.S. grain carloadings".
    if n > 1 and (
        words[n - 1].group() == "A" or words[n - 1].group() in ("U.S.", "U.K.") and words[n].group()[0].islower()
    ):
        n -= 1
    body = text[words[n].start() :] if n < len(words) else ""
    paragraphs = (" ".join(par.split()) for par in re.split(r"\n\s{2,}", body))
    return " ".join(w.group() for w in words[:n]), "\n".join(par for par in paragraphs if par)


def truncate_words(text: str, words: int) -> str:
    """``text`` up to the end of its ``words``-th word (all of it when it is shorter)."""
    found = list(_WORD.finditer(text))
    return text[: found[words - 1].end()] if len(found) > words else text


def long_documents() -> dict:
    """The long-document set, made deterministically (seed ``LONGDOC_SEED``) from the Reuters articles.

    The articles' bodies (headlines removed, see ``headline_and_body``) are shuffled and concatenated,
    10 to 20 at a time (blank line between), into long documents; the last few articles that would make
    a shorter document are left out. A query is one article's headline in lower case without the ``<>``
    around ticker codes, and its one relevant document is the one holding that article; since no
    document holds any headline, search cannot match the query verbatim. Query articles have a headline
    of at least 3 words that no other article shares, and a body of ``MIN_BODY_WORDS`` words or more.
    The answer's position is the word piece (MiniLM's tokenizer, no special tokens) at which its article
    starts: "first window" when it is below ``WINDOW // 2`` (at least half a window of the article lies
    in the first window), "later" when it is ``WINDOW`` or more (none of the article does); articles
    starting between are not queried. 50 "first window" queries are drawn at random, 100 "later" ones
    evenly over the positions in rank order.

    Returns ``{"docs": [{"id", "text", "tokens", "articles"}], "queries": [{"query", "doc", "start",
    "end", "token", "bucket", "source"}], "length_texts": [...]}``: ``start``/``end`` are the article's
    characters in its document; ``length_texts`` are ``LENGTH_DOCS`` texts of
    ``max(LENGTH_WORDS)`` words (articles concatenated the same way) for the linear-cost check.
    """
    from tokenizers import Tokenizer

    from latentsearch.encoders.minilm import minilm_folder

    tokenizer = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    rng = np.random.default_rng(LONGDOC_SEED)
    articles = []
    for d in reuters()["docs"]:
        head, body = headline_and_body(d["text"])
        if body:
            articles.append({"source": d["id"], "head": head, "body": body})
    shared = Counter(" ".join(a["head"].lower().split()) for a in articles)
    order = [articles[i] for i in rng.permutation(len(articles))]
    docs, candidates, first = [], {bucket: [] for bucket in QUERIES_PER_BUCKET}, 0
    while True:
        size = int(rng.integers(ARTICLES_PER_DOC[0], ARTICLES_PER_DOC[1] + 1))
        if first + size > len(order):
            break
        chunk, first = order[first : first + size], first + size
        doc_id, text = f"long-{len(docs):03d}", "\n\n".join(a["body"] for a in chunk)
        token_starts = [start for start, _ in tokenizer.encode(text, add_special_tokens=False).offsets]
        spans, offset = [], 0
        for a in chunk:
            spans.append((offset, offset + len(a["body"])))
            token = bisect_left(token_starts, offset)
            bucket = "first window" if token < WINDOW // 2 else "later" if token >= WINDOW else None
            if (
                bucket
                and len(a["head"].split()) >= 3
                and shared[" ".join(a["head"].lower().split())] == 1
                and len(a["body"].split()) >= MIN_BODY_WORDS
            ):
                query = " ".join(re.sub(r"[<>]", " ", a["head"]).lower().split())
                candidates[bucket].append(
                    {"query": query, "doc": doc_id, "start": spans[-1][0], "end": spans[-1][1], "token": token}
                    | {"bucket": bucket, "source": a["source"]}
                )
            offset = spans[-1][1] + 2
        docs.append({"id": doc_id, "text": text, "tokens": len(token_starts), "articles": spans})
    pool = candidates["first window"]
    picked = sorted(rng.choice(len(pool), QUERIES_PER_BUCKET["first window"], replace=False))
    queries = [pool[i] for i in picked]
    pool = sorted(candidates["later"], key=lambda q: q["token"])
    picked = np.unique(np.linspace(0, len(pool) - 1, QUERIES_PER_BUCKET["later"]).round().astype(int))
    queries += [pool[i] for i in picked]
    length_texts = []
    for j in range(LENGTH_DOCS):
        bodies, k = [], j * len(order) // LENGTH_DOCS
        while sum(len(b.split()) for b in bodies) < max(LENGTH_WORDS):
            bodies.append(order[k % len(order)]["body"])
            k += 1
        length_texts.append(truncate_words("\n\n".join(bodies), max(LENGTH_WORDS)))
    return {"docs": docs, "queries": queries, "length_texts": length_texts}


Ranked = list[tuple[str, "tuple[int, int] | None"]]  # (document id, its passage's characters), best first


def product_search(col, options: dict, k: int = 10) -> Callable[[str], Ranked]:
    """The collection's own search in one mode, top ``k``, with each hit's passage."""

    def search(query: str) -> Ranked:
        hits = col.search(query, k=k, **options)
        return [(h.id, (h.passage.start, h.passage.end) if h.passage else None) for h in hits]

    return search


def document_bm25(docs: list[dict], k: int = 10) -> Callable[[str], Ranked]:
    """BM25 over whole documents, as the lexical mode ranked before passages (one full-text row an item):
    an in-memory FTS5 table with the collection's tokenizer and query words (``fts_query``)."""
    from latentsearch.storage.fulltext import TOKENIZER, fts_query

    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE d USING fts5(text, doc UNINDEXED, tokenize='{TOKENIZER}')")
    db.executemany("INSERT INTO d VALUES (?, ?)", ((d["text"], d["id"]) for d in docs))

    def search(query: str) -> Ranked:
        rows = db.execute("SELECT doc FROM d WHERE d MATCH ? ORDER BY bm25(d) LIMIT ?", (fts_query(query), k))
        return [(doc, None) for (doc,) in rows]

    return search


def rrf(vector: Callable[[str], Ranked], lexical: Callable[[str], Ranked]) -> Callable[[str], Ranked]:
    """Hybrid search as the product fuses it (reciprocal rank fusion of each mode's top 100), over two
    rankings made here: what hybrid mode gave before passages, with BM25 over whole documents."""
    from latentsearch.search.fusion import fuse

    def search(query: str) -> Ranked:
        ranked = {"vector": vector(query), "lexical": lexical(query)}
        spans = dict(ranked["lexical"]) | dict(ranked["vector"])  # the vector hit's passage, where it has one
        keyed = {mode: [(doc, 1.0) for doc, _ in ranking] for mode, ranking in ranked.items()}
        return [(doc, spans[doc]) for doc, _ in fuse(keyed, fusion="rrf", rrf_k=60)[:10]]

    return search


def longdoc_searches(col, docs: list[dict], before: bool) -> dict[str, Callable[[str], Ranked]]:
    """The searches measured on one long-document collection. Before passages, lexical search ranked
    whole documents (and hybrid fused that); with passages, the product ranks passages in every mode,
    and BM25 over whole documents is measured beside it."""
    from latentsearch.search.request import HYBRID_DEPTH

    vector = product_search(col, {"mode": "vector"})
    if before:
        deep = product_search(col, {"mode": "vector"}, k=HYBRID_DEPTH)
        return {DOC_BM25: document_bm25(docs), VECTOR: vector, HYBRID: rrf(deep, document_bm25(docs, HYBRID_DEPTH))}
    return {
        PASSAGE_BM25: product_search(col, {"mode": "lexical"}),
        VECTOR: vector,
        HYBRID: product_search(col, {"mode": "hybrid", "fusion": "rrf", "alpha": 0.5}),
        DOC_BM25: document_bm25(docs),
    }


def position_scores(search: Callable[[str], Ranked], queries: list[dict]) -> dict:
    """recall@10, MRR@10 and the hits' passage accuracy of one search, by answer position (and overall).

    ``passage shows answer``: of the queries whose document is in the top 10, the share whose hit passage
    overlaps the answer article; ``passage holds start``: the share whose passage contains the article's
    first character (None when the hits carry no passages)."""
    rows, latency = [], []
    for q in queries:
        started = time.perf_counter()
        ranked = search(q["query"])[:10]
        latency.append(time.perf_counter() - started)
        rank = next((i for i, (doc, _) in enumerate(ranked) if doc == q["doc"]), None)
        span = ranked[rank][1] if rank is not None else None
        rows.append(
            {
                "bucket": q["bucket"],
                "rank": None if rank is None else rank + 1,
                "shows": None if span is None else span[0] < q["end"] and span[1] > q["start"],
                "holds": None if span is None else span[0] <= q["start"] < span[1],
            }
        )

    def summary(subset: list[dict]) -> dict:
        found = [r for r in subset if r["rank"] is not None]
        spans = [r for r in found if r["shows"] is not None]
        return {
            "queries": len(subset),
            "recall@10": len(found) / len(subset),
            "mrr@10": sum(1 / r["rank"] for r in found) / len(subset),
            "passage shows answer": float(np.mean([r["shows"] for r in spans])) if spans else None,
            "passage holds start": float(np.mean([r["holds"] for r in spans])) if spans else None,
        }

    out = {bucket: summary([r for r in rows if r["bucket"] == bucket]) for bucket in QUERIES_PER_BUCKET}
    out["all"] = summary(rows)
    out["latency_ms"] = 1000 * float(np.mean(latency))
    out["ranks"] = [r["rank"] for r in rows]
    return out


def run_longdocs(rebuild: bool) -> None:
    """The long-document section: quality by answer position before and with passages, BM25 over
    documents vs passages, and ingest throughput (see ``long_documents``)."""
    home = cache_dir() / "home"
    data_set = long_documents()
    docs, queries = data_set["docs"], data_set["queries"]
    words = [len(d["text"].split()) for d in docs]
    tokens = [d["tokens"] for d in docs]
    data: dict = {
        "documents": len(docs),
        "words": {"median": float(np.median(words)), "min": min(words), "max": max(words), "total": sum(words)},
        "tokens": {"median": float(np.median(tokens)), "min": min(tokens), "max": max(tokens)},
        "queries": {bucket: sum(q["bucket"] == bucket for q in queries) for bucket in QUERIES_PER_BUCKET},
        "query_list": [{k: q[k] for k in ("query", "doc", "token", "bucket", "source")} for q in queries],
        "collections": {},
    }
    print(
        f"long documents: {len(docs)}, median {data['words']['median']:.0f} words / {data['tokens']['median']:.0f} "
        f"word pieces; queries {data['queries']}"
    )
    items = [{"id": d["id"], "text": d["text"], "metadata": {"articles": len(d["articles"])}} for d in docs]
    rows, ingest_rows = [], []
    for label, (name, settings) in LONGDOC_COLLECTIONS.items():
        col = cached_collection(home, name, items, rebuild, **settings)
        col.search(queries[0]["query"], k=1, mode="vector")  # load the model before timing searches
        searches = longdoc_searches(col, docs, before=bool(settings))
        results = {}
        for mode, search in searches.items():
            r = results[mode] = position_scores(search, queries)
            first, later = r["first window"], r["later"]
            print(
                f"  {label[:20]:20s} {mode:30s} recall@10 {first['recall@10']:.3f} / {later['recall@10']:.3f}  "
                f"MRR@10 {first['mrr@10']:.3f} / {later['mrr@10']:.3f}  (first window / later)"
            )
            shown = [r[bucket]["passage shows answer"] for bucket in QUERIES_PER_BUCKET]
            rows.append(
                [label, mode, first["recall@10"], later["recall@10"], first["mrr@10"], later["mrr@10"]]
                + [" / ".join("–" if v is None else f"{v:.2f}" for v in shown)]
            )
        seconds, passages = ingest_seconds(home, name), col.info()["passages"]
        ingest = {"documents": len(docs), "passages": passages, "seconds": seconds}
        ingest |= {"documents/s": len(docs) / seconds, "passages/s": passages / seconds}
        data["collections"][label] = {"name": name, "settings": settings, "ingest": ingest, "results": results}
        ingest_rows.append([label, len(docs), passages, f"{seconds:.1f}"])
        ingest_rows[-1] += [f"{ingest['documents/s']:.2f}", f"{ingest['passages/s']:.1f}"]
        ingest_rows[-1].append(f"{seconds / (sum(words) / 1000):.3f}")
        col.close()
    series = []
    for n in LENGTH_WORDS:
        name = f"longdocs-len{n}"
        cut = [
            {"id": f"len-{i:02d}", "text": truncate_words(t, n), "metadata": {}}
            for i, t in enumerate(data_set["length_texts"])
        ]
        col = cached_collection(home, name, cut, rebuild)
        seconds, passages = ingest_seconds(home, name), col.info()["passages"]
        col.close()
        total = sum(len(d["text"].split()) for d in cut)
        series.append(
            {"words per document": n, "documents": len(cut), "passages": passages, "seconds": seconds}
            | {"seconds per 1000 words": seconds / (total / 1000), "passages/s": passages / seconds}
        )
        print(f"  ingest {len(cut)} documents of {n} words: {passages} passages in {seconds:.1f}s")
        ingest_rows.append(
            [f"passages, {len(cut)} documents of {n:,} words", len(cut), passages, f"{seconds:.1f}"]
            + [f"{len(cut) / seconds:.2f}", f"{passages / seconds:.1f}", f"{series[-1]['seconds per 1000 words']:.3f}"]
        )
    data["ingest by length"] = series
    path = report.save("longdocs", data)
    quality = report.markdown_table(
        ["collection", "search", "recall@10 first window", "recall@10 later", "MRR@10 first window", "MRR@10 later"]
        + ["hit passage shows the answer (first window / later)"],
        rows,
    )
    ingest_table = report.markdown_table(
        ["ingest", "documents", "passages", "seconds", "documents/s", "passages/s", "s / 1,000 words"], ingest_rows
    )
    machine = data["machine"]
    note = (
        f"{len(docs)} documents (median {data['words']['median']:,.0f} words, {data['tokens']['median']:,.0f} word "
        f"pieces); {data['queries']['first window']} queries answered in the first window, "
        f"{data['queries']['later']} later. `python -m benchmarks.retrieval --only longdocs`; "
        f"{machine['cpu_count']} CPU cores, {machine['date']}."
    )
    updated = report.update_readme("longdocs", f"{quality}\n\n{ingest_table}\n\n{note}")
    print(f"saved {path}" + ("; README table updated" if updated else ""))


def run_retrieval(rebuild: bool) -> None:
    """The labelled-set section: nDCG@10, MRR@10, recall@100 and latency per mode and fusion on every
    labelled set, and how far each is from the best single mode of its set (see ``evaluate``)."""
    data: dict = {"datasets": {}}
    rows = []
    for name, col, queries in datasets(rebuild):
        print(f"{name}: {col.count():,} documents, {len(queries)} queries")
        results, per_query = evaluate(col, queries)
        best = max(results[mode]["ndcg@10"] for mode in SINGLE)
        data["datasets"][name] = {
            "documents": col.count(),
            "queries": len(queries),
            "best single mode ndcg@10": best,
            "results": results,
            "per_query_ndcg@10": per_query,
        }
        col.close()
        for mode, r in results.items():
            label = mode + (f" → {r['fusion']}" if "fusion" in r else "")
            rows.append([name, label, r["ndcg@10"], f"{r['ndcg@10'] - best:+.3f}", r["mrr@10"], r["recall@100"]])
            rows[-1].append(f"{r['latency_ms']:.1f}")
    # Each set weighs the same in the mean; the gap is the worst over the sets.
    modes = list(next(iter(data["datasets"].values()))["results"])
    sets = data["datasets"].values()
    overall = {mode: float(np.mean([d["results"][mode]["ndcg@10"] for d in sets])) for mode in modes}
    worst = {mode: min(d["results"][mode]["ndcg@10"] - d["best single mode ndcg@10"] for d in sets) for mode in modes}
    data["mean_ndcg@10_over_sets"], data["worst_gap_to_best_single_mode"] = overall, worst
    best_mean = float(np.mean([d["best single mode ndcg@10"] for d in sets]))
    data["mean_of_best_single_modes"] = best_mean
    path = report.save("retrieval", data)
    for mode in modes:
        rows.append([f"**mean of {len(data['datasets'])} sets**", mode, overall[mode], f"worst {worst[mode]:+.3f}"])
        rows[-1] += ["", "", ""]
        print(f"mean nDCG@10 over sets  {mode:42s} {overall[mode]:.3f}  worst gap {worst[mode]:+.3f}")
    rows.append(
        [f"**mean of {len(data['datasets'])} sets**", "best single mode of each set", best_mean, "", "", "", ""]
    )
    table = report.markdown_table(
        ["data", "search", "nDCG@10", "vs best single mode", "MRR@10", "recall@100", "ms / query"], rows
    )
    machine = data["machine"]
    wordnet = data["datasets"].get("WordNet definitions", {}).get("results", {}).get(TUNED, {})
    timing = f" Tuning the 10,000-item WordNet collection took {wordnet['tuning_seconds']:.1f} s." if wordnet else ""
    note = f"\n\n`python -m benchmarks.retrieval --only retrieval`; {machine['cpu_count']} CPU cores, {machine['date']}.{timing}"
    updated = report.update_readme("retrieval", table + note)
    print(f"saved {path}" + ("; README table updated" if updated else ""))


SECTIONS = {"retrieval": run_retrieval, "longdocs": run_longdocs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="re-encode the collections even if cached")
    parser.add_argument("--only", choices=list(SECTIONS), help="run one section (default: both)")
    args = parser.parse_args()
    for name, run in SECTIONS.items():
        if args.only in (None, name):
            run(args.rebuild)


if __name__ == "__main__":
    main()
