"""The results as reStructuredText for the Snakemake report's landing page (`table.rst` beside table.md).

Snakemake renders the workflow's description (`workflow/report/workflow.rst`) through docutils onto the page a
report opens on; that description includes this file, so the table, its footnotes, the paired differences and
every seed's result are on the first page, not behind a download link. A marker comment splits it in two, so
the description can put the figures between the headline table and the details:

    .. include:: results/<run>/tables/table.rst
       :end-before: .. details

Cells are plain text (escaped here); tables are docutils `list-table`s, which need no column widths.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from pathlib import Path
from typing import Sequence

DETAILS = ".. details"
_SPECIAL = ("\\", "*", "`", "|", "_")


def escape(text: str) -> str:
    """Plain text that docutils shows as written (no emphasis, references or substitutions)."""
    out = str(text)
    for ch in _SPECIAL:
        out = out.replace(ch, "\\" + ch)
    return out


def list_table(title: str, header: Sequence[str], body: Sequence[Sequence[str]], *, css: str) -> str:
    lines = [f".. list-table:: {escape(title)}", "   :header-rows: 1", f"   :class: {css}", ""]
    for row in [header, *body]:
        cells = [escape(c) or "\\ " for c in row]  # an empty cell still needs content
        lines.append(f"   * - {cells[0]}")
        lines += [f"     - {c}" for c in cells[1:]]
    return "\n".join(lines)


def bullets(items: Sequence[str]) -> str:
    return "\n".join(f"- {escape(item)}" for item in items)


def from_markdown(text: str) -> str:
    """The tables' notes (Markdown: `code`, *emphasis*) as reStructuredText: code becomes ``code``, the rest is
    escaped."""
    parts = re.split(r"`([^`]+)`", text)
    out = [f"``{p}``" if i % 2 else re.sub(r"\\\*(.+?)\\\*", r"*\1*", escape(p)) for i, p in enumerate(parts)]
    return "".join(out)


def section(title: str) -> str:
    return f"{escape(title)}\n{'-' * max(len(title), 4)}"


def landing_rst(*, headline: tuple[list[str], list[list[str]]], quality: Sequence[tuple[str, str]],
                notes: Sequence[str], paired: tuple[list[str], list[list[str]]] | None,
                seeds: tuple[list[str], list[list[str]]], provenance: str) -> str:
    """The two parts: the headline table with its data-quality and reading footnotes; then paired differences,
    every seed's test metrics and where the numbers came from (`provenance`: reStructuredText already)."""
    head = [list_table("Downstream results: test split, mean ± std over seeds", *headline, css="results-table"), ""]
    if quality:
        head += ["**Data quality** (from the quality sections of each dataset's stage summaries):", "",
                 bullets([f"{name}: {note}" for name, note in quality]), ""]
    head += ["**Reading the table:**", "", "\n".join(f"- {from_markdown(n)}" for n in notes), ""]
    details = [DETAILS, ""]
    if paired is not None:
        details += [section("Paired differences"), "", list_table("Pretrained minus the others, paired by seed",
                                                                  *paired, css="paired-table"), ""]
    details += [section("Every seed"), "", list_table("Each run's test metrics at the epoch chosen on validation",
                                                      *seeds, css="seeds-table"), "", provenance, ""]
    return "\n".join(head + details)


def register_directives() -> None:
    """Make `.. data-image:: <path>` known to docutils (process-wide; the Snakefile calls this): the image
    directive with the file inlined as a data URI, so a figure on the description shows wherever the report file is
    opened (a path would resolve against the report's own folder; Snakemake 9's `embeddedimage` directive means to
    do this, but its `run` is the plain image's, which keeps the path)."""
    from docutils.parsers.rst import directives
    from docutils.parsers.rst.directives.images import Image

    class DataImage(Image):
        def run(self):
            path = Path(directives.path(self.arguments[0]))  # a path: its spaces are kept
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise self.error(f"data-image: cannot read {path} ({exc})") from None
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            self.arguments[0] = f"data:{mime};base64,{base64.b64encode(data).decode()}"
            self.options.setdefault("alt", path.name)
            return super().run()

    directives.register_directive("data-image", DataImage)
