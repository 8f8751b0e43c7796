"""The workbook's HTML report: the executed notebooks as one page for readers.

The report is read, not run: it keeps the prose, the code and its results, and leaves out what only
the machinery needs. Cells tagged `parameters`, `injected-parameters` or `scaffolding` (metrics
writing, widget driving) are dropped; cells tagged `solution` keep their code and output, folded
away. It loads nothing from the network: equations become MathML, widgets a static picture of their
final state, and local images referenced from markdown are embedded.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
import re
from pathlib import Path
from xml.etree import ElementTree

from jinja2 import DictLoader
from latex2mathml.converter import convert

HIDDEN_TAGS = frozenset({"parameters", "injected-parameters", "scaffolding"})
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_REPORT_TAG = "report-html"  # the report's own cells (title, contents, section headings), passed through as HTML
_TITLE = re.compile(r"^#\s+(?:A?\d+(?:\s*[·.:)–-]\s*|\s+))?(?P<title>.+?)\s*$")  # "01 ·", "4.", "A1 ·"
_NUMBERED_HEADING = re.compile(r"^(?P<hashes>#{2,6})\s+(?P<number>\d+(?:\.\d+)*)\.?\s+(?P<text>.*)$")
_LOCAL_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<path>(?![a-z]+:)[^)\s]+)\)")
# Code spans are matched first so that a $ inside them is left alone; \$ is a literal dollar. Inline
# math may wrap onto the next line, but not across a blank line (a new paragraph).
_MATH = re.compile(r"(?P<code>```.*?```|`[^`\n]*`)|\$\$(?P<display>.+?)\$\$"
                   r"|(?<![\\$])\$(?P<inline>(?:[^$\n]|\n(?![ \t]*\n))+?)(?<!\\)\$", re.S)

REPORT_TEMPLATE = """{%- extends 'index.html.j2' -%}
{#- Offline: no script from a CDN (require.js, MathJax, Mermaid, the widget manager). -#}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{% block extra_css %}
<style type="text/css">
body { max-width: 1100px; margin: 0 auto; }
nav.contents ol { list-style: none; padding-left: 0; font-size: 1.1em; line-height: 1.7; }
h1.section { border-top: 1px solid #ccc; padding-top: 1.2em; margin-top: 2em; }
details.solution > summary { cursor: pointer; color: #2b6cb0; padding: 4px 0; font-family: var(--jp-ui-font-family); }
.widget-static { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.widget-static.column { flex-direction: column; align-items: flex-start; }
math[display="block"] { margin: 0.6em 0; }
</style>
{% endblock extra_css %}
{% block rawcell scoped -%}
{%- if '""" + _REPORT_TAG + """' in cell.metadata.get('tags', []) -%}{{ cell.source }}
{%- else -%}{{ super() }}{%- endif -%}
{%- endblock rawcell %}
{#- Figures carry their caption as alt text (_describe_figures puts it in the output's metadata). -#}
{% block data_png scoped -%}
{{ super() | replace('<img ', '<img alt="' ~ (output | get_metadata('alt', 'image/png') or '') | escape_html ~ '" ', 1) }}
{%- endblock data_png %}
{% block data_jpg scoped -%}
{{ super() | replace('<img ', '<img alt="' ~ (output | get_metadata('alt', 'image/jpeg') or '') | escape_html ~ '" ', 1) }}
{%- endblock data_jpg %}
{% block codecell scoped -%}
{%- if 'solution' in cell.metadata.get('tags', []) -%}
<details class="solution"><summary>Solution (click to show it)</summary>{{ super() }}</details>
{%- else -%}{{ super() }}{%- endif -%}
{%- endblock codecell %}
"""


def notebook_title(path: str | Path) -> str:
    """The title of a notebook: its first level-1 heading, without a leading number ("01 ·", "4.")."""
    # Plain JSON: nbformat.read would validate the whole notebook, a second per call, for one line.
    return _title_of(json.loads(Path(path).read_text())["cells"], Path(path).stem)


def _title_of(cells: list, stem: str) -> str:
    for cell in cells:
        if cell["cell_type"] == "markdown":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            for line in source.splitlines():
                match = _TITLE.match(line)
                if match:
                    return match["title"]
    return stem.partition("_")[2].replace("_", " ") or stem


def write_report(executed: list[Path], target: Path, title: str = "AMDIM workbook") -> Path:
    """One self-contained HTML page of the executed notebooks in order: a title, a list of contents,
    then one numbered section per notebook (its number is the notebook's NN)."""
    if not executed:
        raise ValueError("write_report needs at least one executed notebook; got an empty list")
    math = _MathML()
    sections = [_Section.read(Path(path), math) for path in executed]
    import nbformat  # lazy: slow to import (it loads jsonschema); only writing a report needs it

    combined = nbformat.v4.new_notebook()
    combined.metadata = {key: value for key, value in sections[0].metadata.items()
                         if key in ("kernelspec", "language_info")}
    combined.metadata["title"] = title
    combined.cells = [_html_cell(_contents_html(title, sections, math))]
    for section in sections:
        combined.cells += [_html_cell(section.heading_html(math))] + section.cells
    target = Path(target)
    target.write_text(_without_machine_paths(math.restore(_export_html(combined)), target))
    return target


def _without_machine_paths(page: str, target: Path) -> str:
    """Printed paths as a reader can use them: relative to the working folder (the repository, under
    make demo) when the report lies in it, else to the report's folder; the home folder as ~."""
    folder, cwd = target.resolve().parent, Path.cwd().resolve()
    root = cwd if folder.is_relative_to(cwd) else folder
    page = page.replace(f"{root}/", "")
    home = str(Path.home())
    return page.replace(f"{home}/", "~/") if home != "/" else page


def _html_cell(source: str):
    import nbformat  # lazy: as in write_report
    return nbformat.v4.new_raw_cell(source, metadata={"tags": [_REPORT_TAG], "raw_mimetype": "text/html"})


def _contents_html(title: str, sections: list["_Section"], math: "_MathML") -> str:
    entries = "".join(f'<li><a href="#{s.anchor}">{s.number} &middot; {math.protect_text(s.title)}</a></li>'
                      for s in sections)
    return (f'<div class="jp-RenderedHTMLCommon"><h1 class="report-title">{html.escape(title)}</h1>'
            f'<nav class="contents" id="contents"><h2>Contents</h2><ol>{entries}</ol></nav></div>')


def _export_html(notebook) -> str:
    from nbconvert import HTMLExporter  # lazy: slow to import, and only exporting needs it

    exporter = HTMLExporter(extra_loaders=[DictLoader({"amdim_report.html.j2": REPORT_TEMPLATE})],
                            template_file="amdim_report.html.j2",
                            exclude_input_prompt=True, exclude_output_prompt=True)  # no "In [3]": hidden cells leave gaps
    body, _ = exporter.from_notebook_node(notebook)
    return body


class _Section:
    """One executed notebook as the report shows it: numbered, titled, and cleaned for a reader."""

    def __init__(self, stem: str, title: str, metadata: dict, cells: list):
        self.stem, self.title, self.metadata, self.cells = stem, title, metadata, cells
        prefix = stem.partition("_")[0]
        self.number = str(int(prefix)) if prefix.isdigit() else prefix  # appendices keep their letter: A1
        self.anchor = f"nb-{stem}"

    @classmethod
    def read(cls, path: Path, math: "_MathML") -> "_Section":

        import nbformat  # lazy: as in write_report
        notebook = nbformat.read(path, as_version=4)
        section = cls(path.stem, _title_of(notebook.cells, path.stem), dict(notebook.metadata), [])
        widgets = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        kept = _without_empty_sections([c for c in notebook.cells if not HIDDEN_TAGS & set(c.metadata.get("tags", []))])
        title_seen = False
        for cell in kept:
            if cell.cell_type == "markdown":
                source, title_seen = _drop_title(cell.source, title_seen)
                source = _number_headings(source, section.number)
                cell.source = math.protect(_embed_images(source, _source_dir(notebook, path)))
                if not cell.source.strip():
                    continue
            elif cell.cell_type == "code":
                cell.outputs = _reader_outputs(cell.get("outputs", []), widgets, math)
            section.cells.append(cell)
        _describe_figures(section.cells, section.title)
        return section

    def heading_html(self, math: "_MathML") -> str:
        return (f'<div class="jp-RenderedHTMLCommon"><h1 class="section" id="{self.anchor}">'
                f'{self.number} &middot; {math.protect_text(self.title)}</h1></div>')


_IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")


def _describe_figures(cells: list, title: str) -> None:
    """Give every figure output its caption as alt text: the first sentence its cell prints under it, else
    of the markdown cell right below it (the workbook's captions sit there), else the heading of its section."""
    heading = title
    for index, cell in enumerate(cells):
        if cell.cell_type == "markdown":
            headings = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            heading = headings[-1] if headings else heading
            continue
        outputs = cell.get("outputs", [])
        figures = [o for o in outputs if any(kind in o.get("data", {}) for kind in _IMAGE_TYPES)]
        if not figures:
            continue
        below = cells[index + 1] if index + 1 < len(cells) else None
        caption = _first_sentence(below.source) if below is not None and below.cell_type == "markdown" else ""
        after = outputs[outputs.index(figures[-1]) + 1:]  # a sentence the cell prints under its figure
        printed = [_first_sentence(o["data"]["text/markdown"]) for o in after if "text/markdown" in o.get("data", {})]
        caption = next((text for text in printed if text), caption)
        for number, output in enumerate(figures, 1):
            where = f"Figure {number} of {len(figures)}" if len(figures) > 1 else "Figure"
            text = caption or f"{where} in '{heading}'"
            for kind in _IMAGE_TYPES:
                if kind in output["data"]:
                    output.setdefault("metadata", {}).setdefault(kind, {}).setdefault("alt", text)


def _first_sentence(markdown: str) -> str:
    """The caption a markdown cell opens with, as plain text; '' when it opens with a heading or an exercise."""
    text = markdown.strip()
    if not text or text.startswith(("#", "**Exercise", "<")):
        return ""
    text = re.sub(r"amdimmath\d+x", "(formula)", text)  # _MathML's tokens: MathML has no place in an attribute
    plain = re.sub(r"[*_`$]", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", " ".join(text.split())))
    return re.split(r"(?<=[.!?])\s", plain, maxsplit=1)[0][:300]


def _without_empty_sections(cells: list) -> list:
    """Drop a heading-only markdown cell whose section lost all its cells (e.g. '## Metrics')."""
    def heading_level(cell) -> int | None:
        lines = [line for line in cell.source.splitlines() if line.strip()] if cell.cell_type == "markdown" else []
        return len(lines[0]) - len(lines[0].lstrip("#")) if lines and lines[0].startswith("#") else None

    kept = []
    for index, cell in enumerate(cells):
        level = heading_level(cell)
        only_heading = level is not None and len([line for line in cell.source.splitlines() if line.strip()]) == 1
        following = heading_level(cells[index + 1]) if index + 1 < len(cells) else 0
        if only_heading and level > 1 and following is not None and following <= level:
            continue
        kept.append(cell)
    return kept


def _drop_title(source: str, title_seen: bool) -> tuple[str, bool]:
    """The notebook's first level-1 heading is replaced by the report's numbered section heading."""
    if title_seen:
        return source, True
    lines = source.splitlines()
    for index, line in enumerate(lines):
        if _TITLE.match(line):
            return "\n".join(lines[:index] + lines[index + 1:]), True
    return source, False


def _number_headings(source: str, number: str) -> str:
    """'## 5. Learning the critics' in notebook 2 becomes '## 2.5 Learning the critics'; the notebook's own
    numbers stay, so its cross-references ('see section 5') still hold. Unnumbered headings stay as they are."""
    lines, fenced = [], False
    for line in source.splitlines():
        fenced ^= line.lstrip().startswith("```")
        match = None if fenced else _NUMBERED_HEADING.match(line)
        lines.append(f"{match['hashes']} {number}.{match['number']} {match['text']}" if match else line)
    return "\n".join(lines)


def _source_dir(notebook, executed: Path) -> Path:
    # Markdown images are relative to the source notebook (papermill records where it was).
    source = Path(notebook.metadata.get("papermill", {}).get("input_path") or executed)
    return source.parent if source.is_absolute() else executed.parent


def _embed_images(source: str, directory: Path) -> str:
    """Local images referenced from markdown (e.g. figures/pipeline.svg) as data: URIs."""
    def embed(match: re.Match) -> str:
        path = directory / match["path"]
        kind = mimetypes.guess_type(path.name)[0]
        if not (path.is_file() and kind and kind.startswith("image/")):
            return match[0]
        return f"![{match['alt']}](data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()})"
    return _LOCAL_IMAGE.sub(embed, source)


def _reader_outputs(outputs: list, widgets: dict, math: "_MathML") -> list:
    """Outputs as a reader should see them: streams as a terminal would show them (a progress bar's
    final state, not every redraw), widgets as static HTML of their final state, math as MathML."""
    merged = []
    for output in outputs:
        if (output.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == output.name):
            merged[-1].text += output.text
        else:
            merged.append(output)
    kept = []
    for output in merged:
        if output.output_type == "stream":
            output.text = _as_terminal_shows(output.text)
            if not output.text.strip():
                continue
        elif "data" in output:
            data = output.data
            if WIDGET_VIEW in data:
                picture = _widget_html(data[WIDGET_VIEW].get("model_id", ""), widgets)
                if not picture:  # no saved state: the fallback text is the widget's first frame
                    continue
                output.data = {"text/html": picture}
            elif "text/markdown" in data:
                data["text/markdown"] = math.protect(data["text/markdown"])
        kept.append(output)
    return kept


def _as_terminal_shows(text: str) -> str:
    """Each line as it ends up after carriage returns (a progress bar redrawn in place: its last frame)."""
    lines = []
    for line in text.split("\n"):
        frames = [frame for frame in line.split("\r") if frame]
        lines.append(frames[-1] if frames else "")
    return "\n".join(lines)


def _widget_html(model_id: str, state: dict) -> str:
    """A static picture of a widget from the saved widget state: boxes as rows or columns, progress bars,
    images, and every control as its description and final value. Empty if the state is missing."""
    model = state.get(model_id.removeprefix("IPY_MODEL_"))
    if model is None:
        return ""
    name, values = model.get("model_name", ""), model.get("state", {})
    if "children" in values:
        layout = "widget-static" + ("" if name == "HBoxModel" else " column")
        children = "".join(_widget_html(child, state) for child in values["children"])
        return f'<div class="{layout}">{children}</div>'
    label = f"<span>{html.escape(values['description'])}</span> " if values.get("description") else ""
    if name in ("FloatProgressModel", "IntProgressModel"):
        return f'{label}<progress value="{values.get("value", 0)}" max="{values.get("max", 100)}"></progress>'
    if name in ("HTMLModel", "HTMLMathModel"):
        return label + str(values.get("value", ""))
    if name == "ImageModel":
        data = next((b["data"] for b in model.get("buffers", []) if b.get("path") == ["value"]), None)
        alt = html.escape(values.get("description") or "The picture the widget shows at the settings listed beside it")
        return f'<img alt="{alt}" src="data:image/{values.get("format", "png")};base64,{data}"/>' if data else ""
    if name in ("ButtonModel", "FileUploadModel"):
        return f"<button disabled>{html.escape(values.get('description', ''))}</button>"
    if "_options_labels" in values and isinstance(values.get("index"), int):
        return f"{label}<code>{html.escape(str(values['_options_labels'][values['index']]))}</code>"
    if "value" in values:
        return f"{label}<code>{html.escape(str(values['value']))}</code>"
    return label


class _MathML:
    """LaTeX in markdown ($...$, $$...$$) to MathML, so the report needs no MathJax.

    Markdown is rendered by nbconvert after `protect` has swapped every formula for a plain token, so the
    markdown parser never sees LaTeX or MathML; `restore` puts the MathML in the finished HTML. A formula
    the converter cannot turn into well-formed MathML is shown as its LaTeX source.
    """

    def __init__(self):
        self.formulas: list[str] = []

    def protect(self, markdown: str) -> str:
        def swap(match: re.Match) -> str:
            if match["code"]:
                return match["code"]
            display = match["display"] is not None
            return self._token(match["display"] if display else match["inline"], display)
        return _MATH.sub(swap, markdown)

    def protect_text(self, text: str) -> str:
        """Plain text (a title) for raw HTML: escaped, its formulas swapped for tokens."""
        return self.protect(html.escape(text, quote=False))

    def _token(self, latex: str, display: bool) -> str:
        try:
            mathml = convert(latex.strip(), display="block" if display else "inline")
            ElementTree.fromstring(mathml)
        except Exception:  # the converter's errors have no common base class; any failure shows the source
            mathml = f"<code>{html.escape(latex)}</code>"
        self.formulas.append(mathml)
        return f"amdimmath{len(self.formulas) - 1}x"

    def restore(self, page: str) -> str:
        token = re.compile(r"amdimmath(\d+)x")
        # Headings turn their text into id and href values: there a formula becomes nothing.
        page = re.sub(r'(?:id|href)="[^"]*"', lambda m: token.sub("", m[0]), page)
        return token.sub(lambda m: self.formulas[int(m[1])], page)
