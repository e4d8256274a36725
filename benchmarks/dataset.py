"""explain_dataset: peak memory against N, and throughput against the device count (issue 13).

Run: ``python benchmarks/dataset.py [--efficientnet] [--n-throughput 512]``.

* **Memory.** Peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of a fresh
  process that explains N = 256 and N = 2048 images (32 x 32 x 3, a small CNN,
  vanilla gradient, batch 64) read lazily from a sequence: flat when no input or
  output is ever held for the whole dataset (the maps alone are 12 KiB x N).
* **Throughput.** Images/s for 1, 2, 4 and 8 forced host devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=D``, one fresh process each):
  one warm-up store compiles the step (timed apart), then the median of three runs
  over ``--n-throughput`` images, zarr writes included. Forced host devices share the
  machine's cores: on a 2-core machine this shows the overhead of sharding and
  of the per-example ``vmap``, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

SIZE = 32


class Lazy:
    """Image ``i`` made from seed ``i`` when indexed: nothing of size N is held."""

    def __init__(self, n: int, size: int = SIZE):
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import numpy as np

        return np.random.default_rng(i).standard_normal((self.size, self.size, 3)).astype(np.float32)


def _small_cnn():
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class SmallCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(16, (3, 3))(x))
            x = nn.relu(nn.Conv(32, (3, 3), strides=(2, 2))(x))
            x = nn.relu(nn.Conv(32, (3, 3), strides=(2, 2))(x))
            x = x.mean((1, 2))
            return nn.Dense(10)(x)

    m = SmallCNN()
    v = m.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3), jnp.float32))
    return lambda z: m.apply(v, z), SIZE


def _efficientnet():
    from jaxsal import models

    m, v = models.efficientnet_lite0(pretrained=False, key=__import__("jax").random.key(0))
    return (lambda z: m.apply(v, z)), 224


def child(mode: str, n: int, model: str) -> dict:
    import jaxsal
    from jaxsal._src.dataset import explain_dataset

    f, size = _small_cnn() if model == "small_cnn" else _efficientnet()
    attr = jaxsal.vanilla_grad(f)
    batch = 64 if model == "small_cnn" else 16
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "memory":
            explain_dataset(
                attr, Lazy(n, size), os.path.join(tmp, "m.zarr"), batch_size=batch, progress=False
            )
            return {"n": n, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        import jax

        t = time.perf_counter()
        explain_dataset(
            attr, Lazy(batch, size), os.path.join(tmp, "w.zarr"), batch_size=batch, progress=False
        )
        compile_s = time.perf_counter() - t
        rates = []
        for r in range(3):
            t = time.perf_counter()
            explain_dataset(
                attr, Lazy(n, size), os.path.join(tmp, f"r{r}.zarr"), batch_size=batch, progress=False
            )
            rates.append(n / (time.perf_counter() - t))
        rates.sort()
        return {
            "devices": jax.local_device_count(),
            "model": model,
            "n": n,
            "batch_size": batch,
            "first_store_s": compile_s,
            "images_per_s": rates[1],
        }


def _spawn(args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", nargs=3, metavar=("MODE", "N", "MODEL"))
    p.add_argument("--efficientnet", action="store_true", help="also EfficientNet-Lite0 (random weights)")
    p.add_argument("--n-throughput", type=int, default=512)
    args = p.parse_args()
    if args.child:
        mode, n, model = args.child
        print(json.dumps(child(mode, int(n), model)))
        return
    print("load:", open("/proc/loadavg").read().strip(), "| cores:", os.cpu_count())
    for n in (256, 2048):
        r = _spawn(["memory", str(n), "small_cnn"], {"XLA_FLAGS": ""})
        print(f"memory  N={r['n']:5d}  peak RSS {r['peak_rss_mib']:.0f} MiB")
    models = ["small_cnn"] + (["efficientnet"] if args.efficientnet else [])
    for model in models:
        n = args.n_throughput if model == "small_cnn" else 64
        for d in (1, 2, 4, 8):
            r = _spawn(
                ["throughput", str(n), model], {"XLA_FLAGS": f"--xla_force_host_platform_device_count={d}"}
            )
            print(
                f"{model:13s} devices={r['devices']}  {r['images_per_s']:8.1f} images/s  "
                f"(first store incl. compile {r['first_store_s']:.1f} s, N={r['n']}, batch {r['batch_size']})"
            )
    print("load:", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
