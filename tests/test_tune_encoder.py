"""Transfer learning: tune-encoder (pairs, training, the keep-only-if-better rule, the card), the ONNX
path of st: folders, and reencode (into a new collection, in place, crash points)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.cli import app
from latentsearch.encoders import get_encoder
from latentsearch.encoders.finetune import CARD_FILE, batches
from latentsearch.encoders.minilm import MINILM_SHA256
from latentsearch.encoders.passages import PassageSettings, split_texts
from latentsearch.encoders.text import SentenceTransformerEncoder, onnx_plan
from latentsearch.search.encoder_tuning import MIN_PAIRS, _Corpus, read_pairs
from latentsearch.workflows.demo import demo_corpus
from latentsearch.workflows.reencode import page_starts, reencode

from . import toy_encoders  # noqa: F401 - registers toy-a and toy-b
from .faults import crash_points

runner = CliRunner()
ITEMS = 60  # Python docs items: about 90 pseudo-pairs, enough to hold 20 out and train on the rest


def run(*args, ok=True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def docs_collection(home, name="docs", n=ITEMS):
    corpus = demo_corpus(n)
    col = ls.create(name, home=home)
    col.add([d["id"] for d in corpus], [d["text"] for d in corpus], metadata=[d["metadata"] for d in corpus])
    return col


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A Python-docs collection and a model tuned on it (a few steps: enough to beat the base on its
    held-out pairs with this seed, which the tests below check rather than assume)."""
    root = tmp_path_factory.mktemp("tuned")
    home = root / "home"
    col = docs_collection(home)
    report = col.tune_encoder(root / "model", steps=3, batch_size=8)
    col.close()
    assert report.kept, report.message()
    return {"home": home, "out": root / "model", "report": report}


# --- pairs ---------------------------------------------------------------------------------------------


def test_pseudo_pairs_point_to_their_item_with_the_query_cut_out(home):
    col = docs_collection(home, n=30)
    corpus = _Corpus(col, 100, np.random.default_rng(0))
    pairs = corpus.pseudo_pairs(200, np.random.default_rng(1))
    assert len(pairs) >= 30 and all(len(p.relevant) == 1 for p in pairs)
    for pair in pairs:
        text = corpus.items[pair.relevant[0]]
        start, end = pair.span
        assert " ".join(text[start:end].split()) == pair.query  # the query is the item's own sentence
        answer = corpus.answer_text(pair, col)
        assert pair.query not in " ".join(answer.split())  # ...cut out of the passage that answers it
        assert all(word in text for word in answer.split()[:5])  # the rest of that item's passage
    col.close()


def test_batches_never_repeat_a_text():
    pairs = [(f"q{i % 7}", f"p{i % 5}") for i in range(40)]
    plan = batches(pairs, 4, np.random.default_rng(0))
    for batch in plan:
        texts = [t for i in batch for t in pairs[i]]
        assert len(texts) == len(set(texts))  # a duplicate would be a false in-batch negative


def test_pairs_file_formats(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [
        {"query": "delete a tree of folders", "id": "shutil.rmtree"},
        {"query": "median", "relevant": ["statistics.median", "statistics.median_low"]},
        {"text_a": "a question", "text_b": "its answer"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    pairs = read_pairs(path)
    assert [p.relevant for p in pairs] == [("shutil.rmtree",), ("statistics.median", "statistics.median_low"), ()]
    assert pairs[2].query == "a question" and pairs[2].answer == "its answer"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query": "x", "id": ', "line 2 is not JSON"),
        ('{"query": "x"}', "line 2: write"),
        ('{"query": "", "id": "topic:assert"}', "line 2: the query is empty"),
        ('{"text_a": "x", "text_b": 3}', "line 2: text_b is empty or not a string"),
        ('{"query": "x", "relevant": []}', "line 2: the answer is an item id"),
        ('{"query": "x", "id": "ghost"}', "line 2: 1 relevant id(s) are not in collection 'docs' ('ghost')"),
    ],
)
def test_bad_pairs_are_refused_naming_the_line(home, tmp_path, line, message):
    col = docs_collection(home, n=5)
    seq, manifest = col.seq, dict(col.manifest)
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "assert statements", "id": "topic:assert"}\n' + line + "\n")
    result = run("tune-encoder", "docs", "--out", tmp_path / "out", "--pairs", path, ok=False)
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    assert col.seq == seq and ls.open("docs", home=home).manifest == manifest  # nothing about the source changed
    col.close()


