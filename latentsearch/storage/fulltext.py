"""Lexical search helpers: turning free text into a safe SQLite FTS5 query.

FTS5 has its own query syntax (quotes, ``AND``/``OR``/``NOT``, ``-``, ``*``, column filters). User
text must never be read as that syntax, so a query becomes its words, each quoted, joined by ``OR``:
BM25 then ranks documents by how many of the words they contain and how rare those words are.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

_WORD_RE = re.compile(r"\w+", re.UNICODE)
TOKENIZER = "porter unicode61 remove_diacritics 2"  # the FTS5 tokenizer of every collection's text
SNIPPET_TOKENS = 24  # words around the matches in a hit's snippet
SNIPPET_MARKS = ("**", "**")  # what the matched words are wrapped in
MAX_TERMS = 64  # long inputs (a whole document as a "more like this" query) keep their first words
# English function words, dropped from queries as Lucene's English analyzer does: in small collections
# BM25's IDF cannot tell that "a" or "how" carry no topic, and they would outrank real matches.
STOPWORDS = frozenset(
    (
        "a an and are as at be but by can could did do does for from had has have how i if in into is it its "
        "me my no not of on or our should so than that the their them then there these they this to was we "
        "were what when where which who why will with would you your"
    ).split()
)


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression for free text, or None when the text has no words."""
    words = list(dict.fromkeys(w.lower() for w in _WORD_RE.findall(text)))
    content = [w for w in words if w not in STOPWORDS]
    words = (content or words)[:MAX_TERMS]  # a query of only stop words still searches for them
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words)


_SCRATCH = threading.local()


@contextmanager
def _scratch() -> Iterator[sqlite3.Connection]:
    """An in-memory FTS5 table with the collection's tokenizer, for ranking and cutting a few texts
    that are not rows of any collection (hits' passages). One per thread, its rows rolled back after
    each use: making it costs more than the snippets themselves."""
    conn = getattr(_SCRATCH, "conn", None)
    if conn is None:
        conn = _SCRATCH.conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute(f"CREATE VIRTUAL TABLE texts USING fts5(text, tokenize='{TOKENIZER}')")
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")  # the texts go with the transaction: nothing to delete


def snippets_of(match: str, texts: Sequence[str]) -> list[str | None]:
    """FTS5 snippets of texts around the terms of ``match`` (None for a text without a match), cut as
    a collection's snippets are."""
    with _scratch() as conn:
        conn.executemany("INSERT INTO texts (rowid, text) VALUES (?, ?)", list(enumerate(texts)))
        sql = "SELECT rowid, snippet(texts, 0, ?, ?, '…', ?) FROM texts WHERE texts MATCH ?"
        found = dict(conn.execute(sql, (*SNIPPET_MARKS, SNIPPET_TOKENS, match)).fetchall())
        return [found.get(i) for i in range(len(texts))]
