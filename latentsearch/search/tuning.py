"""Tuning hybrid search to a collection: which fusion of vector and lexical ranking fits its text.

No fixed mix wins on every kind of text (see the README's retrieval table), so a collection measures
its own. :func:`tune` makes pseudo-queries from the collection's texts, a sentence of an item (or,
for one-sentence texts, a span of about a third of its words) as the query and that item as its one
answer, with the query cut out of the item so that lexical search cannot win by matching it verbatim.
It ranks them in an evaluation corpus built in memory from the stored passages (all of them, or a
random sample of items on large collections), where the answered items' cut passages are encoded
anew; nothing stored changes. Labelled queries, when given, are ranked by the collection itself.
Every candidate fusion (:data:`CANDIDATES`: convex at weights 0 to 1, which includes lexical and
vector alone, and RRF) is measured by nDCG@10 on the same rankings, and the best is chosen.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from latentsearch.backends.base import ProgressFn, Ranking
from latentsearch.errors import InvalidInputError
from latentsearch.limits import check_int, check_text
from latentsearch.search.fusion import DEFAULT_FUSION, Fusion, fuse, score_floors
from latentsearch.search.request import HYBRID_DEPTH
from latentsearch.storage.fulltext import TOKENIZER, fts_query

if TYPE_CHECKING:
    from latentsearch.collection import Collection

DEFAULT_SAMPLE = 500  # pseudo-queries measured: a smooth nDCG curve over the weights, seconds to run
MAX_SAMPLE = 5_000
MIN_ITEMS = 50  # fewer texts than this: every mode finds the answer, there is nothing to measure
MIN_PSEUDO = 20  # pseudo-queries needed to tune on them alone
MIN_LABELLED = 10  # labelled queries needed to tune on them alone (they are real queries)
CORPUS_PASSAGES = 50_000  # the evaluation corpus: every passage up to this many, else a sample of items
MIN_REST_WORDS = 4  # what must remain of an item once its query is cut out
MAX_QUERIES_PER_ITEM = 8  # on small collections: further sentences of an item, up to half its words
QUERY_WORDS = (4, 40)  # a sentence this long (in words) can be a query
CANDIDATES = tuple(Fusion("convex", w / 20) for w in range(21)) + tuple(Fusion("rrf", w / 10) for w in range(3, 8))
MEASURES = ("ndcg@10", "mrr@10", "recall@100")
# A sentence ends at . ! or ? before white space, or at a blank line; a single line break is a hard
# wrap inside a paragraph (news wires, docstrings), not an end.
_SENTENCE_END = re.compile(r"(?<!\b[A-Z])[.!?]+(?=\s)|\n\s*\n")
_WORD = re.compile(r"\S+")
T = TypeVar("T")


@dataclass(frozen=True)
class LabelledQuery:
    """A query and the ids of the items that answer it."""

    query: str
    relevant: tuple[str, ...]


@dataclass
class TuningReport:
    """What :func:`tune` measured and chose.

    ``measured[set][name]`` holds each measure (:data:`MEASURES`) of vector, lexical, RRF, the default
    fusion and the chosen one, on each query set (``pseudo``, ``labelled``); ``queries`` counts them.
    """

    chosen: Fusion
    default: Fusion
    queries: dict[str, int]
    measured: dict[str, dict[str, dict[str, float]]]
    corpus: dict[str, int]
    seconds: float
    curve: list[tuple[str, float]] = field(default_factory=list)  # every candidate's mean nDCG@10

    def summary(self) -> dict[str, Any]:
        """The report as the manifest keeps it (beside the chosen fusion)."""
        return {
            "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "queries": self.queries,
            "corpus": self.corpus,
            "measured": self.measured,
            "seconds": round(self.seconds, 2),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        return {"chosen": self.chosen.to_dict(), "default": self.default.to_dict(), **self.summary()}


@dataclass
class _Query:
    text: str
    relevant: set[str]
    rankings: dict[str, Ranking] = field(default_factory=dict)


def read_labelled_queries(path: str | Path) -> list[LabelledQuery]:
    """Labelled queries from a JSONL file: one ``{"query": "...", "relevant": ["id", ...]}`` a line
    (blank lines skipped). A malformed line is refused with its number."""
    return [query for _, query in _read_lines(Path(path))]


def _read_lines(path: Path) -> list[tuple[str, LabelledQuery]]:
    """The queries of a JSONL file, each with where it is (``FILE line N``)."""
    return read_jsonl(path, labelled_query, "queries")


def read_jsonl(path: Path, parse: Callable[[Any, str], T], what: str) -> list[tuple[str, T]]:
    """Each non-blank line of the JSONL file ``path`` parsed by ``parse(record, where)``, with where it
    is (``FILE line N``); a line that is not JSON, or that ``parse`` refuses, is an error naming it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read the {what} file {path}: {exc}") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InvalidInputError(f"{where} is not JSON ({exc.msg}): write one object a line") from None
        out.append((where, parse(record, where)))
    if not out:
        raise InvalidInputError(f"the {what} file {path} holds no {what}")
    return out


