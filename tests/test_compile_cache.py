"""The CLI's persistent compilation cache: where it goes, how it is switched off, and
that a second process reuses what the first compiled (in subprocesses, so that this
process's JAX config is untouched; never the real home cache)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from jaxsal.cli import _common


def test_folder_from_environment(tmp_path):
    assert _common.compile_cache_dir({"JAXSAL_COMPILE_CACHE": str(tmp_path)}) == str(tmp_path)
    for off in ("0", "off", "False", "no", ""):
        assert _common.compile_cache_dir({"JAXSAL_COMPILE_CACHE": off}) is None
    got = _common.compile_cache_dir({"XDG_CACHE_HOME": str(tmp_path)})
    assert got == os.path.join(str(tmp_path), "jaxsal", "xla")
    home = _common.compile_cache_dir({})
    assert home.endswith(os.path.join(".cache", "jaxsal", "xla"))


def test_disabled_does_nothing(tmp_path):
    env = {"JAXSAL_COMPILE_CACHE": str(tmp_path / "c")}
    assert _common.enable_compile_cache(disabled=True, environ=env) is None
    assert _common.enable_compile_cache(environ={"JAXSAL_COMPILE_CACHE": "0"}) is None
    assert not (tmp_path / "c").exists()


def test_demo_parser_has_the_flag():
    from jaxsal.cli import build_parser

    args = build_parser().parse_args(["demo", "--no-compile-cache"])
    assert args.no_compile_cache is True
    assert build_parser().parse_args(["demo"]).no_compile_cache is False


SCRIPT = textwrap.dedent(
    """
    import time, jax, jax.numpy as jnp
    from jaxsal.cli import _common
    print(_common.enable_compile_cache())
    # The CLI caches only compiles over COMPILE_CACHE_MIN_SECS; this tiny program may
    # compile faster than that on a quiet machine, so the test caches everything.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    def f(x):
        for _ in range(60):
            x = jnp.sin(x) @ x.T + jnp.cos(x)
        return x
    t = time.perf_counter()
    jax.jit(f).lower(jnp.ones((8, 8))).compile()
    print(time.perf_counter() - t)
    """
)


def test_second_process_reads_the_cache(tmp_path):
    cache = tmp_path / "xla"
    env = {**os.environ, "JAXSAL_COMPILE_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    first = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    assert first.stdout.splitlines()[0] == str(cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "nothing was written to the cache"
    second = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    assert sorted(p.name for p in cache.iterdir()) == entries  # a hit: no new entry
    off = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**env, "JAXSAL_COMPILE_CACHE": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert off.stdout.splitlines()[0] == "None"
    del second
