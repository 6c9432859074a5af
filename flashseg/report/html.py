"""``index.html``: one self-contained page that shows the whole report.

Plain HTML and CSS, no script and nothing fetched from the network: every
figure is an ``<img>`` of the PNG beside the page (linking to its SVG), so
the directory opens offline in any browser, and the page can be mailed
together with its directory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }
th { background: #f4f4f4; } td.name { text-align: left; white-space: nowrap; }
.swatch { display: inline-block; width: 1em; height: 1em; margin-right: 0.4em; vertical-align: middle;
          border: 1px solid #888; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { font-size: 0.85em; color: #555; }
"""


@dataclass
class Figure:
    stem: str                 # files stem.png and stem.svg beside the page
    caption: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]     # first cell: the label name (drawn with its colour)
    tsv: str | None = None    # the file holding the numbers


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def swatch(color: str) -> str:
    return f'<span class="swatch" style="background: rgb({escape(color)})"></span>'


def _table(table: Table, colors: dict[str, str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        name, rest = row[0], row[1:]
        mark = swatch(colors[name]) if name in colors else ""
        cells = "".join(f"<td>{escape(v)}</td>" for v in rest)
        body.append(f'<tr><td class="name">{mark}{escape(name)}</td>{cells}</tr>')
    link = f'<p class="note">The numbers: <a href="{escape(table.tsv)}">{escape(table.tsv)}</a></p>' \
        if table.tsv else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{link}"


def page(title: str, intro: str, sections: list[Section], colors: dict[str, str]) -> str:
    """The whole page; ``intro`` and section texts are plain text (escaped here)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(title)}</h1>", f"<p>{escape(intro)}</p>"]
    for section in sections:
        parts.append(f"<h2>{escape(section.title)}</h2>")
        if section.text:
            parts.append(f'<p class="note">{escape(section.text)}</p>')
        for table in section.tables:
            parts.append(_table(table, colors))
        for figure in section.figures:
            stem = escape(figure.stem)
            parts.append(f'<figure><a href="{stem}.svg"><img src="{stem}.png" alt="{escape(figure.caption)}">'
                         f"</a><figcaption>{escape(figure.caption)} (<a href=\"{stem}.svg\">SVG</a>)"
                         "</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
