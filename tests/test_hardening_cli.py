"""The CLI's last tracebacks (issue 16): interrupts at any moment, empty lists, huge
seeds, bad or extension-less ``--out``, and writes that fail half-way.

The interrupt test runs the real console-script entry point (:mod:`jaxsal_cli`) in a
child process and sends SIGINT when the progress bar reports each phase.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jaxsal import cli
from jaxsal.cli import _common, demo

ROOT = Path(__file__).resolve().parents[1]


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--methods", ""], "--methods"),
        (["--methods", ",,,"], "--methods"),
        (["--methods", " , "], "--methods"),
        (["--samples", ""], "--samples"),
        (["--samples", ","], "--samples"),
    ],
)
def test_empty_lists_are_errors_not_defaults(monkeypatch, capsys, argv, named):
    monkeypatch.setattr(demo, "load_model", _must_not_run)
    assert cli.main(["demo", *argv]) == 1
    line = _one_line(capsys.readouterr().err)
    assert named in line and "names nothing" in line


@pytest.mark.parametrize("seed", [str(2**32), str(2**63), str(2**64 + 5), "-1", "1e3"])
def test_seeds_outside_32_bits_are_refused(capsys, seed):
    assert cli.main(["demo", "--seed", seed]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--seed" in line and "2**32" in line
    for cmd in ("sanity", "evaluate"):
        assert cli.main([cmd, "--seed", seed]) == 2
        _one_line(capsys.readouterr().err)
    with pytest.raises(ValueError, match="2\\*\\*32"):
        demo.run(samples=["coffee"], methods=["vanilla_grad"], seed=2**32, out=None)


def test_usage_errors_are_one_line(capsys):
    assert cli.main(["demo", "--smoothgrad-n", "zero"]) == 2
    assert "--smoothgrad-n" in _one_line(capsys.readouterr().err)
    assert cli.main(["no-such-command"]) == 2
    _one_line(capsys.readouterr().err)


def _must_not_run(*a, **k):
    raise AssertionError("the model was loaded before --out was checked")


@pytest.mark.parametrize(
    "out, words",
    [
        ("missing-folder/x.png", "does not exist"),
        ("x.notaformat", "unknown figure format"),
        (".", "is a folder"),
        ("", "--out is empty"),
    ],
)
def test_bad_out_fails_before_computing(tmp_path, monkeypatch, capsys, out, words):
    monkeypatch.setattr(demo, "load_model", _must_not_run)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--samples", "coffee", "--methods", "vanilla_grad", "--out", out]) == 1
    assert words in _one_line(capsys.readouterr().err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in read-only folders")
def test_unwritable_out_folder(tmp_path, monkeypatch, capsys):  # pragma: no cover - CI runs as a user
    monkeypatch.setattr(demo, "load_model", _must_not_run)
    tmp_path.chmod(0o500)
    try:
        assert cli.main(["demo", "--out", str(tmp_path / "x.png")]) == 1
        assert "cannot write" in _one_line(capsys.readouterr().err)
    finally:
        tmp_path.chmod(0o700)


def test_out_without_extension_is_reported_as_written(tmp_path):
    path, fmt = _common.output_path(tmp_path / "figure")
    assert (path, fmt) == (str(tmp_path / "figure.png"), "png")
    assert _common.output_path(tmp_path / "f.PDF") == (str(tmp_path / "f.PDF"), "pdf")
    assert not list(tmp_path.iterdir()), "the writability probe must not leave files"


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old, complete version")

    def half_then_full_disk(tmp):
        Path(tmp).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        _common.write_atomically(str(target), half_then_full_disk)
    assert target.read_bytes() == b"old, complete version"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_file_size_limit_while_writing_is_one_line(tmp_path):
    """RLIMIT_FSIZE hit by a real savefig, through the CLI's error handler, in a child."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        from matplotlib.figure import Figure
        from jaxsal import cli
        from jaxsal.cli import _common
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
        fig = Figure(figsize=(8, 8)); fig.subplots().imshow(__import__("numpy").random.rand(200, 200))
        ns = type("A", (), {{"command": "demo"}})
        def func(args):
            _common.write_atomically({str(tmp_path / "big.png")!r}, lambda tmp: fig.savefig(tmp, format="png"))
        ns.func = staticmethod(func)
        parser = cli.build_parser()
        parser.parse_args = lambda argv: ns
        cli.build_parser = lambda: parser
        sys.exit(cli.main([]))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 1, r.stderr
    line = _one_line(r.stderr)
    assert "File too large" in line or "file size" in line.lower(), line
    assert not list(tmp_path.iterdir()), "a partial figure (or its temporary file) was left"


# ----------------------------------------------------------------------------- interrupts


def _read_until(proc: subprocess.Popen, marker: bytes | None, buf: bytearray, timeout: float) -> bool:
    """Read the child's stderr into ``buf`` until ``marker`` appears (or ``timeout``)."""
    end = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    while time.monotonic() < end:
        if marker is not None and marker in buf:
            return True
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                return marker is None
            buf += chunk
        elif proc.poll() is not None:
            return marker is not None and marker in buf
    return marker is None


# phase -> (marker in the progress bar to wait for, extra delay after it, seconds)
PHASES = {
    "start-up": (None, 0.3),  # during `import jaxsal` (JAX, Flax, every method)
    "model-load": (b"loading model", 0.0),
    "mid-method": (b"vanilla_grad", 1.5),
}


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(PHASES))
def test_sigint_at_any_moment_is_one_line_and_leaves_no_figure(tmp_path, phase):
    out = tmp_path / "jaxsal-demo.png"
    argv = ["demo", "--samples", "coffee", "--methods", "vanilla_grad", "--out", str(out)]
    code = "import sys; from jaxsal_cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    buf = bytearray()
    try:
        marker, delay = PHASES[phase]
        if marker is None:
            time.sleep(delay)
        else:
            assert _read_until(proc, marker, buf, timeout=120), f"never reached {marker!r}: {bytes(buf)!r}"
            time.sleep(delay)
        assert proc.poll() is None, "the run ended before the interrupt"
        before = len(buf)
        proc.send_signal(signal.SIGINT)
        try:
            stdout, rest = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGINT did not end the run ({phase})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = (bytes(buf) + rest).decode(errors="replace")
    after = (bytes(buf[before:]) + rest).decode(errors="replace")
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and "Segmentation" not in err, err
    assert [ln for ln in after.replace("\r", "\n").splitlines() if ln.strip()][-1] == "jaxsal: interrupted", (
        err
    )
    assert err.count("interrupted") == 1, err
    assert stdout == b"", stdout
    assert not out.exists(), "a figure was left behind by an interrupted run"
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())


def test_written_figure_has_the_permissions_a_plain_open_would_give(tmp_path):
    """The temporary file is 0600 (mkstemp); the renamed figure follows the umask."""
    from jaxsal.cli import _common

    target = tmp_path / "fig.png"
    old = os.umask(0o022)
    try:
        _common.write_atomically(str(target), lambda tmp: Path(tmp).write_bytes(b"png"))
    finally:
        os.umask(old)
    assert target.read_bytes() == b"png"
    assert (target.stat().st_mode & 0o777) == 0o644
