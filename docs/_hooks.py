"""mkdocs hooks: generate the API index from ``jaxsal.__all__``.

The page ``api.md`` holds the marker ``<!-- api-index -->``. It is replaced by

1. a table of every name in ``jaxsal.__all__`` (and of the public submodules listed in
   ``SUBMODULES``), each linked to where it is documented, with its first sentence;
2. a ``::: jaxsal.<name>`` block for each of them that no other page documents yet.

So a name added to ``__all__`` is on the site (and cross-referencable from docstrings)
at the next build, without editing the docs; moving it to a themed page is a matter of
adding its ``:::`` block there. Loading uses griffe (static analysis, about a second).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import griffe

MARKER = "<!-- api-index -->"
# Public submodules that are not (or not all) in ``jaxsal.__all__`` but are API.
SUBMODULES = (
    "jaxsal.flax",
    "jaxsal.metrics",
    "jaxsal.models",
    "jaxsal.viz",
    "jaxsal.datasets",
    "jaxsal.matchers",
    "jaxsal.rules",
    "jaxsal.cli",
)
# Modules of which only the docstring is documented, not the members (none at present).
DOCSTRING_ONLY: tuple[str, ...] = ()
_BLOCK = re.compile(r"^:::\s+(jaxsal(?:\.[\w]+)*)\s*$", re.M)


def _documented_elsewhere(docs_dir: Path, this: str) -> dict[str, str]:
    """``{identifier: page}`` for every ``::: identifier`` block outside ``this`` page."""
    found: dict[str, str] = {}
    for md in sorted(docs_dir.rglob("*.md")):
        rel = md.relative_to(docs_dir).as_posix()
        if rel == this:
            continue
        for m in _BLOCK.finditer(md.read_text(encoding="utf-8")):
            found.setdefault(m[1], rel)
    return found


def _first_sentence(obj: griffe.Object) -> str:
    try:
        doc = obj.docstring.value if obj.docstring else ""
    except Exception:  # noqa: BLE001 -- an unresolvable alias: no summary
        doc = ""
    para = " ".join(doc.strip().split("\n\n", 1)[0].split())
    if not para:
        return ""
    # The first sentence: a full stop that ends neither an abbreviation nor "et al.".
    for cut in re.finditer(r"\.(\s|$)", para):
        words = para[: cut.start()].split()
        if not words or words[-1].lower() not in _ABBREVIATIONS:
            para = para[: cut.start() + 1]
            break
    return para.replace("|", "\\|")


_ABBREVIATIONS = {"al", "e.g", "i.e", "cf", "vs", "sec", "eq", "prop", "fig", "ch"}


def _load(root: Path) -> griffe.Module:
    sys.path.insert(0, str(root / "docs"))
    try:
        from _griffe_rst import RstToMarkdown
    finally:
        sys.path.pop(0)
    return griffe.load(
        "jaxsal",
        search_paths=[str(root)],
        extensions=griffe.load_extensions(RstToMarkdown),
        resolve_aliases=False,
    )


def _api_index(docs_dir: Path, page: str) -> str:
    pkg = _load(docs_dir.parent)
    elsewhere = _documented_elsewhere(docs_dir, page)
    names = [f"jaxsal.{n}" for n in (pkg.exports or [])]
    for sub in SUBMODULES:
        if sub not in names and sub.split(".", 1)[1] in pkg.members:
            names.append(sub)
    rows, blocks = [], []
    for ident in names:
        try:
            obj = pkg[ident.split(".", 1)[1]]
            kind = obj.kind.value
        except Exception:  # noqa: BLE001 -- exported but not found: griffe will report it below
            obj, kind = None, "?"
        where = elsewhere.get(ident)
        rows.append(
            f"| [`{ident}`][{ident}] | {kind} | {_first_sentence(obj) if obj else ''} | "
            f"{f'[{_title(where)}]({_rel(page, where)})' if where else 'below'} |"
        )
        if where is None:
            blocks.append(_block(ident, obj, elsewhere))
    table = "| name | kind | summary | documented on |\n| --- | --- | --- | --- |\n" + "\n".join(rows)
    rest = ""
    if blocks:
        rest = "\n\n## Other public names\n\n" + "\n\n".join(blocks)
    return table + rest + "\n"


def _block(ident: str, obj: griffe.Object | None, elsewhere: dict[str, str]) -> str:
    """A ``:::`` block; a module lists only the members no other page documents."""
    if obj is None or not obj.is_module:
        return f"::: {ident}"
    if ident in DOCSTRING_ONLY:
        return f"::: {ident}\n    options:\n      members: false\n      heading_level: 2"
    names = (
        list(obj.exports) if obj.exports is not None else [n for n in obj.members if not n.startswith("_")]
    )
    keep = []
    for n in names:
        if f"{ident}.{n}" in elsewhere:
            continue
        try:
            if obj[n].is_module:  # submodules: their names are re-exported or private
                continue
        except Exception:  # noqa: BLE001 -- unresolvable alias: let mkdocstrings report it
            pass
        keep.append(n)
    members = "[" + ", ".join(keep) + "]" if keep else "false"
    return f"::: {ident}\n    options:\n      members: {members}\n      heading_level: 2"


_TITLES = {
    "contract.md": "the contract",
    "getting-started.md": "getting started",
    "methods/gradients.md": "gradients",
    "methods/path.md": "path methods",
    "methods/smoothing.md": "smoothing",
    "methods/cam.md": "CAM family",
    "methods/layer.md": "input methods at a layer",
    "evaluation.md": "evaluation",
    "choosing.md": "choosing a method",
}


def _title(page: str) -> str:
    return _TITLES.get(page, page.removesuffix(".md"))


def _rel(src: str, dst: str) -> str:
    depth = src.count("/")
    return "../" * depth + dst


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 -- mkdocs hook signature
    if MARKER not in markdown:
        return markdown
    docs_dir = Path(config["docs_dir"])
    return markdown.replace(MARKER, _api_index(docs_dir, page.file.src_uri))
