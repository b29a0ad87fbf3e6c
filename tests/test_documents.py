"""Document files (.txt, .md, .html, .pdf) read as plain text, with titles and PDF page starts; files
that cannot be read skipped with the reason (a folder) or refused in one line (a single file)."""

from __future__ import annotations

import io
import json

import pytest
from typer.testing import CliRunner

import latentsearch as ls
from latentsearch.cli import app
from latentsearch.io.documents import UnreadableDocument, read_document
from latentsearch.io.ingest import read_input

MARKDOWN = """# Baking *bread* at home

Knead the dough for **ten minutes**, then read [the guide](https://example.com/guide).
Let it rise overnight.

![a round loaf](loaf.png)

## Ingredients

- flour
- water and `salt`

```python
bake(minutes=40)
```
"""

HTML = """<!doctype html>
<html><head><title>Telescope  notes</title><style>body { color: red }</style>
<script>var tracking = "script text";</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">Navigation link</a></nav>
<header>Site banner</header>
<main>
  <h1>Looking at Jupiter</h1>
  <p>The moons   orbit the <b>giant</b> planet
     in a few days.</p>
  <div>Saturn's rings<p>are made of ice.</p></div>
  <ul><li>Io</li><li>Europa</li></ul>
</main>
<aside>Buy a telescope</aside>
<footer>Copyright footer</footer>
<noscript>Enable scripts</noscript>
</body></html>
"""

PAGES = [
    "Chapter one is about the central bank and interest rates.",
    "Chapter two explains how bond prices fall when rates rise.",
    "Chapter three covers diversifying a portfolio.",
]


def write_pdf(path, pages=PAGES, title="Money Matters"):
    """A real PDF with one page per text (fpdf2), titled in its metadata."""
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 10, text)
    path.write_bytes(bytes(pdf.output()))
    return path


def write_encrypted_pdf(path, source, user_password="secret"):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    path.write_bytes(buffer.getvalue())
    return path


def test_markdown_becomes_plain_text_with_its_first_heading_as_title(tmp_path):
    path = tmp_path / "bread.md"
    path.write_text(MARKDOWN)
    doc = read_document(path)
    assert doc.format == "markdown" and doc.pages is None
    assert doc.title == "Baking bread at home"
    assert doc.text == (
        "Baking bread at home\n\n"
        "Knead the dough for ten minutes, then read the guide. Let it rise overnight.\n\n"
        "a round loaf\n\n"
        "Ingredients\n\n"
        "flour\nwater and salt\n\n"
        "bake(minutes=40)"
    )
    for markup in ("#", "*", "[", "](", "https://", "`", "!", "loaf.png"):
        assert markup not in doc.text


def test_markdown_front_matter_is_dropped_and_gives_the_title(tmp_path):
    path = tmp_path / "post.markdown"
    path.write_text("---\ntitle: A post\ndate: 2024-01-01\n---\nSome text.\n\n# Heading\n")
    doc = read_document(path)
    assert doc.title == "A post" and doc.text == "Some text.\n\nHeading"


def test_html_keeps_the_main_text_and_drops_scripts_navigation_and_footers(tmp_path):
    path = tmp_path / "jupiter.html"
    path.write_text(HTML)
    doc = read_document(path)
    assert doc.format == "html" and doc.title == "Telescope notes"
    assert doc.text == (
        "Looking at Jupiter\n\n"
        "The moons orbit the giant planet in a few days.\n\n"
        "Saturn's rings\n\n"
        "are made of ice.\n\n"
        "Io\nEuropa"
    )
    for dropped in ("script text", "color", "Navigation", "banner", "Buy a telescope", "footer", "Enable scripts"):
        assert dropped not in doc.text


def test_html_title_falls_back_to_the_first_h1_and_its_declared_encoding_is_used(tmp_path):
    path = tmp_path / "cafe.htm"
    path.write_bytes('<meta charset="windows-1252"><h1>Café</h1><p>Crème brûlée</p>'.encode("windows-1252"))
    doc = read_document(path)
    assert doc.title == "Café" and doc.text == "Café\n\nCrème brûlée"


def test_pdf_pages_start_where_their_text_does(tmp_path):
    doc = read_document(write_pdf(tmp_path / "money.pdf"))
    assert doc.format == "pdf" and doc.title == "Money Matters"
    assert len(doc.pages) == 3 and doc.pages[0] == 0
    for start, text in zip(doc.pages, PAGES):
        assert doc.text[start:].startswith(text)
    assert doc.text[doc.pages[1] :].startswith("Chapter two")
    assert doc.text[: doc.pages[1]].rstrip().endswith("rates.")  # page 1 ends before page 2 starts


