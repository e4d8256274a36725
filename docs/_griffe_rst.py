"""Griffe extension for the docs site: render jaxsal's reST-flavoured docstrings as Markdown.

jaxsal's docstrings are Google style, with a few reStructuredText constructs that read
well in ``help()`` and in an editor. mkdocstrings renders Markdown, so this extension
rewrites, at load time and only for the site (the source is untouched):

* ``.. math:: expr`` and ``.. math::`` + an indented block  ->  a ``$$ ... $$`` block;
* ``:math:`expr```  ->  ``$expr$`` (both rendered by ``pymdownx.arithmatex``);
* ``:func:`name```, ``:class:``, ``:mod:``, ``:data:``, ``:meth:``, ``:attr:``,
  ``:obj:``  ->  a cross-reference. ``name`` is resolved in the docstring's scope.
  A public name (no ``_`` component) becomes a *strict* reference, so a docstring that
  names a function the site does not document, or a name that does not exist, fails
  ``mkdocs build --strict``. A private name (``jaxsal._src...``) and an existing
  module become optional references (a link when the object is rendered on the site,
  plain code otherwise);
* ``Example::`` + an indented block (reST's literal block)  ->  ``Example:`` + a fenced
  Python code block;
* ``==========`` simple tables  ->  a Markdown table;
* ``Returns: text`` on one line  ->  a ``Returns:`` section.

It also fills in the docstrings that are assigned at run time
(``smoothgrad.__doc__ = ...``), which static analysis cannot see.
"""

from __future__ import annotations

import importlib
import inspect
import re
import textwrap
import warnings

import griffe

_ROLE = re.compile(r":(?:py:)?(func|class|mod|data|meth|attr|obj|exc):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_LITERAL_INTRO = re.compile(r"^(?P<indent>\s*)(?P<text>.*\S)::\s*$")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. math::\s*(?P<rest>.*)$")
_INLINE_SECTION = re.compile(r"^(?P<indent>\s*)(?P<title>Returns|Raises|Yields): (?P<text>\S.*)$")
_TABLE_RULE = re.compile(r"^(?P<indent>\s*)(=+)(\s+=+)+\s*$")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, base: int) -> tuple[list[str], int]:
    """The indented block after line ``start - 1`` (deeper than ``base``), skipping blank lines."""
    i = start
    body: list[str] = []
    while i < len(lines) and not lines[i].strip():
        i += 1
    while i < len(lines) and (not lines[i].strip() or _indent_of(lines[i]) > base):
        body.append(lines[i])
        i += 1
    while body and not body[-1].strip():
        body.pop()
        i -= 1
    return body, i


def _rewrite_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _MATH_DIRECTIVE.match(line)
        if m:
            indent = m["indent"]
            body, i = _block(lines, i + 1, len(indent))
            expr = [m["rest"]] if m["rest"].strip() else []
            expr += textwrap.dedent("\n".join(body)).splitlines()
            # Block math must stand in its own paragraph (blank lines around it).
            if out and out[-1].strip():
                out.append("")
            out += [f"{indent}$$", *(f"{indent}{e}" for e in expr if e.strip()), f"{indent}$$", ""]
            while i < len(lines) and not lines[i].strip():
                i += 1
            continue
        m = _LITERAL_INTRO.match(line)
        if m and not line.strip().startswith(".."):
            indent = m["indent"]
            body, j = _block(lines, i + 1, len(indent))
            if body:
                text_ = m["text"]
                out.append(f"{indent}{text_}:" if not text_.endswith(":") else f"{indent}{text_}")
                out.append("")
                out.append(f"{indent}```python")
                out += [
                    f"{indent}{b}" if b.strip() else "" for b in textwrap.dedent("\n".join(body)).splitlines()
                ]
                out.append(f"{indent}```")
                i = j
                continue
        m = _INLINE_SECTION.match(line)
        if m and (i + 1 == len(lines) or not lines[i + 1].strip()):
            # ``Returns: text`` on one line: a Google section with one item.
            out += [f"{m['indent']}{m['title']}:", f"{m['indent']}  {m['text']}"]
            i += 1
            continue
        m = _TABLE_RULE.match(line)
        if m:
            indent = m["indent"]
            cols = [mm.start() for mm in re.finditer(r"=+", line)]
            segments: list[list[list[str]]] = [[]]
            i += 1
            while i < len(lines) and lines[i].strip():
                if _TABLE_RULE.match(lines[i]):
                    segments.append([])
                else:
                    row = lines[i]
                    ends = [*cols[1:], len(row)]
                    segments[-1].append([row[a:b].strip() for a, b in zip(cols, ends, strict=True)])
                i += 1
            segments = [seg for seg in segments if seg]
            header = segments[0] if len(segments) > 1 else [[" "] * len(cols)]
            body = [r for seg in (segments[1:] if len(segments) > 1 else segments) for r in seg]
            out += [f"{indent}| " + " | ".join(r) + " |" for r in header[:1]]
            out.append(f"{indent}|" + "---|" * len(cols))
            out += [f"{indent}| " + " | ".join(r) + " |" for r in body]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _public(path: str) -> bool:
    return not any(part.startswith("_") for part in path.split("."))


class RstToMarkdown(griffe.Extension):
    """Rewrite reST constructs in every docstring to Markdown (see the module docstring)."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs) -> None:
        if obj.is_alias:
            return
        if obj.docstring is None and obj.is_function and obj.parent is not None and obj.parent.is_module:
            doc = _runtime_doc(obj)
            if doc:
                obj.docstring = griffe.Docstring(doc, parent=obj)
        if obj.docstring is None:
            return
        text = _rewrite_blocks(obj.docstring.value)
        text = _MATH_ROLE.sub(lambda m: f"${m[1]}$", text)
        text = _ROLE.sub(lambda m: _reference(obj, m[1], m[3], loader, short=bool(m[2])), text)
        obj.docstring.value = text


def _runtime_doc(obj: griffe.Object) -> str | None:
    """The docstring an object gets at import time (``f.__doc__ = ...``), if any."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. deprecated names' DeprecationWarning
            value = importlib.import_module(obj.module.path)
            for part in obj.path[len(obj.module.path) + 1 :].split("."):
                value = getattr(value, part)
    except Exception:  # noqa: BLE001 -- best effort: a missing docstring is not an error
        return None
    doc = getattr(value, "__doc__", None)  # its own, not one inherited
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


def _exists(path: str, loader: griffe.GriffeLoader) -> bool:
    try:
        loader.modules_collection[path]
    except Exception:  # noqa: BLE001 -- KeyError, or an alias that does not resolve
        return False
    return True


def _reference(
    obj: griffe.Object, role: str, name: str, loader: griffe.GriffeLoader, *, short: bool = False
) -> str:
    path = name
    scope = obj if obj.is_module or obj.is_class else obj.parent
    if scope is not None and "." not in name:
        try:
            path = scope.resolve(name)
        except Exception:  # noqa: BLE001 -- unresolvable: keep the name as written
            path = name
    elif "." in name and not name.startswith(obj.package.name + "."):
        # e.g. jax.numpy.foo: an external name, not documented here
        return f"`{name}`"
    # A module that exists need not have a section of its own on the site (the site
    # documents the public names, not every file): link to it where it is rendered.
    optional = not _public(path) or (role == "mod" and _exists(path, loader))
    shown = name.rsplit(".", 1)[-1] if short else name  # reST's ``~``: the last component only
    if not optional:
        return f"[`{shown}`][{path}]"
    return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'
