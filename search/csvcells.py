"""Every CSV file imgidx writes goes through here, so a spreadsheet that opens it runs no formula.

Titles, owner names and file names come from Flickr, URL lists and folders other people made. A cell that starts
with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel, LibreOffice and Google Sheets
(`=HYPERLINK(...)`, `+cmd|' /C calc'!A0`, `@SUM(1)`); the OWASP advice (CSV injection) is to put a `'` in front,
which spreadsheets show as text. Every cell is quoted; a spreadsheet set to split on `;` or tabs (some locales
are) can still cut a cell there or at a line break, so a formula character after one of those gets a `'` too.
Links are kept only when they are http(s): a `javascript:` or `file:` page URL would become a live link in a
spreadsheet. Only the CSV is changed this way; the manifest, parquet and webdataset metadata keep the raw text
for programs.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

# the ASCII characters OWASP lists, and their full-width forms, which some spreadsheets also read as formulas
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
# where a spreadsheet that splits on something other than our quoted commas may start a new cell (or row)
SEPARATORS = ";\t\r\n"
# a formula character, after quotes a spreadsheet may take for the quoting of a cell
_FORMULA = f'"*[{re.escape("".join(FORMULA_START))}]'
_START = re.compile(_FORMULA)
_INNER = re.compile(f"(?<=[{SEPARATORS}])(?={_FORMULA})")
_SUSPECT = re.compile(f"^{_FORMULA}|[{SEPARATORS}]")  # one C-speed look per cell; most cells have neither
_WEB = re.compile(r"(?i:https?)://[^/?#\s]")  # http(s) with a host (what urlsplit calls the netloc) at the start


def cell(value: object) -> str:
    """One value as a CSV cell a spreadsheet shows as text (None is empty): a `'` before a formula character at
    the start, and after a `;`, tab or line break inside it (quotes before the character count as nothing)."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    if not _SUSPECT.search(text):
        return text
    if any(sep in text for sep in SEPARATORS):
        text = _INNER.sub("'", text)
    return "'" + text if _START.match(text) else text


def web_link(url: str) -> str:
    """`url` if it is an http(s) address with a host, else "" (no javascript:, file:, data: links in a sheet)."""
    return url if _WEB.match(url) else ""


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """A whole CSV file (UTF-8, `\\n` line ends, every cell quoted and neutralised by cell())."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    out.writerow([cell(h) for h in header])
    out.writerows([cell(v) for v in row] for row in rows)
    return buf.getvalue().encode()
