"""Transfer learning: adapt a collection's text encoder to the collection's own language, and measure it.

:func:`tune_encoder` fine-tunes the collection's sentence-transformers model (``minilm``, or an
``st:PATH`` folder) on pairs of a query and the passage that answers it
(:mod:`latentsearch.encoders.finetune`), taken from

- labelled pairs, when given: a JSONL file of ``{"query": "...", "id": "..."}`` (or ``"relevant":
  [ids]``) lines, whose answer is the item's passage nearest the query, or of ``{"text_a": "...",
  "text_b": "..."}`` lines, two texts that belong together;
- otherwise pseudo-pairs made from the items, as fusion tuning makes its pseudo-queries
  (:mod:`latentsearch.search.tuning`): a sentence of an item (or a third of a one-sentence text) is
  the query and the rest of its passage, the sentence cut out, the answer; an item's ``title``
  metadata is a query for its first passage.

Part of the pairs is held out (whole items, so nothing of a held-out answer is trained on), and the
held-out queries are ranked before and after training in an evaluation corpus: the held-out answers'
passages (pseudo-queries cut out of them) among a sample of the collection's other items, each item at
its best passage, as search ranks them. MRR@10 and recall@10 are reported; the tuned model is saved
only when its held-out MRR@10 is higher than the base model's. The collection is only read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentsearch.errors import InvalidInputError
from latentsearch.limits import check_int, check_text
from latentsearch.search.tuning import (
    MAX_QUERIES_PER_ITEM,
    cut_out,
    query_span,
    read_jsonl,
    read_records,
    recall_at,
    reciprocal_rank,
)

if TYPE_CHECKING:
    from latentsearch.collection import Collection

DEFAULT_STEPS = 200
DEFAULT_BATCH = 16
DEFAULT_SAMPLE = 2_000  # pairs at most: with the default steps and batch, one pass over 3,200 of them
DEFAULT_LEARNING_RATE = 2e-5
DEFAULT_HOLDOUT = 0.2
MIN_HELDOUT = 20  # held-out pairs: fewer cannot tell a better model from noise
MIN_TRAIN = 30  # training pairs: two batches of the default size
MIN_PAIRS = MIN_HELDOUT + MIN_TRAIN
CORPUS_ITEMS = 1_000  # items of the evaluation corpus: the held-out answers, then a sample of the rest
MAX_STEPS, MAX_BATCH, MAX_SAMPLE = 100_000, 1_024, 1_000_000
MEASURES = ("mrr@10", "recall@10")
TUNABLE = "minilm or a sentence-transformers folder (st:PATH)"
# stage ("base", "train", "tuned"), done, total, the running loss (training only): for a progress bar.
TuneProgress = Callable[[str, int, int, "float | None"], None]


@dataclass(frozen=True)
class TrainingPair:
    """A query and its answer: the items ``relevant`` (their passage nearest the query), or the text
    ``answer`` (a text pair). ``where`` says where it came from; ``span`` is a pseudo-query's place in
    its item's text, cut out of the item when it is measured."""

    query: str
    relevant: tuple[str, ...] = ()
    answer: str | None = None
    where: str = ""
    span: tuple[int, int] | None = None


