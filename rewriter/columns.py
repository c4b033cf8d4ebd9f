"""Plain-text columns for the terminal: the report table and the ``-v`` validation rows."""

from __future__ import annotations

import textwrap
from typing import Sequence

NOTE_WIDTH = 100  # numbered notes wrap here: reads in a 100-column terminal


def format_columns(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = (), indent: str = "") -> list[str]:
    """A header line, a dashed rule and one line per row, every column as wide as its
    widest cell; columns whose index is in ``right`` are right-aligned (numbers)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return indent + "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def numbered_note(number: int, text: str) -> str:
    """``[N] text``, wrapped at word boundaries with the continuation indented under the text."""
    lead = f"[{number}] "
    return textwrap.fill(text, NOTE_WIDTH, initial_indent=lead, subsequent_indent=" " * len(lead), break_long_words=False, break_on_hyphens=False)
