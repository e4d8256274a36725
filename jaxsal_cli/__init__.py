"""Entry point of the ``jaxsal`` console script, outside the ``jaxsal`` package.

It lives here, not in :mod:`jaxsal.cli`, so that it runs *before* ``import jaxsal``
(JAX, Flax and every method: the first second or two of a run). It installs the
interrupt handling, then imports and runs :func:`jaxsal.cli.main`.

Interrupts (Ctrl-C, ``SIGINT``; ``SIGTERM``) at any moment end the process the same
way: the temporary files registered with :func:`register_temp` (a figure being
written) are removed, ``jaxsal: interrupted`` is printed on stderr and the process
exits with status ``128 + signal`` (130 for Ctrl-C) at once, with ``os._exit``.
Nothing is unwound through JAX's or XLA's native frames, so an interrupt can neither
crash the interpreter, be swallowed by a library, nor print a traceback. The signal
is seen by a watcher thread through :func:`signal.set_wakeup_fd`, so it takes
effect even while the main thread is inside a long native call (an XLA compilation).

Only the console script installs this: ``jaxsal.cli.main`` called from Python (tests,
notebooks) keeps Python's ordinary ``KeyboardInterrupt``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence

__all__ = ["main", "register_temp", "unregister_temp"]

_TEMP: set[str] = set()
_LOCK = threading.Lock()
_INSTALLED = False


def register_temp(path: str) -> None:
    """Remove ``path`` if the process is interrupted before :func:`unregister_temp`."""
    with _LOCK:
        _TEMP.add(path)


def unregister_temp(path: str) -> None:
    with _LOCK:
        _TEMP.discard(path)


def _die(signum: int) -> None:
    with _LOCK:
        for p in list(_TEMP):
            try:
                os.unlink(p)
            except OSError:
                pass
    try:  # on a terminal, first clear a progress bar's open line
        os.write(2, (b"\r\x1b[K" if os.isatty(2) else b"") + b"jaxsal: interrupted\n")
    finally:
        os._exit(128 + signum)


def _watch(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum in (signal.SIGINT, signal.SIGTERM):
                _die(signum)


def install() -> None:
    """Route SIGINT and SIGTERM to the watcher thread (main thread only; idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: None)  # the C handler writes the wakeup fd; Python does nothing
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(r,), name="jaxsal-interrupt", daemon=True).start()
    _INSTALLED = True


def main(argv: Sequence[str] | None = None) -> int:
    """The ``jaxsal`` console script: interrupt handling, then :func:`jaxsal.cli.main`."""
    install()
    from jaxsal.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