def test_too_few_texts_or_pairs_say_how_many_are_needed(home, tmp_path):
    col = docs_collection(home, n=8)
    with pytest.raises(ls.InvalidInputError, match=f"tuning needs at least {MIN_PAIRS}"):
        col.tune_encoder(tmp_path / "out")
    pairs = [{"query": "assert statements", "id": "topic:assert"}] * 10
    with pytest.raises(ls.InvalidInputError, match=f"gives 10 pairs; tuning needs at least {MIN_PAIRS}"):
        col.tune_encoder(tmp_path / "out", pairs)
    assert not (tmp_path / "out").exists()
    col.close()


def test_an_existing_output_folder_is_refused_without_overwrite(home, tmp_path):
    col = docs_collection(home, n=5)
    (tmp_path / "out").mkdir()
    result = run("tune-encoder", "docs", "--out", tmp_path / "out", ok=False)
    assert result.exit_code == 1 and "exists: choose another, or pass overwrite (CLI: --overwrite)" in result.stderr
    col.close()


def test_only_text_encoders_are_tuned(home, tmp_path):
    col = ls.create("vecs", encoder="precomputed", dim=4, home=home)
    with pytest.raises(ls.InvalidInputError, match="fine-tunes a text encoder"):
        col.tune_encoder(tmp_path / "out")
    col.close()


# --- the tuned model ------------------------------------------------------------------------------------


def test_the_tuned_model_is_a_safetensors_folder_with_its_card(tuned):
    out, report = tuned["out"], tuned["report"]
    assert report.after["mrr@10"] > report.before["mrr@10"] and report.message().startswith("saved the tuned")
    files = [p for p in out.rglob("*") if p.is_file()]
    assert (out / "model.safetensors").is_file()
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]  # no pickles
    card = json.loads((out / CARD_FILE).read_text())
    assert card["base_model"]["name"] == "minilm" and card["base_model"]["weights_sha256"] == MINILM_SHA256
    assert card["data"] == {
        "collection": "docs",
        "source": "pseudo",
        "train_pairs": report.pairs["train"],
        "heldout_pairs": report.pairs["heldout"],
        "corpus": report.corpus,
    }
    assert report.pairs["heldout"] >= 20 and report.corpus["items"] == ITEMS
    assert card["training"]["steps"] == 3 and card["training"]["batch_size"] == 8
    assert card["heldout"] == {"before": report.before, "after": report.after, "kept": True}
    assert "MRR@10" in (out / "README.md").read_text()


def test_a_tuned_folder_runs_on_onnx_with_sentence_transformers_vectors(tuned):
    out = tuned["out"]
    assert onnx_plan(out) == (384, 256)
    fast, slow = SentenceTransformerEncoder(out), SentenceTransformerEncoder(out, backend="torch")
    assert fast.backend_in_use == "onnx" and fast.window == 254 and fast.modality == "text"
    texts = ["assert statements", "Um Ihr Passwort zurückzusetzen", " ".join(["a text past the window"] * 100)]
    assert float(np.abs(fast.encode(texts) - slow.encode(texts)).max()) <= 1e-5
    assert fast.token_spans(texts[:1]) == slow.token_spans(texts[:1])


def test_other_folders_run_on_pytorch_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "m"
    shutil.copytree(get_encoder("minilm").path, folder)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert "pools its tokens otherwise" in onnx_plan(folder)
    with caplog.at_level("WARNING", logger="latentsearch"):
        assert SentenceTransformerEncoder(folder).backend_in_use == "torch"
    assert "runs on the slower PyTorch path" in caplog.text


def test_a_worse_model_is_not_kept(home, tmp_path):
    """A learning rate far too high wrecks the model: the base is kept and nothing is written."""
    docs_collection(home).close()
    result = run(
        "tune-encoder", "docs", "--out", tmp_path / "out", "--steps", 2, "--batch-size", 8, "--learning-rate", 0.5
    )
    assert "kept base model: tuned MRR@10 " in result.stdout and "nothing was written" in result.stdout
    assert not (tmp_path / "out").exists()