def labelled_query(record: Any, where: str) -> LabelledQuery:
    """One labelled query from its JSON form, checked (``where`` names it in errors)."""
    if isinstance(record, LabelledQuery):
        record = {"query": record.query, "relevant": list(record.relevant)}
    if not isinstance(record, dict) or set(record) - {"query", "relevant"} or not {"query", "relevant"} <= set(record):
        raise InvalidInputError(f'{where}: write {{"query": "text", "relevant": ["id", ...]}}, got {record!r:.80}')
    query, relevant = record["query"], record["relevant"]
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError(f"{where}: the query is empty; give it a text")
    check_text(query, f"{where}: the query")
    if isinstance(relevant, str):
        relevant = [relevant]
    if not isinstance(relevant, list) or not relevant or not all(isinstance(i, str) and i for i in relevant):
        raise InvalidInputError(f"{where}: relevant is a non-empty list of item ids, got {relevant!r:.80}")
    return LabelledQuery(query, tuple(dict.fromkeys(relevant)))


def tune(
    collection: Collection,
    queries: str | Path | Sequence[LabelledQuery] | None = None,
    *,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> TuningReport:
    """Measure vector, lexical and every candidate fusion on ``collection`` and choose the best (see
    the module docstring). Changes nothing: :meth:`Collection.tune_search` stores the result."""
    started = time.perf_counter()
    sample = check_int("sample", sample, 0, MAX_SAMPLE)
    seed = check_int("seed", seed, 0, 2**32 - 1)
    name = collection.name
    if collection.modality != "text":
        raise InvalidInputError(
            f"collection {name!r} holds {collection.modality} vectors: tuning fuses text search by meaning "
            "with search by words, which needs a text encoder"
        )
    labelled = _labelled(collection, queries)
    collection.check_encoder()
    rng = np.random.default_rng(seed)
    corpus = _Corpus(collection, rng)
    if len(corpus.items) < MIN_ITEMS and not labelled:
        raise InvalidInputError(
            f"collection {name!r} has {len(corpus.items)} texts; tuning needs {MIN_ITEMS} or more to measure "
            f"search on (keeping the default fusion, {DEFAULT_FUSION.describe()})"
        )
    pseudo = corpus.pseudo_queries(sample, rng) if sample and len(corpus.items) >= MIN_ITEMS else []
    if len(pseudo) < MIN_PSEUDO and len(labelled) < MIN_LABELLED:
        raise InvalidInputError(
            f"collection {name!r} has {len(pseudo)} texts long enough to make a query of (a sentence, or "
            f"{QUERY_WORDS[0]}+ words, with {MIN_REST_WORDS}+ words left) and {len(labelled)} labelled queries; "
            f"tuning needs {MIN_PSEUDO} or {MIN_LABELLED}: keeping the default fusion ({DEFAULT_FUSION.describe()})"
        )
    steps = len(pseudo) + len(labelled) + 1
    if progress:
        progress(0, steps)
    if pseudo:
        corpus.rank(pseudo, collection, progress=(lambda done: progress(done, steps)) if progress else None)
    if progress:
        progress(len(pseudo) + 1, steps)
    for i, query in enumerate(labelled, 1):
        for mode in ("vector", "lexical"):
            hits = (
                collection.search(query.text, k=HYBRID_DEPTH, mode=mode)
                if mode == "vector" or fts_query(query.text)
                else []
            )
            query.rankings[mode] = [(hit.id, hit.score) for hit in hits]
        if progress and (i % 10 == 0 or i == len(labelled)):
            progress(len(pseudo) + 1 + i, steps)
    sets = {"pseudo": pseudo, "labelled": labelled}
    sets = {label: qs for label, qs in sets.items() if qs}
    floors = score_floors(collection.metric)
    scores = {fusion: _mean_over_sets(sets, fusion, floors) for fusion in CANDIDATES}
    # Ties go to the candidate nearest the default (measuring cannot tell them apart).
    chosen = max(
        CANDIDATES,
        key=lambda f: (round(scores[f], 9), f.method == DEFAULT_FUSION.method, -abs(f.weight - DEFAULT_FUSION.weight)),
    )
    named = {
        "vector": "vector",
        "lexical": "lexical",
        "rrf": Fusion("rrf", 0.5),
        "default": DEFAULT_FUSION,
        "tuned": chosen,
    }
    measured = {label: {key: _measure(qs, how, floors) for key, how in named.items()} for label, qs in sets.items()}
    return TuningReport(
        chosen=chosen,
        default=DEFAULT_FUSION,
        queries={label: len(qs) for label, qs in sets.items()},
        measured=measured,
        corpus={"items": len(corpus.items), "passages": len(corpus.owner)},
        seconds=time.perf_counter() - started,
        curve=[(f.describe(), round(scores[f], 4)) for f in CANDIDATES],
    )


def _labelled(collection: Collection, queries: str | Path | Sequence[LabelledQuery] | None) -> list[_Query]:
    """Labelled queries read and checked: every relevant id must be in the collection."""
    if queries is None:
        return []
    records = read_records(collection, queries, labelled_query, "queries", "labelled query")
    return [_Query(q.query, set(q.relevant)) for _, q in records]


def read_records(
    collection: Collection, source: str | Path | Sequence[Any], parse: Callable[[Any, str], T], what: str, label: str
) -> list[tuple[str, T]]:
    """Records from a JSONL file or a sequence (the ``label N``-th), each checked by ``parse(record, where)``,
    with where each is; every id of a record's ``relevant`` must be an item of ``collection``."""
    if isinstance(source, (str, Path)):
        records = read_jsonl(Path(source), parse, what)
    else:
        records = [(f"{label} {i}", parse(r, f"{label} {i}")) for i, r in enumerate(source, 1)]
    known = collection.existing_ids(sorted({i for _, r in records for i in r.relevant}))  # type: ignore[attr-defined]
    for where, record in records:
        unknown = [i for i in record.relevant if i not in known]  # type: ignore[attr-defined]
        if unknown:
            raise InvalidInputError(
                f"{where}: {len(unknown)} relevant id(s) are not in collection {collection.name!r} "
                f"({', '.join(map(repr, unknown[:3]))}); give ids of its items"
            )
    return records


class _Corpus:
    """The evaluation corpus: item ids and texts, passages (their texts, vectors and items)."""

    def __init__(self, collection: Collection, rng: np.random.Generator) -> None:
        backend = collection.backend
        share = min(1.0, CORPUS_PASSAGES / max(backend.passage_count(), 1))
        self.items: dict[str, str] = {}
        for item in backend.iter_items():
            if item.text and item.text.strip() and (share >= 1.0 or rng.random() < share):
                self.items[item.id] = item.text
        ids = list(self.items)
        spans = backend.passages(ids)
        vectors = backend.passage_vectors(ids)
        self.owner: list[str] = []
        self.texts: list[str] = []
        self.spans: list[tuple[int, int]] = []
        blocks = []
        for item_id in ids:
            text = self.items[item_id]
            item_spans = [(s, e) for s, e, _ in spans.get(item_id, [])] or [(0, len(text))]
            self.owner += [item_id] * len(item_spans)
            self.spans += item_spans
            self.texts += [text[s:e] for s, e in item_spans]
            blocks.append(vectors[item_id])
        self.vectors = np.concatenate(blocks) if blocks else np.empty((0, collection.dim), np.float32)
        self.metric = collection.metric

    def pseudo_queries(self, sample: int, rng: np.random.Generator) -> list[_Query]:
        """Up to ``sample`` pseudo-queries, cut out of the corpus (its passage texts are changed).

        Items are visited in a random order, one query each; when that gives too few (a small
        collection), more rounds take further sentences of the items with several, never more than
        half of an item's words."""
        order = [list(self.items)[int(i)] for i in rng.permutation(len(self.items))]
        taken: dict[str, list[tuple[int, int]]] = {}
        queries: list[_Query] = []
        for _ in range(MAX_QUERIES_PER_ITEM):
            before = len(queries)
            for item_id in order:
                if len(queries) >= sample:
                    break
                text, spans = self.items[item_id], taken.setdefault(item_id, [])
                span = query_span(text, spans, rng)
                if span is not None:
                    spans.append(span)
                    queries.append(_Query(" ".join(text[span[0] : span[1]].split()), {item_id}))
            if len(queries) >= sample or len(queries) == before:
                break
        self.cut: dict[int, str] = {}  # passage position -> its text with the queries in it cut out
        for position, item_id in enumerate(self.owner):
            s, e = self.spans[position]
            if any(a < e and b > s for a, b in taken.get(item_id, [])):
                self.cut[position] = cut_out(self.items[item_id], (s, e), taken[item_id])
        return queries

    def rank(self, queries: list[_Query], collection: Collection, progress: Any = None) -> None:
        """Each query's vector and lexical rankings (top :data:`HYBRID_DEPTH` items) in the corpus."""
        positions = sorted(self.cut)
        encoded = collection.encode([q.text for q in queries] + [self.cut[p] or " " for p in positions])
        query_vectors, cut_vectors = encoded[: len(queries)], encoded[len(queries) :]
        vectors = self.vectors.copy()
        vectors[positions] = cut_vectors
        index_of = {item_id: n for n, item_id in enumerate(dict.fromkeys(self.owner))}
        owners = np.array([index_of[o] for o in self.owner])
        names = list(index_of)
        if self.metric == "l2":
            scores = -np.sqrt(
                np.maximum(
                    (query_vectors**2).sum(1)[:, None] - 2 * query_vectors @ vectors.T + (vectors**2).sum(1)[None, :], 0
                )
            )
        else:
            scores = query_vectors @ vectors.T
        for query, row in zip(queries, scores):
            best = np.full(len(names), -np.inf)
            np.maximum.at(best, owners, row)  # an item's score is its best passage's
            top = np.argsort(-best, kind="stable")[:HYBRID_DEPTH]
            query.rankings["vector"] = [(names[t], float(best[t])) for t in top]
        db = sqlite3.connect(":memory:")
        db.execute(f"CREATE VIRTUAL TABLE p USING fts5(text, tokenize='{TOKENIZER}')")
        db.executemany(
            "INSERT INTO p(rowid, text) VALUES (?, ?)", ((n, self.cut.get(n, t)) for n, t in enumerate(self.texts))
        )
        for done, query in enumerate(queries, 1):
            if progress and done % 20 == 0:
                progress(done)
            match = fts_query(query.text)
            ranking: dict[str, float] = {}
            if match:
                rows = db.execute(
                    "SELECT rowid, -bm25(p) FROM p WHERE p MATCH ? ORDER BY rank LIMIT ?", (match, 4 * HYBRID_DEPTH)
                )
                for rowid, score in rows:
                    ranking.setdefault(self.owner[rowid], float(score))
                    if len(ranking) == HYBRID_DEPTH:
                        break
            query.rankings["lexical"] = list(ranking.items())
        db.close()


def cut_out(text: str, passage: tuple[int, int], queries: Sequence[tuple[int, int]]) -> str:
    """The passage ``text[start:end]`` with the parts of ``queries`` (character spans) inside it cut out."""
    s, e = passage
    pieces, at = [], s
    for a, b in sorted((max(a, s), min(b, e)) for a, b in queries if a < e and b > s):
        pieces.append(text[at:a])
        at = max(at, b)
    return " ".join(pieces + [text[at:e]])


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """The character spans of ``text``'s sentences, their surrounding white space left out."""
    spans, start = [], 0
    for end in [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]:
        piece = text[start:end]
        if piece.strip():
            spans.append((start + len(piece) - len(piece.lstrip()), end - (len(piece) - len(piece.rstrip()))))
        start = end
    return spans


def query_span(text: str, taken: list[tuple[int, int]], rng: np.random.Generator) -> tuple[int, int] | None:
    """Characters of ``text`` to use as a query: a sentence of :data:`QUERY_WORDS` words when the text
    has several, else (for its first query) a span of a third of its words; ``None`` when too little
    would remain. ``taken`` are the spans already used: a further query is a sentence that overlaps
    none of them and leaves at least half of the text's words."""
    words = len(_WORD.findall(text))
    used = sum(len(text[a:b].split()) for a, b in taken)
    rest = max(MIN_REST_WORDS, words // 2) if taken else MIN_REST_WORDS
    sentences = [
        (s, e)
        for s, e in sentence_spans(text)
        if QUERY_WORDS[0] <= len(text[s:e].split()) <= QUERY_WORDS[1]
        and words - used - len(text[s:e].split()) >= rest
        and not any(s < b and e > a for a, b in taken)
    ]
    if sentences:
        return sentences[int(rng.integers(len(sentences)))]
    spans = list(_WORD.finditer(text))
    size = max(3, len(spans) // 3)
    if taken or len(spans) - size < MIN_REST_WORDS:
        return None
    first = int(rng.integers(len(spans) - size + 1))
    return spans[first].start(), spans[first + size - 1].end()


def _ranked(query: _Query, how: str | Fusion, floors: dict[str, float | None]) -> list[Any]:
    if isinstance(how, Fusion):
        return [key for key, _ in fuse(query.rankings, how, floors)[:HYBRID_DEPTH]]
    return [key for key, _ in query.rankings[how]]


def _scores(ranked: list[Any], relevant: set[str]) -> tuple[float, float, float]:
    """nDCG@10 (binary gains), MRR@10 and recall@100 of one ranking."""
    dcg = sum(1.0 / math.log2(i + 2) for i, key in enumerate(ranked[:10]) if key in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal, reciprocal_rank(ranked, relevant), recall_at(ranked, relevant, 100)


def reciprocal_rank(ranked: Sequence[Any], relevant: set[Any], k: int = 10) -> float:
    """1 / the rank of the first relevant key within the top ``k`` (0 when none is): MRR@k's term."""
    return next((1.0 / (i + 1) for i, key in enumerate(ranked[:k]) if key in relevant), 0.0)


def recall_at(ranked: Sequence[Any], relevant: set[Any], k: int) -> float:
    """The share of the relevant keys within the top ``k``."""
    return len(relevant & set(ranked[:k])) / len(relevant)


def _measure(queries: list[_Query], how: str | Fusion, floors: dict[str, float | None]) -> dict[str, float]:
    values = np.array([_scores(_ranked(q, how, floors), q.relevant) for q in queries])
    return {name: round(float(v), 4) for name, v in zip(MEASURES, values.mean(axis=0))}


def _mean_over_sets(sets: dict[str, list[_Query]], fusion: Fusion, floors: dict[str, float | None]) -> float:
    """Mean nDCG@10 of each query set, averaged over the sets (each weighs the same)."""
    return float(
        np.mean([np.mean([_scores(_ranked(q, fusion, floors), q.relevant)[0] for q in qs]) for qs in sets.values()])
    )