@dataclass
class EncoderTuningReport:
    """What :func:`tune_encoder` did: the data, the training and the held-out measures before and after
    (``before``/``after``: MRR@10 and recall@10); ``kept`` says whether the tuned model was saved in ``out``."""

    collection: str
    base: str
    base_weights_sha256: str
    out: str
    kept: bool
    source: str
    pairs: dict[str, int]
    settings: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]
    corpus: dict[str, int]
    seconds: float
    losses: list[float] = field(default_factory=list)

    def message(self) -> str:
        """One line: what was kept, and why."""
        b, a = self.before["mrr@10"], self.after["mrr@10"]
        if self.kept:
            return f"saved the tuned model in {self.out}: held-out MRR@10 {b:.4f} -> {a:.4f}"
        return f"kept base model: tuned MRR@10 {a:.4f} <= base {b:.4f} on the held-out pairs; nothing was written"

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (the losses as first, last and count)."""
        out = {k: v for k, v in self.__dict__.items() if k != "losses"}
        losses = self.losses
        out["loss"] = {"first": losses[0], "last": losses[-1], "steps": len(losses)} if losses else {}
        out["message"] = self.message()
        return out


def read_pairs(path: str | Path) -> list[TrainingPair]:
    """Labelled pairs from a JSONL file (see the module docstring); a malformed line is refused with
    its number."""
    return [pair for _, pair in read_jsonl(Path(path), pair_record, "pairs")]


def pair_record(record: Any, where: str) -> TrainingPair:
    """One labelled pair from its JSON form, checked (``where`` names it in errors)."""
    if isinstance(record, TrainingPair):
        return record
    shapes = (
        '{"query": "text", "id": "item id"}, {"query": "text", "relevant": ["id", ...]} '
        'or {"text_a": "text", "text_b": "text"}'
    )
    if not isinstance(record, dict):
        raise InvalidInputError(f"{where}: write {shapes}, got {record!r:.80}")
    keys = set(record)
    if keys == {"text_a", "text_b"}:
        a, b = (_text(record[k], f"{where}: {k}") for k in ("text_a", "text_b"))
        return TrainingPair(a, answer=b, where=where)
    if keys in ({"query", "id"}, {"query", "relevant"}):
        ids = record.get("relevant", record.get("id"))
        ids = [ids] if isinstance(ids, str) else ids
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise InvalidInputError(f"{where}: the answer is an item id or a non-empty list of ids, got {ids!r:.80}")
        return TrainingPair(_text(record["query"], f"{where}: the query"), tuple(dict.fromkeys(ids)), where=where)
    raise InvalidInputError(f"{where}: write {shapes}, got the fields {sorted(keys)!r:.80}")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what} is empty or not a string; give it a text")
    return check_text(value, what)


def tune_encoder(
    collection: Collection,
    out: str | Path,
    pairs: str | Path | Sequence[TrainingPair | dict] | None = None,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    sample: int = DEFAULT_SAMPLE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    holdout: float = DEFAULT_HOLDOUT,
    seed: int = 0,
    overwrite: bool = False,
    progress: TuneProgress | None = None,
) -> EncoderTuningReport:
    """Fine-tune ``collection``'s text encoder on its own items and save it in ``out`` if it ranks the
    held-out pairs better (see the module docstring). Every input is checked before training."""
    from latentsearch.encoders.finetune import TrainingSettings

    started = time.perf_counter()
    steps = check_int("steps", steps, 1, MAX_STEPS)
    batch_size = check_int("batch_size", batch_size, 2, MAX_BATCH)
    sample = check_int("sample", sample, MIN_PAIRS, MAX_SAMPLE)
    seed = check_int("seed", seed, 0, 2**32 - 1)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not 0 < learning_rate < 1:
        raise InvalidInputError(f"learning_rate must be a number between 0 and 1, got {learning_rate!r}")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 < holdout < 1:
        raise InvalidInputError(f"holdout must be a share between 0 and 1 (e.g. 0.2), got {holdout!r}")
    out = Path(out).expanduser().resolve()
    if out.exists() and not overwrite:
        raise InvalidInputError(f"the output folder {out} exists: choose another, or pass overwrite (CLI: --overwrite)")
    base_dir = _base_folder(collection)
    rng = np.random.default_rng(seed)
    corpus = _Corpus(collection, sample + CORPUS_ITEMS, rng)
    if pairs is not None:
        chosen = _labelled(collection, pairs, corpus)
        source = "labelled"
    else:
        chosen = corpus.pseudo_pairs(sample, rng)
        source = "pseudo"
    if len(chosen) < MIN_PAIRS:
        raise InvalidInputError(_too_few(collection, source, len(chosen), len(corpus.items)))
    chosen = [chosen[int(i)] for i in rng.permutation(len(chosen))[:sample]]
    train_pairs, heldout = _split(chosen, holdout, rng)
    if len(train_pairs) < MIN_TRAIN:
        raise InvalidInputError(
            f"holding out {len(heldout)} of {len(chosen)} pairs leaves {len(train_pairs)} to train on; tuning needs "
            f"{MIN_TRAIN}: give more pairs, or a smaller holdout"
        )
    evaluation = corpus.evaluation(heldout, rng)
    training = [(p.query, corpus.answer_text(p, collection)) for p in train_pairs]

    from latentsearch.encoders import finetune

    model = finetune.load_trainable(base_dir)
    before = evaluation.measure(model, "base", progress)
    settings = TrainingSettings(steps=steps, batch_size=batch_size, learning_rate=float(learning_rate), seed=seed)
    train_started = time.perf_counter()
    losses = finetune.train(
        model, training, settings, (lambda s, n, loss: progress("train", s, n, loss)) if progress else None
    )
    train_seconds = time.perf_counter() - train_started
    after = evaluation.measure(model, "tuned", progress)
    kept = after["mrr@10"] > before["mrr@10"]
    report = EncoderTuningReport(
        collection=collection.name,
        base=collection.encoder_name,
        base_weights_sha256=str(collection.encoder.weights_hash),
        out=str(out),
        kept=kept,
        source=source,
        pairs={"train": len(training), "heldout": len(heldout)},
        settings={**settings.__dict__, "steps": len(losses), "steps_asked": steps, "seconds": round(train_seconds, 1)},
        before=before,
        after=after,
        corpus=evaluation.size,
        seconds=0.0,
        losses=losses,
    )
    if kept:
        finetune.save_tuned(model, out, _card(report, base_dir, train_seconds), overwrite=overwrite)
    report.seconds = round(time.perf_counter() - started, 1)
    return report


def _base_folder(collection: Collection) -> Path:
    """The sentence-transformers folder of the collection's encoder (its weights checked)."""
    if collection.modality != "text":
        raise InvalidInputError(
            f"collection {collection.name!r} holds {collection.modality} vectors: tune-encoder fine-tunes a text "
            f"encoder ({TUNABLE})"
        )
    encoder = collection.encoder  # checks the weights against the manifest
    folder = getattr(encoder, "path", None)
    from latentsearch.encoders.minilm import MiniLMEncoder
    from latentsearch.encoders.text import SentenceTransformerEncoder

    if not isinstance(encoder, (MiniLMEncoder, SentenceTransformerEncoder)) or folder is None:
        raise InvalidInputError(
            f"collection {collection.name!r} uses encoder {collection.encoder_name!r}; tune-encoder fine-tunes "
            f"{TUNABLE}"
        )
    return Path(folder)