def test_pdf_page_without_text_starts_where_the_next_text_does(tmp_path):
    doc = read_document(write_pdf(tmp_path / "gap.pdf", [PAGES[0], "", PAGES[2]], title=None))
    assert doc.title is None
    assert doc.pages[1] == doc.pages[2] and doc.text[doc.pages[2] :] == PAGES[2]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content (NUL bytes)"),
        ("latin1.txt", "café".encode("latin-1"), "not UTF-8 text"),
        ("windows.txt", "notes".encode("utf-16"), "not UTF-8 text (UTF-16"),
        ("empty.md", b"  \n\n\t\n", "empty"),
        ("markup-only.md", b"![](image.png)\n\n---\n", "empty"),
        ("blank.html", b"<html><body><script>x()</script></body></html>", "empty"),
        ("garbage.pdf", b"this is not a PDF at all", "broken PDF"),
    ],
)
def test_unreadable_files_say_why(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableDocument) as caught:
        read_document(path)
    assert caught.value.reason.startswith(reason)
    assert isinstance(caught.value, ls.InvalidInputError) and "\n" not in str(caught.value)


def test_truncated_encrypted_and_scanned_pdfs_are_unreadable(tmp_path):
    good = write_pdf(tmp_path / "good.pdf")
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(good.read_bytes()[:300])
    locked = write_encrypted_pdf(tmp_path / "locked.pdf", good)
    scanned = write_pdf(tmp_path / "scanned.pdf", ["", ""])
    reasons = {}
    for path in (truncated, locked, scanned):
        with pytest.raises(UnreadableDocument) as caught:
            read_document(path)
        reasons[path.name] = caught.value.reason
    assert reasons["truncated.pdf"].startswith("broken PDF")
    assert reasons["locked.pdf"] == "encrypted PDF (needs a password)"
    assert reasons["scanned.pdf"] == "no extractable text (scanned images?)"


def test_pdf_with_only_an_owner_password_is_read(tmp_path):
    doc = read_document(write_encrypted_pdf(tmp_path / "owner.pdf", write_pdf(tmp_path / "p.pdf"), user_password=""))
    assert doc.text.startswith(PAGES[0]) and len(doc.pages) == 3


def test_pdf_warnings_stay_quiet(tmp_path, capfd, caplog):
    truncated = tmp_path / "t.pdf"
    truncated.write_bytes(write_pdf(tmp_path / "p.pdf").read_bytes()[:-30])  # no %%EOF: pypdf would log
    with pytest.raises(UnreadableDocument, match="broken PDF"):
        read_document(truncated)
    assert capfd.readouterr().err == "" and not caplog.records


def test_text_is_tidied(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"\xef\xbb\xbfFirst line   \r\n\r\n\r\n\r\nSecond\x07 line\t \n\n")
    doc = read_document(path)
    assert doc.text == "First line\n\nSecond line" and doc.title is None and doc.format == "text"


def make_folder(tmp_path):
    """A folder of good documents, bad ones, and files that are no documents or hidden."""
    folder = tmp_path / "library"
    (folder / "web").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / "bread.md").write_text(MARKDOWN)
    (folder / "web" / "jupiter.html").write_text(HTML)
    (folder / "notes.txt").write_text("Plain notes about the comet's tail.")
    write_pdf(folder / "money.pdf")
    write_encrypted_pdf(folder / "locked.pdf", folder / "money.pdf")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(1, 200)))
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02\x03")
    (folder / "empty.md").write_text("\n")
    (folder / "picture.png").write_bytes(b"\x89PNG")  # not a document type: not read, not reported
    (folder / ".hidden.md").write_text("# hidden")
    (folder / ".git" / "notes.md").write_text("# in .git")
    return folder


def test_folder_reads_the_good_documents_and_lists_the_bad_with_reasons(tmp_path):
    folder = make_folder(tmp_path)
    records = read_input(folder)
    assert records.ids == ["bread.md", "money.pdf", "notes.txt", "web/jupiter.html"]
    skipped = {p.rsplit("/", 1)[-1]: why for p, why in records.skipped}
    assert set(skipped) == {"binary.txt", "broken.pdf", "empty.md", "locked.pdf"}
    assert skipped["locked.pdf"].startswith("encrypted") and skipped["broken.pdf"].startswith("broken PDF")
    assert skipped["binary.txt"].startswith("binary content") and skipped["empty.md"] == "empty"
    by_id = dict(zip(records.ids, records.metadata))
    assert by_id["money.pdf"] == {
        "path": "money.pdf",
        "suffix": ".pdf",
        "source": str((folder / "money.pdf").resolve()),
        "title": "Money Matters",
        "pages": 3,
    }
    assert by_id["web/jupiter.html"]["title"] == "Telescope notes" and "title" not in by_id["notes.txt"]
    assert records.pages[0] is None and records.pages[2] is None and records.pages[3] is None
    pdf_text, pdf_pages = records.texts[1], records.pages[1]
    assert pdf_text[pdf_pages[1] :].startswith(PAGES[1])
    assert "ten minutes" in records.texts[0] and "**" not in records.texts[0]


