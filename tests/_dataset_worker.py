"""A child process for tests/test_dataset*.py: runs ``jaxsal.explain_dataset`` on a tiny CNN.

Run as a script (``python tests/_dataset_worker.py MODE ...``); the tests import it
for the same model, data and methods, so that a parent's in-process store and a
child's can be compared bit for bit. Device counts come from ``XLA_FLAGS``, set by
the parent before this process starts.

Modes:
  run        explain ``--n`` examples into ``--out`` (``--delay`` seconds per example read,
             so that a parent can kill it part-way);
  devices    for each method, a store over every device (``OUT/METHOD-all``) and one over
             the first device only (``OUT/METHOD-1``);
  multihost  ``jax.distributed.initialize`` as process ``--process-id`` of 2, then ``run``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

METHODS = ("vanilla_grad", "smoothgrad", "integrated_gradients")
IMAGE = (8, 8, 3)
SEED = 7


def images(n: int) -> np.ndarray:
    """``n`` deterministic float32 images (8, 8, 3)."""
    return np.random.default_rng(0).standard_normal((n, *IMAGE)).astype(np.float32)


def model():
    """A tiny conv-relu-conv-relu-dense CNN (5 classes) and its scores function."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class TinyCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3))(x))
            x = nn.relu(nn.Conv(6, (3, 3), strides=(2, 2))(x))
            x = x.reshape((x.shape[0], -1))
            return nn.Dense(5)(nn.relu(nn.Dense(12)(x)))

    module = TinyCNN()
    variables = module.init(jax.random.key(0), jnp.zeros((1, *IMAGE), jnp.float32))
    return module, variables, (lambda z: module.apply(variables, z))


def method(name: str):
    """One of :data:`METHODS` on the tiny CNN, with test-sized hyper-parameters."""
    import jaxsal

    f = model()[2]
    if name == "vanilla_grad":
        return jaxsal.vanilla_grad(f)
    if name == "smoothgrad":
        return jaxsal.smoothgrad(jaxsal.vanilla_grad(f), n=4)
    if name == "integrated_gradients":
        return jaxsal.integrated_gradients(f, steps=8)
    raise ValueError(name)


class Slow:
    """A sequence source that sleeps ``delay`` seconds per example read."""

    def __init__(self, x: np.ndarray, delay: float):
        self.x, self.delay = x, delay

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        time.sleep(self.delay)
        return self.x[i]


def _explain(args, mesh=None, out=None, name=None):
    import jax

    from jaxsal._src.dataset import explain_dataset

    src = images(args.n) if args.delay <= 0 else Slow(images(args.n), args.delay)
    return explain_dataset(
        method(name or args.method),
        src,
        out or args.out,
        batch_size=args.batch_size,
        key=jax.random.key(SEED),
        mesh=mesh,
        progress=False,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("run", "devices", "multihost"))
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--method", default="smoothgrad")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cache", default=None, help="persistent compilation cache folder")
    args = p.parse_args(argv)

    import jax

    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if args.mode == "multihost":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{args.port}", num_processes=2, process_id=args.process_id
        )
        _explain(args)
        jax.distributed.shutdown()
    elif args.mode == "run":
        _explain(args)
    else:
        one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
        for name in METHODS:
            _explain(args, out=os.path.join(args.out, f"{name}-all"), name=name)
            _explain(args, mesh=one, out=os.path.join(args.out, f"{name}-1"), name=name)
    print(f"devices={jax.local_device_count()} processes={jax.process_count()} ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