def _too_few(collection: Collection, source: str, found: int, items: int) -> str:
    if source == "labelled":
        return (
            f"the pairs file gives {found} pairs; tuning needs at least {MIN_PAIRS} ({MIN_HELDOUT} held out to "
            f"measure, {MIN_TRAIN} to train on)"
        )
    return (
        f"collection {collection.name!r} gives {found} pseudo-pairs from its {items} texts (a sentence of 4-40 words "
        f"with 4+ words left, or a title); tuning needs at least {MIN_PAIRS} ({MIN_HELDOUT} held out to measure, "
        f"{MIN_TRAIN} to train on): add texts, or give labelled pairs (--pairs)"
    )


def _labelled(collection: Collection, pairs: str | Path | Sequence[Any], corpus: _Corpus) -> list[TrainingPair]:
    """Labelled pairs read and checked: every id must be an item of the collection, with text."""
    records = read_records(collection, pairs, pair_record, "pairs", "pair")
    wanted = sorted({i for _, p in records for i in p.relevant})
    found = collection.backend.get(wanted, with_vectors=False) if wanted else {}
    for where, pair in records:
        textless = [i for i in pair.relevant if not (found[i].text or "").strip()]
        if textless:
            raise InvalidInputError(f"{where}: item {textless[0]!r} has no text to train on; give items with text")
    corpus.include({i: found[i].text for i in wanted})
    return [p for _, p in records]


def _split(pairs: list[TrainingPair], holdout: float, rng: np.random.Generator) -> tuple[list, list]:
    """Training and held-out pairs, split by answer: every pair of a held-out item (or text) is held out."""
    groups: dict[Any, list[TrainingPair]] = {}
    for pair in pairs:
        groups.setdefault(pair.relevant or pair.answer, []).append(pair)
    wanted = max(MIN_HELDOUT, math.ceil(holdout * len(pairs)))
    train, held = [], []
    for key in [list(groups)[int(i)] for i in rng.permutation(len(groups))]:
        (held if len(held) < wanted else train).extend(groups[key])
    return train, held