# --- reencode -------------------------------------------------------------------------------------------


def test_reencode_into_a_new_collection(tuned, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(tuned["home"], home)
    spec = f"st:{tuned['out']}"
    before = ls.open("docs", home=home)
    old = before.vectors_of([i.id for i in before.items()])
    before.close()
    result = run("reencode", "docs", "--encoder", spec, "--into", "docs2", "--home", home)
    assert f"re-encoded docs into docs2: {ITEMS} items" in result.stdout
    source, new = ls.open("docs", home=home), ls.open("docs2", home=home)
    assert source.encoder_name == "minilm" and np.array_equal(source.vectors_of([i.id for i in source.items()]), old)
    items = new.items()
    assert [(i.id, i.text, i.metadata) for i in items] == [(i.id, i.text, i.metadata) for i in source.items()]
    assert new.encoder_name == spec and new.manifest["weights_hash"] == get_encoder(spec).weights_hash
    assert new.manifest["reencoded"]["from"] == "minilm"
    assert np.allclose(
        new.vectors_of([i.id for i in items]), get_encoder(spec).encode([i.text for i in items]), atol=1e-6
    )
    assert new.search("assert statements", k=1)[0].id == "topic:assert"
    source.close()
    new.close()
    assert "exists" in run("reencode", "docs", "--encoder", spec, "--into", "docs2", "--home", home, ok=False).stderr


def test_reencode_in_place_and_a_text_query_without_torch(tuned, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(tuned["home"], home)
    spec = f"st:{tuned['out']}"
    col = ls.open("docs", home=home)
    col.tune_search()  # a fusion measured on the old vectors is forgotten
    col.close()
    report = reencode(ls.connect(home), "docs", spec)
    assert report.in_place and report.items == ITEMS
    col = ls.open("docs", home=home)
    items = col.items()
    assert col.encoder_name == spec and col.count() == ITEMS and not col.manifest.get("search")
    assert np.allclose(
        col.vectors_of([i.id for i in items]), get_encoder(spec).encode([i.text for i in items]), atol=1e-6
    )
    assert col.search("assert statements", k=1, mode="vector")[0].id == "topic:assert"
    col.close()
    assert not [p for p in home.iterdir() if p.name.startswith(".")]  # no work folder left
    script = textwrap.dedent(
        """
        import json, sys
        from typer.testing import CliRunner
        from latentsearch.cli import app
        args = ["search", "docs", "assert statements", "-k", "1", "--json", "--home", sys.argv[1]]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        print(json.dumps({"top": json.loads(result.stdout)[0]["id"], "torch": "torch" in sys.modules}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(home)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"top": "topic:assert", "torch": False}


def test_page_starts_split_the_text_as_it_was():
    text = "One two three. Four five six. " * 6 + "Seven eight. " * 8
    starts = [0, 60, 60, 120]  # page 2 is empty: it starts where page 3 does
    settings = PassageSettings(window=6, stride=4, max_passages=100)

    def words(texts):
        import re

        return [[m.span() for m in re.finditer(r"\S+", t)] for t in texts]

    (spans,), _ = split_texts([text], words, settings, [starts])
    again = page_starts([(s.start, s.end, s.page) for s in spans])
    (respans,), _ = split_texts([text], words, settings, [again])
    assert respans == spans and page_starts([(0, 5, None)]) is None


# --- in place, crash-safe: toy encoders, so that each crash point's process starts fast ------------------------

N = 40


def toy_texts() -> list[str]:
    rng = np.random.default_rng(3)
    words = ["grain", "corn", "wheat", "price", "export", "rain", "crop", "ship", "port", "bank"]
    return [" ".join(rng.choice(words, size=6)) + f" item{i}" for i in range(N)]


def assert_encoded(home, point) -> str:
    col = ls.open("c", home=home)
    try:
        assert col.count() == N and col.encoder_name in ("toy-a", "toy-b"), point
        ids = [f"i{n}" for n in range(N)]
        wanted = get_encoder(col.encoder_name).encode(toy_texts())
        wanted /= np.linalg.norm(wanted, axis=1, keepdims=True)
        assert np.allclose(col.vectors_of(ids), wanted, atol=1e-5), point  # all old vectors or all new
        assert col.search(wanted[5], k=1)[0].id == "i5", point
        assert col.items()[0].metadata == {"n": 0}, point
        return col.encoder_name
    finally:
        col.close()


@pytest.fixture
def toy_home(tmp_path):
    home = tmp_path / "pristine"
    col = ls.create("c", encoder="toy-a", index="hnsw", home=home)
    col.add([f"i{n}" for n in range(N)], toy_texts(), metadata=[{"n": n} for n in range(N)])
    col.close()
    return home


@pytest.mark.slow  # (over 15 s: run by .ci/run's second step)
def test_reencode_in_place_is_crash_safe(tmp_path, toy_home):
    """Killed before any file operation, re-encoding leaves the old collection whole or the new one whole;
    the next run works and leaves no work folder behind."""
    home = tmp_path / "home"
    seen = set()

    def reset():
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(toy_home, home)

    def check(point):
        encoder = assert_encoded(home, point)
        seen.add(encoder)
        other = "toy-b" if encoder == "toy-a" else "toy-a"
        reencode(ls.connect(home), "c", other)  # the next run works, and removes what the killed one left
        assert assert_encoded(home, point) == other
        assert not [p.name for p in home.iterdir() if p.name.startswith(".")], point

    root = str(Path(__file__).resolve().parent.parent)
    prelude = f"import sys\nsys.path.insert(0, {root!r})\nimport tests.toy_encoders\nimport latentsearch as ls\n"
    prelude += f"from latentsearch.workflows.reencode import reencode\ndb = ls.connect({str(home)!r})\n"
    points = crash_points(tmp_path, prelude, "reencode(db, 'c', 'toy-b')", reset, check)
    assert points >= 5 and seen == {"toy-a", "toy-b"}  # crashes before and after the switch were both tried


def test_the_work_folder_of_a_reencode_killed_after_its_switch_goes_at_the_next_open(toy_home):
    """Killed between its switch and its clean-up, an in-place re-encode leaves its hidden work folder;
    the name lives on (no create or drop of it comes), so the next open removes it, once its process is
    gone (a live one's is kept)."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = toy_home / f".c.creating-{int(finished.stdout)}"
    alive = toy_home / f".c.creating-{os.getppid()}"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "collection.db").write_bytes(b"left")
    own = toy_home / f".c.creating-{os.getpid()}"  # (this process's: a re-encode's, about to switch)
    own.mkdir()
    ls.open("c", home=toy_home).close()
    assert not dead.exists() and alive.exists() and own.exists()


def test_a_write_during_reencode_makes_it_refuse(toy_home):
    db = ls.connect(toy_home)
    col = db.open("c")
    seq = col.seq
    col.add(["late"], ["written while re-encoding"])
    building = db.building("c", encoder="toy-b", index="hnsw", adopt_seq=seq)
    with pytest.raises(ls.ConflictError, match="written to while it was re-encoded"), building as target:
        target.add(["x"], ["anything"])
    col.close()
    assert ls.open("c", home=toy_home).encoder_name == "toy-a"
    assert not [p.name for p in toy_home.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("encoder", ["toy-b", "toy-wide"])  # (the same dimension, and another)
def test_a_handle_open_during_an_in_place_reencode_follows_it(toy_home, encoder):
    """Its next search, whose query the old model encoded, is refused once in one line; then it searches
    with the new encoder, as a handle opened afterwards does."""
    texts = toy_texts()
    stale = ls.open("c", home=toy_home)
    stale.backend.write_manifest({"search": {"tuned": "with the old vectors"}})  # (what re-encoding forgets)
    assert stale.search(texts[5], k=1, mode="vector")[0].id == "i5"  # (its index read)
    reencode(ls.connect(toy_home), "c", encoder)  # (another handle: as another process would)
    with pytest.raises(ls.ConflictError, match=f"re-encoded with '{encoder}' by another process") as info:
        stale.search(texts[5], k=3, mode="vector")
    assert "\n" not in str(info.value)
    fresh = ls.open("c", home=toy_home)
    assert stale.encoder_name == fresh.encoder_name == encoder and stale.dim == fresh.dim
    assert stale.manifest == fresh.manifest and "search" not in stale.manifest
    for text in texts[:20]:
        assert [h.id for h in stale.search(text, k=3, mode="vector")] == [
            h.id for h in fresh.search(text, k=3, mode="vector")
        ]
    fresh.close()
    stale.close()


def test_a_handle_open_during_an_in_place_reencode_reads_vectors_at_the_new_dimension(toy_home):
    stale = ls.open("c", home=toy_home)
    assert stale.vectors_of(["i1"]).shape == (1, 8)
    reencode(ls.connect(toy_home), "c", "toy-wide")
    with pytest.raises(ls.ConflictError, match="re-encoded with 'toy-wide'"):
        stale.vectors_of(["i1"])
    np.testing.assert_allclose(stale.vectors_of(["i1"])[0], _wide_vector(toy_texts()[1]), atol=1e-6)
    stale.close()


def test_a_handle_follows_what_another_process_writes_into_the_manifest_without_a_conflict(toy_home):
    """A tuned fusion another process stores (``tune``) is what an open handle's next search fuses with."""
    texts = toy_texts()
    stale = ls.open("c", home=toy_home)
    stale.search(texts[0], k=1)
    other = ls.open("c", home=toy_home)
    other.backend.write_manifest({"search": {"tuned": "elsewhere"}, "layers": {"topics": {"fields": ["t"]}}})
    other.close()
    assert stale.search(texts[5], k=1, mode="vector")[0].id == "i5"  # (no conflict: the encoder is the same)
    assert stale.manifest["search"] == {"tuned": "elsewhere"} and stale.layers == {"topics": {"fields": ["t"]}}
    stale.close()


def _wide_vector(text: str) -> np.ndarray:
    vector = get_encoder("toy-wide").encode([text])[0]
    return vector / np.linalg.norm(vector)


def test_a_write_from_a_handle_open_during_an_in_place_reencode_is_refused_then_encoded_anew(toy_home):
    stale = ls.open("c", home=toy_home)
    stale.search(toy_texts()[0], k=1)
    reencode(ls.connect(toy_home), "c", "toy-wide")
    with pytest.raises(ls.ConflictError, match="re-encoded with 'toy-wide'"):
        stale.add(["late"], ["a late text"])
    assert stale.count() == N
    stale.add(["late"], ["a late text"])
    stale.close()
    with ls.open("c", home=toy_home) as col:
        assert col.count() == N + 1
        np.testing.assert_allclose(col.vectors_of(["late"])[0], _wide_vector("a late text"), atol=1e-6)


def test_a_reencode_committed_just_before_a_write_is_caught_inside_its_transaction(toy_home, monkeypatch):
    """The write's catch-up found nothing new; the re-encode commits before its transaction begins (the
    store's insert, replaced here to run it first): the transaction sees it, writes nothing."""
    stale = ls.open("c", home=toy_home)
    stale.search(toy_texts()[0], k=1)
    store = stale.backend.store
    insert = store.insert

    def reencoded_first(*args, **kwargs):
        monkeypatch.setattr(store, "insert", insert)
        reencode(ls.connect(toy_home), "c", "toy-wide")
        return insert(*args, **kwargs)

    monkeypatch.setattr(store, "insert", reencoded_first)
    with pytest.raises(ls.ConflictError, match="re-encoded with 'toy-wide'"):
        stale.add(["late"], ["a late text"])  # (encoded by toy-a, 8-d: never written beside 12-d vectors)
    assert stale.count() == N and stale.dim == 12
    stale.add(["late"], ["a late text"])
    assert stale.search("a late text", k=1, mode="vector")[0].id == "late"
    stale.close()
    with ls.open("c", home=toy_home) as col:
        np.testing.assert_allclose(col.vectors_of(["late"])[0], _wide_vector("a late text"), atol=1e-6)


def test_reencode_refuses_what_it_cannot_do(toy_home):
    db = ls.connect(toy_home)
    with pytest.raises(ls.InvalidInputError, match="already encoded with 'toy-a'"):
        reencode(db, "c", "toy-a")
    ls.create("vecs", encoder="precomputed", dim=4, home=toy_home).close()
    with pytest.raises(ls.InvalidInputError, match="only text collections can be re-encoded"):
        reencode(db, "vecs", "toy-b")
    with pytest.raises(ls.InvalidInputError, match="unknown encoder"):
        reencode(db, "c", "word2vec")