def test_folder_of_only_unreadable_files_is_one_line_error(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"\x00\x00")
    (folder / "b.pdf").write_bytes(b"junk")
    with pytest.raises(ls.InvalidInputError) as caught:
        read_input(folder)
    message = str(caught.value)
    assert "none of its 2 document files could be read" in message and "binary content" in message
    assert "\n" not in message


def test_folder_without_documents_names_the_types(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"\x00")
    with pytest.raises(ls.InvalidInputError, match=r"no document files found \(.txt, .md, .markdown, .html"):
        read_input(tmp_path)


@pytest.mark.parametrize("kind", ["pdf", "html", "md"])
def test_a_single_document_file_is_one_item_named_by_its_file(tmp_path, kind):
    path = tmp_path / f"doc.{kind}"
    if kind == "pdf":
        write_pdf(path)
    else:
        path.write_text(HTML if kind == "html" else MARKDOWN)
    records = read_input(path)
    assert records.ids == [f"doc.{kind}"] and len(records.texts) == 1 and records.skipped == []
    meta = records.metadata[0]
    assert meta["path"] == f"doc.{kind}" and meta["source"] == str(path.resolve())
    assert meta["title"] == {"pdf": "Money Matters", "html": "Telescope notes", "md": "Baking bread at home"}[kind]
    if kind == "pdf":
        assert meta["pages"] == 3 and records.pages[0][0] == 0 and len(records.pages[0]) == 3
    else:
        assert records.pages is None and "pages" not in meta


def test_a_single_unreadable_file_is_one_line_error(tmp_path):
    path = write_encrypted_pdf(tmp_path / "locked.pdf", write_pdf(tmp_path / "p.pdf"))
    with pytest.raises(ls.InvalidInputError, match=r"^cannot read .*locked\.pdf: encrypted PDF \(needs a password\)$"):
        read_input(path)


runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + result.stderr
    return result


def test_cli_add_folder_reports_skipped_files_and_adds_the_rest(home, tmp_path):
    folder = make_folder(tmp_path)
    run("create", "library", "--encoder", "minilm", "--index", "flat")
    result = runner.invoke(app, ["add", "library", str(folder)])
    assert result.exit_code == 0, result.output + result.stderr
    stderr = " ".join(result.stderr.split())  # rich wraps long lines
    assert "skipped 4 files that are not readable documents:" in stderr
    assert "binary.txt (binary content (NUL bytes))" in stderr and "empty.md (empty)" in stderr
    assert "locked.pdf (encrypted PDF (needs a password))" in stderr and "broken.pdf (broken PDF (" in stderr
    assert "added 4 items" in result.stdout
    got = json.loads(run("get", "library", "money.pdf", "web/jupiter.html", "--json").stdout)
    assert got[0]["metadata"]["pages"] == 3 and got[0]["metadata"]["title"] == "Money Matters"
    assert got[1]["text"].startswith("Looking at Jupiter") and "Navigation" not in got[1]["text"]
    hits = json.loads(run("search", "library", "bond prices and interest rates", "-k", "1", "--json").stdout)
    assert hits[0]["id"] == "money.pdf"


def test_cli_add_help_names_the_document_formats():
    result = run("add", "--help")
    assert ".pdf" in result.stdout and ".html" in result.stdout and ".md" in result.stdout


def test_a_long_pdf_is_searched_by_passage_and_says_its_page(home, tmp_path):
    """Pages travel from the PDF through ingest to each passage: a hit says on which page it matched."""
    from latentsearch.io.ingest import ingest

    filler = " ".join(f"Clause {i} of the contract sets the payment terms for the supplier." for i in range(16))
    pages = [filler, filler.replace("payment", "delivery"), filler + " The volcano erupted and lava covered the town."]
    records = read_input(write_pdf(tmp_path / "contract.pdf", pages=pages))
    col = ls.create("pdfs", home=home)
    ingest(col, records)
    passages = col.passages("contract.pdf")
    assert [p.page for p in passages] == sorted(p.page for p in passages)
    assert len(passages) >= 3 and {p.page for p in passages} == {1, 2, 3}
    hit = col.search("volcanic eruption with lava", k=1)[0]
    assert hit.passage.page == 3 and "volcano" in hit.passage.text
    assert hit.metadata["pages"] == 3 and hit.metadata["title"] == "Money Matters"
    col.close()
