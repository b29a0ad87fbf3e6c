"""Document files as plain text: .txt as it is, Markdown rendered (markdown-it-py), the main text of
HTML (selectolax), PDFs page by page (pypdf). The text keeps its paragraphs (blank-line separated)
so the passage splitter can end passages at sentence and paragraph ends; a PDF's page starts are kept
so a search hit can say which page it came from."""

from __future__ import annotations

import logging
import re
import unicodedata
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentsearch.errors import InvalidInputError

FORMATS = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
DOCUMENT_SUFFIXES = tuple(FORMATS)

# Elements whose content is not the page's text: code, styling, navigation and page furniture.
_HTML_DROP = (
    "script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "template",
    "iframe", "object", "canvas",
)  # fmt: skip
# Elements that start a paragraph of their own; inside a list or table, a line (items, rows).
_HTML_BLOCKS = {
    "address", "article", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "main", "ol", "p",
    "pre", "section", "summary", "table", "tr", "ul",
}  # fmt: skip
_HTML_GROUPS = {"ul", "ol", "dl", "table"}  # their items are lines, one after another
_LINE_BREAK = "\ue000"  # a <br> inside a paragraph, kept through whitespace collapsing (private use)
_CELL = "\ue001"  # between table cells
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_REASON_WIDTH = 120


class UnreadableDocument(InvalidInputError):
    """A document file that cannot be turned into text; ``reason`` says why in a few words."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class Document:
    """A document's plain text, its title if it has one, and (PDFs) the offset in ``text`` at which
    each page starts (the first 0; an empty page starts where the next text does)."""

    text: str
    title: str | None = None
    pages: list[int] | None = None
    format: str = "text"


def read_document(path: str | Path) -> Document:
    """Read a .txt, .md/.markdown, .html/.htm or .pdf file as plain text.

    Raises :class:`UnreadableDocument` (an :class:`~latentsearch.errors.InvalidInputError`) when the
    file cannot be read: not UTF-8, binary content, an encrypted or broken PDF, a PDF without a text
    layer, or no text at all.
    """
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UnreadableDocument(path, f"not a document file type ({path.suffix or 'no suffix'})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableDocument(path, exc.strerror or str(exc)) from None
    if kind == "pdf":
        document = _read_pdf(path, data)
    else:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # a UTF-16 byte-order mark
            raise UnreadableDocument(path, "not UTF-8 text (UTF-16: save it as UTF-8)")
        if b"\x00" in data:  # UTF-8 text never holds NUL bytes; binary files do
            raise UnreadableDocument(path, "binary content (NUL bytes)")
        if kind == "html":
            # selectolax decodes: a byte-order mark, else a <meta charset>, else UTF-8.
            text, title = html_text(data)
        else:
            try:
                source = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise UnreadableDocument(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            text, title = markdown_text(source) if kind == "markdown" else (tidy(source), None)
        document = Document(text, title, None, kind)
    if not document.text:
        raise UnreadableDocument(path, "empty")
    return document


def tidy(text: str) -> str:
    """``text`` with Unix line ends, no control characters but newlines and tabs, no lone surrogates,
    no trailing spaces, at most one blank line in a row, and no blank lines at either end."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    # Lone surrogates (a PDF's broken font maps) could not be stored; control characters are no text.
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs"))
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _join_blocks(blocks: list[tuple[str, int | None]]) -> str:
    """Blocks (text, group) as one text: the blocks of one group (a list's items, a table's rows) are
    lines one after another, any other two have a blank line between."""
    out: list[str] = []
    previous: int | None = None
    for text, group in blocks:
        text = text.strip("\n")
        if not text.strip():
            continue
        if out:
            out.append("\n" if group is not None and group == previous else "\n\n")
        out.append(text)
        previous = group
    return tidy("".join(out))


# Markdown


def markdown_text(source: str) -> tuple[str, str | None]:
    """Markdown rendered as plain text and its first heading: headings, paragraphs and code blocks are
    paragraphs, list items and table rows lines; emphasis, link targets and HTML tags go, images leave
    their alt text. A YAML front matter block is dropped (its ``title:`` is the title if there is one)."""
    from markdown_it import MarkdownIt

    title = None
    front = _FRONT_MATTER.match(source)
    if front:
        title = _front_matter_title(front.group(1))
        source = source[front.end() :]
    parser = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    blocks: list[tuple[str, int | None]] = []
    lists = 0  # depth of (nested) lists: their paragraphs are lines of the outermost one's group
    groups = 0
    row: list[str] | None = None
    heading = False
    for token in parser.parse(source):
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open", "table_open"):
            if lists == 0:
                groups += 1
            lists += 1
        elif kind in ("bullet_list_close", "ordered_list_close", "table_close"):
            lists -= 1
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close" and row is not None:
            blocks.append(("\t".join(row), groups))
            row = None
        elif kind == "heading_open":
            heading = True
        elif kind == "inline":
            text = _markdown_inline(token.children or [])
            if row is not None:
                row.append(text.replace("\n", " "))
            else:
                blocks.append((text, groups if lists else None))
                if heading and title is None and text.strip():
                    title = " ".join(text.split())
            heading = False
        elif kind in ("fence", "code_block"):
            blocks.append((token.content, groups if lists else None))
        elif kind == "html_block":
            blocks.append((html_text(token.content, fragment=True)[0], groups if lists else None))
    return _join_blocks(blocks), title


