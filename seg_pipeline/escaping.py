"""Text from a source file is data in every output: it never becomes Markdown or HTML markup, a spreadsheet
formula, terminal markup or mathtext. One function per kind of output; every writer of that output uses it.

- `markdown(value)`: for report.md (every `{{ value }}` of its template, insights/report.py) and the
  Markdown shown in Dagster's UI (assets/common.md_table, findings, contract results).
  Markdown punctuation is backslash-escaped, `<>&"'` become HTML entities (a CommonMark viewer renders raw
  HTML), line breaks and control characters become spaces (a table row stays one row).
- `csv_cell(value)` / `csv_frame(df)`: for every CSV file the pipeline writes (storage.atomic_write_csv).
  A text cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'` (OWASP's
  advice on CSV injection): a spreadsheet shows it as text instead of running it. Numeric columns are left
  alone (a negative number stays a number).
- `terminal(value)`: for what the CLI prints through rich. Control characters (ESC sequences, carriage
  returns, line breaks) are shown as `\\xNN` instead of acting on the terminal; `[` is escaped so rich never
  reads the value as markup (`[link=...]`, `[/]`).
- `plot_label(value)`: for text drawn in a plot (segment, store and country names). Shortened to
  PLOT_LABEL_CHARS with an ellipsis, line breaks and control characters become spaces and `$` is escaped, so
  matplotlib never reads it as mathtext. Every plot of insights/plots.py draws data through it.
"""

from __future__ import annotations

import html
import re
import textwrap

import pandas as pd

# C0 and C1 control characters (tab, line feed and carriage return included), DEL, and the Unicode line and
# paragraph separators: none of them may reach an output as a control
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# Markdown punctuation that starts emphasis, code, links and images, headings, tables, strikethrough and
# math in common viewers; the backslash first so an escape in the value cannot cancel ours
_MARKDOWN_PUNCTUATION = re.compile(r"[\\`*_\[\]()#!|~$]")


def markdown(value) -> str:
    """`value` as literal text inside a Markdown document (a paragraph or a table cell)."""
    text = _CONTROL.sub(" ", str(value))
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\g<0>", text)
    return html.escape(text, quote=True)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text value as a spreadsheet will take it as text: `'` before a leading = + - @ tab or CR."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def is_text(series: pd.Series) -> bool:
    return (
        pd.api.types.is_object_dtype(series.dtype)
        or pd.api.types.is_string_dtype(series.dtype)
        or isinstance(series.dtype, pd.CategoricalDtype)
    )


def csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every text cell (object, string or category columns, whatever their names) passed through
    csv_cell; numeric, boolean and date columns unchanged. Returns a new frame only when something changed."""
    out = df
    for col in df.columns:
        s = df[col]
        if not is_text(s):
            continue
        text = s.astype("string")
        risky = text.str.startswith(FORMULA_START).fillna(False).to_numpy(dtype=bool)
        if risky.any():
            if out is df:
                out = df.copy()
            fixed = s.astype(object).copy()
            fixed[risky] = [csv_cell(str(v)) for v in s[risky]]
            out[col] = fixed.astype(s.dtype) if not isinstance(s.dtype, pd.CategoricalDtype) else fixed
    return out


def _visible(match: re.Match) -> str:
    return f"\\x{ord(match.group()):02x}"


# the same without line feed and tab: a message of our own may span lines
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def terminal_plain(value, keep_newlines: bool = False) -> str:
    """`value` with control characters shown as `\\xNN` (ESC, carriage return, ...), for text that is not
    parsed as markup (a rich Text, a click message). `keep_newlines`: line feeds and tabs stay (a whole
    message of ours that spans lines)."""
    return (_CONTROL_BUT_LINES if keep_newlines else _CONTROL).sub(_visible, str(value))


def terminal(value) -> str:
    """`value` inside a rich markup string: control characters made visible, rich markup escaped."""
    from rich.markup import escape

    return escape(terminal_plain(value))


PLOT_LABEL_CHARS = 40


def plot_label(value, max_chars: int | None = PLOT_LABEL_CHARS, wrap: int | None = None) -> str:
    """`value` as a label in a plot: one line, at most `max_chars` characters (an ellipsis marks a cut;
    None: not shortened), wrapped at `wrap` characters if given, then `$` escaped (never mathtext; escaped
    last, so a line break cannot separate a `$` from its backslash)."""
    text = " ".join(_CONTROL.sub(" ", str(value)).split())
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "\u2026"
    if wrap is not None:
        text = textwrap.fill(text, wrap)
    return text.replace("$", r"\$")