class _Corpus:
    """A sample of the collection's items (ids, texts, passages, titles) to make pairs of and measure in."""

    def __init__(self, collection: Collection, size: int, rng: np.random.Generator) -> None:
        self.collection = collection
        pool: list[Any] = []
        seen = 0
        for item in collection.iter_items():  # a uniform sample of `size` items (reservoir sampling)
            if not (item.text or "").strip():
                continue
            seen += 1
            if len(pool) < size:
                pool.append(item)
            elif (at := int(rng.integers(seen))) < size:
                pool[at] = item
        self.items: dict[str, str] = {item.id: item.text for item in pool}
        self.titles: dict[str, str] = {}
        for item in pool:
            title = (item.metadata or {}).get("title")
            if isinstance(title, str) and len(title.split()) >= 2 and title.strip() != item.text.strip():
                self.titles[item.id] = " ".join(title.split())
        self.spans: dict[str, list[tuple[int, int]]] = {}
        self.include({})

    def include(self, texts: dict[str, str]) -> None:
        """Add items (a labelled pair's answers) and read the passages of those not read yet."""
        self.items.update(texts)
        missing = [i for i in self.items if i not in self.spans]
        listed = self.collection.backend.passages(missing) if missing else {}
        for item_id in missing:
            self.spans[item_id] = [(s, e) for s, e, _ in listed.get(item_id, [])] or [(0, len(self.items[item_id]))]

    def pseudo_pairs(self, sample: int, rng: np.random.Generator) -> list[TrainingPair]:
        """Up to ``sample`` pseudo-pairs: a title and its item's first passage, or a sentence and the rest
        of its passage; items in a random order, one query each a round, further rounds on small
        collections (as :meth:`latentsearch.search.tuning._Corpus.pseudo_queries` does)."""
        order = [list(self.items)[int(i)] for i in rng.permutation(len(self.items))]
        out = [TrainingPair(self.titles[i], (i,), where=f"item {i!r} title") for i in order if i in self.titles]
        taken: dict[str, list[tuple[int, int]]] = {}
        for _ in range(MAX_QUERIES_PER_ITEM):
            before = len(out)
            for item_id in order:
                if len(out) >= sample:
                    return out
                text, spans = self.items[item_id], taken.setdefault(item_id, [])
                span = query_span(text, spans, rng)
                if span is not None:
                    spans.append(span)
                    query = " ".join(text[span[0] : span[1]].split())
                    out.append(TrainingPair(query, (item_id,), where=f"item {item_id!r}", span=span))
            if len(out) == before:
                break
        return out

    def passage_of(self, item_id: str, span: tuple[int, int] | None) -> tuple[int, int]:
        """The passage of an item that holds most of ``span`` (its first passage without one)."""
        passages = self.spans[item_id]
        if span is None:
            return passages[0]
        return max(passages, key=lambda p: min(p[1], span[1]) - max(p[0], span[0]))

    def answer_text(self, pair: TrainingPair, collection: Collection) -> str:
        """The passage a training pair's query should find: the text of a text pair; the passage around a
        pseudo-query with the query cut out; for a labelled id, its passage nearest the query."""
        if pair.answer is not None:
            return pair.answer
        item_id = pair.relevant[0]
        text = self.items[item_id]
        if pair.span is not None:
            return cut_out(text, self.passage_of(item_id, pair.span), [pair.span]) or text
        passages = self.spans[item_id]
        if len(passages) == 1:
            s, e = passages[0]
        else:  # the stored passage vectors, against the query by the collection's own encoder
            vectors = collection.backend.passage_vectors([item_id])[item_id]
            s, e = passages[int(np.argmax(vectors @ collection.encode([pair.query])[0]))]
        if pair.where.endswith("title"):
            return cut_out(text, (s, e), _occurrences(text, pair.query)) or text[s:e]
        return text[s:e]

    def evaluation(self, heldout: list[TrainingPair], rng: np.random.Generator) -> _Evaluation:
        """The held-out queries and the corpus they are ranked in (see the module docstring)."""
        cut: dict[str, list[tuple[int, int]]] = {}
        keys: list[str] = []
        texts: list[str] = []
        queries: list[tuple[str, set[str]]] = []
        answers = {}
        for n, pair in enumerate(heldout):
            if pair.answer is not None:
                key = answers.setdefault(pair.answer, f"\x00pair {n}")
                queries.append((pair.query, {key}))
                continue
            queries.append((pair.query, set(pair.relevant)))
            for item_id in pair.relevant:
                found = [pair.span] if pair.span else _occurrences(self.items[item_id], pair.query)
                cut.setdefault(item_id, []).extend(found)
        for answer, key in answers.items():
            keys.append(key)
            texts.append(answer)
        chosen = list(dict.fromkeys(i for _, relevant in queries for i in relevant if i in self.items))
        others = [i for i in self.items if i not in set(chosen)]
        room = max(0, CORPUS_ITEMS - len(chosen) - len(answers))
        chosen += [others[int(i)] for i in sorted(rng.permutation(len(others))[:room])]
        for item_id in chosen:
            text = self.items[item_id]
            for passage in self.spans[item_id]:
                keys.append(item_id)
                texts.append(cut_out(text, passage, cut.get(item_id, [])) or " ")
        return _Evaluation(queries, keys, texts, {"items": len(chosen) + len(answers), "passages": len(texts)})


