"""The sweep report's HTML: the page (plotly.js inlined once, so it opens offline), its sections,
the sortable trial table and the audio players.

Nothing is fetched by the page: no script, style, font or image comes from elsewhere; audio is
embedded as data URIs. No figures are built here (report_figures.py).
"""

from __future__ import annotations

import base64
import math
from html import escape

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.offline

AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg"}

CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 1.5em;
       color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em;
       margin-top: 2em; }
nav a { margin-right: 1em; } .unavailable { color: #8a6d3b; background: #fcf8e3;
       padding: 0.5em 1em; border-left: 4px solid #f0ad4e; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.summary dt { font-weight: 600; } dl.summary dd { margin: 0; }
.table-wrap { overflow-x: auto; max-height: 32em; }
table.sortable { border-collapse: collapse; font-size: 0.85em; }
table.sortable th, table.sortable td { border: 1px solid #ddd; padding: 0.25em 0.5em;
       white-space: nowrap; }
table.sortable th { background: #f4f4f4; cursor: pointer; position: sticky; top: 0; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
table.sortable td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #e6f4ea; } tr.ablation td { background: #fdf1e6; }
.gallery { display: grid; grid-template-columns: 9em repeat(3, minmax(14em, 1fr)); gap: 0.5em;
       align-items: start; margin-bottom: 1.5em; }
.gallery .head { font-weight: 600; } .cell audio { width: 100%; }
.cell .cap { font-size: 0.8em; color: #555; }
"""

# Sorts a table.sortable by the clicked column (again: reversed); numbers by value, text after
# numbers, empty cells last either way. Cells carry their sort key in data-value.
SORT_SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-value");
    if (v === null) { v = cell.textContent; }
    if (v.trim() === "") { return null; }
    var n = Number(v);
    return isNaN(n) ? v : n;
  }
  function compare(x, y) {
    if (typeof x === "number" && typeof y === "number") { return x < y ? -1 : x > y ? 1 : 0; }
    if (typeof x === "number") { return -1; }
    if (typeof y === "number") { return 1; }
    return String(x).localeCompare(String(y));
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === null || y === null) { return (x === null) - (y === null); }
          return ascending ? compare(x, y) : compare(y, x);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""


class Figures:
    """Turns figures into <div>s, numbered in page order (plotly.js is in the page's head)."""

    def __init__(self):
        self.count = 0

    def __call__(self, fig: go.Figure, *, static: bool = False) -> str:
        self.count += 1
        return fig.to_html(full_html=False, include_plotlyjs=False,
                           div_id=f"plot-{self.count}", default_width="100%",
                           default_height=f"{fig.layout.height or 450}px",
                           config={"displaylogo": False, "responsive": True,
                                   "staticPlot": static})


def note(reason: str) -> str:
    return f'<p class="unavailable">Not available: {escape(reason)}</p>'


def page(title: str, summary: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: a summary, a table of contents, then (title, anchor, body) sections."""
    nav = " ".join(f'<a href="#{a}">{escape(t)}</a>' for t, a, _ in sections)
    body = "\n".join(f'<section id="{a}"><h2>{escape(t)}</h2>\n{b}\n</section>'
                     for t, a, b in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>{CSS}</style>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>
</head>
<body>
<h1>{escape(title)}</h1>
{summary}
<nav>{nav}</nav>
{body}
<script>{SORT_SCRIPT}</script>
</body>
</html>
"""


def summary_list(items: list[tuple[str, str]]) -> str:
    return ('<dl class="summary">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>"
                                              for k, v in items) + "</dl>")


def sortable_table(table: pd.DataFrame, row_classes: dict[int, str]) -> str:
    """A plain HTML table that sorts on a header click (SORT_SCRIPT)."""
    head = "".join(f'<th title="click to sort">{escape(str(c))}</th>' for c in table.columns)
    rows = []
    for i, row in table.iterrows():
        cls = f' class="{row_classes[i]}"' if i in row_classes else ""
        rows.append(f"<tr{cls}>" + "".join(_cell(v) for v in row) + "</tr>")
    return (f'<div class="table-wrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td data-value=""></td>'
    if isinstance(value, (bool, np.bool_)):
        return f'<td data-value="{int(value)}">{"yes" if value else "no"}</td>'
    if isinstance(value, (int, np.integer)):
        return f'<td class="num" data-value="{int(value)}">{int(value)}</td>'
    if isinstance(value, (float, np.floating)):
        v = float(value)
        key = "Infinity" if v == math.inf else "-Infinity" if v == -math.inf else repr(v)
        return f'<td class="num" data-value="{key}">{v:.4g}</td>'
    return f"<td>{escape(str(value))}</td>"


def audio_player(caption: str, audio: bytes, suffix: str, spectrogram: str) -> str:
    """A playable clip (embedded as a data URI) with its caption and spectrogram."""
    kind = AUDIO_TYPES.get(suffix.lower(), "audio/wav")
    uri = f"data:{kind};base64,{base64.b64encode(audio).decode()}"
    return (f'<div class="cell"><div class="cap">{escape(caption)}</div>'
            f'<audio controls preload="metadata" src="{uri}"></audio>{spectrogram}</div>')


def cell(text: str, head: bool = False) -> str:
    return f'<div class="{"head" if head else "cell"}">{escape(text)}</div>'
