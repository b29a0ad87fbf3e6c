"""Splitting long texts into passages the encoder reads whole.

A text encoder sees at most its window of word pieces (all-MiniLM-L6-v2: 256, two of them ``[CLS]``
and ``[SEP]``); whatever lies beyond is cut off. A longer text is split, by the encoder's own
tokenizer, into overlapping windows: each passage holds at most ``window`` tokens, the next one
starts ``stride`` tokens after it, and both ends are moved to sentence boundaries where one lies
close enough (so a passage rarely starts or ends mid-sentence). Short texts are one passage.

Offsets are characters of the original text, so a passage is ``text[start:end]``, and a hit can say
where in its document it matched.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from latentsearch.errors import InvalidInputError

DEFAULT_MAX_PASSAGES = 1_000  # per document: about 190,000 tokens of MiniLM, a long book
MAX_PASSAGES_LIMIT = 65_536  # passage ids hold the ordinal in 16 bits (see storage/store.py)
SENTENCE_ENDS = frozenset(".!?;。！？")
# How far a boundary may move to reach a sentence end, as a share of the window: far enough to find
# one in ordinary prose, near enough that a passage keeps most of its window.
SNAP_SHARE = 0.25

TokenSpans = Callable[[list[str]], list[list[tuple[int, int]]]]


@dataclass(frozen=True)
class Span:
    """One passage of a text: characters ``start:end`` and the page they start on (1-based, or None)."""

    start: int
    end: int
    page: int | None = None


@dataclass(frozen=True)
class PassageSettings:
    """How a collection splits texts: ``window`` tokens per passage (the encoder's, without its special
    tokens), ``stride`` tokens between passage starts, at most ``max_passages`` per document."""

    window: int
    stride: int
    max_passages: int


def check_passage_options(stride: int | None, max_passages: int) -> None:
    """Validate the passage options a collection is created with (the window is the encoder's)."""
    from latentsearch.limits import check_int

    if stride is not None:
        check_int("stride", stride, 1, 100_000)
    check_int("max_passages", max_passages, 1, MAX_PASSAGES_LIMIT)


def settings_for(window: int, stride: int | None, max_passages: int) -> PassageSettings:
    """The settings for an encoder window: the stride defaults to 3/4 of it (passages overlap by a
    quarter) and is at most the window (no text skipped between passages)."""
    if window < 1:
        raise InvalidInputError(f"the encoder's window ({window} tokens) leaves no room for text")
    step = max(1, (window * 3) // 4) if stride is None else min(stride, window)
    return PassageSettings(window, step, max_passages)


def split_spans(text: str, offsets: Sequence[tuple[int, int]], settings: PassageSettings) -> tuple[list[Span], bool]:
    """The passages of ``text`` from its token ``offsets`` (character spans, no special tokens).

    Returns ``(spans, cut)``: ``cut`` is True when the text needed more than ``max_passages`` passages
    and its end was left out.
    """
    n = len(offsets)
    if n <= settings.window:
        return [Span(0, len(text))], False
    window, snap = settings.window, max(1, int(settings.window * SNAP_SHARE))
    spans: list[Span] = []
    first = 0
    while True:
        last = min(first + window, n)  # tokens first..last-1
        if last < n:
            last = _sentence_end(text, offsets, first, last, snap)
        start = 0 if first == 0 else offsets[first][0]
        end = len(text) if last == n else offsets[last - 1][1]
        spans.append(Span(start, end))
        if last == n:
            return spans, False
        if len(spans) == settings.max_passages:
            return spans, True
        following = max(first + 1, min(first + settings.stride, last))
        first = _sentence_start(text, offsets, following, last, snap)


def _ends_sentence(text: str, offsets: Sequence[tuple[int, int]], i: int) -> bool:
    """Token ``i`` closes a sentence: it is an end mark, or a line break follows it."""
    start, end = offsets[i]
    if text[start:end] in SENTENCE_ENDS:
        return True
    following = offsets[i + 1][0] if i + 1 < len(offsets) else len(text)
    return "\n" in text[end:following]


def _sentence_end(text: str, offsets: Sequence[tuple[int, int]], first: int, last: int, snap: int) -> int:
    """``last`` moved back to just after the nearest sentence end within ``snap`` tokens, if any."""
    for i in range(last - 1, max(first, last - snap) - 1, -1):
        if _ends_sentence(text, offsets, i):
            return i + 1
    return last


def _sentence_start(text: str, offsets: Sequence[tuple[int, int]], first: int, limit: int, snap: int) -> int:
    """``first`` moved forward to the nearest sentence start (before ``limit``, within ``snap``)."""
    for i in range(first, min(limit, first + snap)):
        if i > 0 and _ends_sentence(text, offsets, i - 1):
            return i
    return first


def split_texts(
    texts: Sequence[str],
    token_spans: TokenSpans,
    settings: PassageSettings,
    pages: Sequence[Sequence[int] | None] | None = None,
) -> tuple[list[list[Span]], list[int]]:
    """Passages of each text (``token_spans`` is the encoder's tokenizer), with their pages when
    ``pages`` gives each text's page start offsets. Returns the spans and the positions of the texts
    cut at ``max_passages``."""
    out, cut = [], []
    for position, (text, offsets) in enumerate(zip(texts, token_spans(list(texts)))):
        spans, was_cut = split_spans(text, offsets, settings)
        starts = pages[position] if pages is not None else None
        if starts:
            spans = [Span(s.start, s.end, bisect_right(starts, s.start) or 1) for s in spans]
        out.append(spans)
        if was_cut:
            cut.append(position)
    return out, cut