def _occurrences(text: str, query: str) -> list[tuple[int, int]]:
    """Where ``query`` appears in ``text`` verbatim (a title in its own text): cut out when measured."""
    spans, at = [], text.find(query)
    while at >= 0:
        spans.append((at, at + len(query)))
        at = text.find(query, at + len(query))
    return spans


@dataclass
class _Evaluation:
    queries: list[tuple[str, set[str]]]
    keys: list[str]
    texts: list[str]
    size: dict[str, int]

    def measure(self, model: Any, stage: str, progress: TuneProgress | None) -> dict[str, float]:
        """MRR@10 and recall@10 of the held-out queries, each item ranked at its best passage."""
        from latentsearch.encoders.finetune import encode_with

        texts = [q for q, _ in self.queries] + self.texts
        parts, step = [], 64
        for start in range(0, len(texts), step):
            parts.append(encode_with(model, texts[start : start + step]))
            if progress:
                progress(stage, min(start + step, len(texts)), len(texts), None)
        vectors = np.concatenate(parts)
        queries, passages = vectors[: len(self.queries)], vectors[len(self.queries) :]
        names = list(dict.fromkeys(self.keys))
        index = {k: n for n, k in enumerate(names)}
        owners = np.array([index[k] for k in self.keys])
        values = []
        for (_, relevant), row in zip(self.queries, queries @ passages.T):
            best = np.full(len(names), -np.inf)
            np.maximum.at(best, owners, row)  # an item scores as its best passage, as search ranks it
            ranked = [names[t] for t in np.argsort(-best, kind="stable")[:10]]
            values.append((reciprocal_rank(ranked, relevant), recall_at(ranked, relevant, 10)))
        return {name: round(float(v), 4) for name, v in zip(MEASURES, np.mean(values, axis=0))}


def _card(report: EncoderTuningReport, base_dir: Path, train_seconds: float) -> dict[str, Any]:
    """The model card's facts (see :mod:`latentsearch.encoders.finetune`)."""
    weights = base_dir / "model.safetensors"
    base_file = None
    if weights.is_file():
        from latentsearch.usercache import verified_sha256

        base_file = verified_sha256(weights)
    settings = report.settings
    return {
        "name": Path(report.out).name,
        "made_by": "latentsearch tune-encoder",
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base_model": {
            "name": report.base,
            "folder": str(base_dir),
            "weights_sha256": base_file or report.base_weights_sha256,
            "encoder_weights_hash": report.base_weights_sha256,
        },
        "data": {
            "collection": report.collection,
            "source": report.source,
            "train_pairs": report.pairs["train"],
            "heldout_pairs": report.pairs["heldout"],
            "corpus": report.corpus,
        },
        "training": {
            "loss": "MultipleNegativesRankingLoss (in-batch negatives)",
            "steps": settings["steps"],
            "batch_size": settings["batch_size"],
            "learning_rate": settings["learning_rate"],
            "warmup": settings["warmup"],
            "seed": settings["seed"],
            "seconds": round(train_seconds, 1),
            "loss_first_last": [report.losses[0], report.losses[-1]] if report.losses else [],
        },
        "heldout": {"before": report.before, "after": report.after, "kept": True},
    }
