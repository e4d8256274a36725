"""The API reference site builds with ``mkdocs build --strict``, offline.

Strict mode turns every warning into a failure: a docstring cross-reference to a name
the site does not document, a parameter documented that is not in the signature, a
broken link between pages. The build runs in a subprocess with the test's own Python
(``python -m mkdocs``), into a temporary directory, with the network blocked for the
subprocess (see ``_NO_NETWORK``), so it also checks that nothing is fetched.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("mkdocs") is None
        or importlib.util.find_spec("mkdocstrings_handlers") is None,
        reason="needs the `docs` extra: pip install -e '.[docs]'",
    ),
]

# Pages that must exist in the built site.
PAGES = [
    "index.html",
    "getting-started/index.html",
    "contract/index.html",
    "methods/gradients/index.html",
    "methods/path/index.html",
    "methods/smoothing/index.html",
    "methods/cam/index.html",
    "methods/layer/index.html",
    "methods/propagation/index.html",
    "methods/perturbation/index.html",
    "methods/pair/index.html",
    "methods/transformers/index.html",
    "choosing/index.html",
    "evaluation/index.html",
    "dataset/index.html",
    "benchmarks/index.html",
    "api/index.html",
    "demo.png",
]

# Run before mkdocs in the subprocess: any attempt to open a socket to a remote host
# raises, so a build that needs the network fails instead of silently downloading.
_NO_NETWORK = r"""
import socket

class _Blocked(OSError):
    pass

def _refuse(*args, **kwargs):
    raise _Blocked("the docs build must not use the network")

_create_connection = socket.create_connection
socket.create_connection = _refuse
_connect = socket.socket.connect
def _connect_local_only(self, address):
    if self.family == socket.AF_UNIX:
        return _connect(self, address)
    raise _Blocked(f"the docs build must not use the network (tried {address!r})")
socket.socket.connect = _connect_local_only
socket.getaddrinfo = _refuse

import sys
from mkdocs.__main__ import cli
sys.argv = ["mkdocs", *sys.argv[1:]]
cli()
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _NO_NETWORK, "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.mark.parametrize("page", PAGES)
def test_page_exists(site, page):
    assert (site / page).is_file(), f"{page} is missing from the built site"


def _inventory(site: Path) -> set[str]:
    """Object names in the site's Sphinx inventory (``objects.inv``, written by mkdocstrings)."""
    data = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four header lines, then zlib-compressed entries
        header_end = data.index(b"\n", header_end) + 1
    body = zlib.decompress(data[header_end:]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line}


def test_every_public_name_is_documented(site):
    """Each name in ``jaxsal.__all__`` has an entry (the API index generates missing ones)."""
    import jaxsal

    names = sorted(jaxsal.__all__)
    documented = _inventory(site)
    missing = [n for n in names if f"jaxsal.{n}" not in documented]
    assert not missing, f"public names not on the site: {missing}"


def test_method_pages_show_equations_and_papers(site):
    """Docstrings' reST math is rendered (arithmatex), not left as ``.. math::``, and
    docstrings cite papers, not internal documents."""
    for page in ("methods/gradients", "methods/path", "methods/smoothing", "methods/cam", "methods/layer"):
        html = (site / page / "index.html").read_text(encoding="utf-8")
        assert 'class="arithmatex"' in html, page
        assert ".. math::" not in html and ":func:`" not in html and ":math:`" not in html, page
        assert "arxiv.org" in html, page
    for html_file in site.rglob("*.html"):
        text = html_file.read_text(encoding="utf-8")
        for internal in ("seed 7.", "house rule"):
            assert internal not in text, f"{internal!r} in {html_file.relative_to(site)}"