def _markdown_inline(children: list[Any]) -> str:
    parts = []
    for child in children:
        if child.type in ("text", "code_inline", "image"):  # an image's content is its alt text
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")  # a wrapped source line: the paragraph goes on
        elif child.type == "hardbreak":
            parts.append("\n")
    return "".join(parts)


def _front_matter_title(block: str) -> str | None:
    import yaml

    try:
        meta = yaml.safe_load(block)
    except yaml.YAMLError:
        return None
    title = meta.get("title") if isinstance(meta, dict) else None
    if not isinstance(title, str):
        return None
    return " ".join(title.split()) or None


# HTML


def html_text(html: str | bytes, *, fragment: bool = False) -> tuple[str, str | None]:
    """The main text of an HTML page and its title (``<title>``, else the first ``<h1>``).

    Scripts, styles, navigation, headers, footers, asides, forms and the like are dropped; block
    elements become paragraphs, list items and table rows lines; whitespace is collapsed except in
    ``<pre>``."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html, is_fragment=fragment, encoding=isinstance(html, bytes))
    title_node = None if fragment else tree.css_first("title")
    title = " ".join(title_node.text().split()) if title_node is not None else ""
    tree.strip_tags(list(_HTML_DROP))
    root = tree.root if fragment else tree.body
    if root is None:
        return "", title or None
    if not title:
        h1 = root.css_first("h1")
        title = " ".join(h1.text().split()) if h1 is not None else ""
    blocks: list[tuple[list[str], str, int | None]] = []  # (parts, tag of their block, its group)
    current = None
    for node in root.traverse(include_text=True):
        if node.is_text_node:
            block, group = _html_block_of(node, root)
            if current is None or block.mem_id != current:
                current = block.mem_id
                blocks.append(([], block.tag or "", group))
            # The markers stand for <br> and cells only: the same characters in the page are spaces.
            blocks[-1][0].append((node.text_content or "").replace(_LINE_BREAK, " ").replace(_CELL, " "))
        elif node.tag == "br" and blocks:
            blocks[-1][0].append(_LINE_BREAK)
        elif node.tag in ("td", "th") and blocks and blocks[-1][1] == "tr":
            blocks[-1][0].append(_CELL)
    rendered = []
    for parts, tag, group in blocks:
        text = "".join(parts)
        if tag != "pre":  # HTML whitespace is not the text's: runs of it are one space
            text = "\n".join(" ".join(line.split()) for line in text.split(_LINE_BREAK))
            text = "\t".join(cell.strip(" ") for cell in text.split(_CELL)).strip("\t")
        rendered.append((text.replace(_LINE_BREAK, "\n").replace(_CELL, "\t"), group))
    return _join_blocks(rendered), title or None


def _html_block_of(node: Any, root: Any) -> tuple[Any, int | None]:
    """The nearest block element holding ``node`` (else ``root``: a fragment's top-level text has no
    parent) and the id of the outermost list or table around it, if any."""
    block = node.parent
    while block is not None and block.tag not in _HTML_BLOCKS and block.mem_id != root.mem_id:
        block = block.parent
    block = block if block is not None else root
    group = None
    outer = block
    while outer is not None and outer.mem_id != root.mem_id:
        if outer.tag in _HTML_GROUPS:
            group = outer.mem_id
        outer = outer.parent
    return block, group


# PDF


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf logs and warns about every flaw it works around; a flaw that matters raises instead."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _read_pdf(path: Path, data: bytes) -> Document:
    import io

    from pypdf import PasswordType, PdfReader

    encrypted = False
    with _quiet_pypdf():
        # A parser of untrusted files fails in many ways (PdfReadError, but also KeyError, ValueError,
        # RecursionError on crafted ones): any failure means the file is unreadable, never a crash.
        try:
            reader = PdfReader(io.BytesIO(data))
            encrypted = reader.is_encrypted
            if encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise UnreadableDocument(path, "encrypted PDF (needs a password)")
            pages = [tidy(page.extract_text() or "") for page in reader.pages]
            title = _pdf_title(reader)
        except UnreadableDocument:
            raise
        except Exception as exc:
            raise UnreadableDocument(path, _pdf_failure(exc, encrypted)) from None
    if not any(page.strip() for page in pages):
        reason = "no pages" if not pages else "no extractable text (scanned images?)"
        raise UnreadableDocument(path, reason)
    text, starts = "", []
    empty = 0  # pages without text so far: they start where the next page's text does
    for page in pages:
        if not page.strip():
            empty += 1
            continue
        if text:
            text += "\n\n"
        starts.extend([len(text)] * (empty + 1))
        empty = 0
        text += page
    starts.extend([len(text)] * empty)
    starts[0] = 0
    return Document(text, title, starts, "pdf")


def _pdf_title(reader: Any) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata is not None else None
    except Exception:  # a damaged info dictionary costs the title, not the document
        return None
    if not isinstance(title, str):
        return None
    return " ".join(tidy(title).split()) or None


def _pdf_failure(exc: Exception, encrypted: bool) -> str:
    from pypdf.errors import DependencyError

    # DependencyError: AES needs the cryptography package; other encryption pypdf cannot undo raises too.
    kind = "encrypted PDF" if encrypted or isinstance(exc, DependencyError) else "broken PDF"
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return f"{kind} ({detail})"[:_REASON_WIDTH]
