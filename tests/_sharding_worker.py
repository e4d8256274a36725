"""Run every registered method on a batch sharded over 8 forced host devices.

Run by ``tests/test_sharding.py`` in a fresh process (the device count must be set
before JAX starts): ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python
tests/_sharding_worker.py [method ...]``. For each method and each setting it prints
one JSON line ``{"method", "setting", "ok", "rel_err", "spec", "sharded", "error"}``:

* ``auto``: ``jax.jit`` on a batch ``device_put`` over an Auto mesh axis;
* ``explicit``: the same under ``jax.set_mesh`` with an Explicit mesh axis;
* ``shard_map``: inside ``jax.shard_map(..., check_vma=True)``, one slice of the batch
  per device. Stochastic methods run as ``jaxsal.per_example(attr, axis_name="b")``
  there and are compared with ``per_example(attr)`` unsharded;
* ``shard_map_plain`` (stochastic methods whose draws do not depend on the batch):
  the plain ``attr`` inside ``shard_map`` against the plain unsharded call.

``sharded``: the output has the reference's shape and is sharded along the batch axis
``"b"``; ``ok``: that, and equal to the unsharded result within ``RTOL`` of its largest
magnitude (tests/test_sharding.py applies its own per-method tolerance to ``rel_err``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from conftest import SmallCNN, build  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxsal  # noqa: E402
from jaxsal._src.contract import per_example  # noqa: E402

RTOL = 1e-6
B = 8
KEY = jax.random.key(42)
# Methods whose random draws depend on the key only (the same for every example), so
# the plain attr inside shard_map already draws what the unsharded call draws.
BATCH_FREE_DRAWS = {"shapley_sampling", "rise", "kernel_shap", "lime"}
# Still smaller hyper-parameters than tests/conftest.py's FAST, for time (4 compilations
# per method): sharding does not depend on them.
SMALLER = {
    "rise": {"n": 4},
    "expected_gradients": {"n": 2},
    "smoothgrad": {"n": 2},
    "smoothgrad_sq": {"n": 2},
    "vargrad": {"n": 2},
}


def main(names: list[str]) -> None:
    assert jax.device_count() == 8, jax.devices()
    module = SmallCNN()
    x = jax.random.normal(jax.random.key(1), (B, 8, 8, 3))
    variables = module.init(jax.random.key(0), x)
    cnn = type("CNN", (), {})()
    cnn.module, cnn.variables, cnn.layer, cnn.x = module, variables, "features", x
    cnn.f = lambda inp: module.apply(variables, inp)
    t = jnp.arange(B, dtype=jnp.int32) % 5

    auto = jax.make_mesh((8,), ("b",), axis_types=(AxisType.Auto,))
    explicit = jax.make_mesh((8,), ("b",), axis_types=(AxisType.Explicit,))
    registered = jaxsal.methods()
    for name in names or list(registered):
        start = time.perf_counter()
        for row in run_method(registered[name], cnn, x, t, auto, explicit):
            print(json.dumps(row), flush=True)
        print(json.dumps({"method": name, "seconds": round(time.perf_counter() - start, 2)}), flush=True)


def run_method(m, cnn, x, t, auto, explicit):
    """The rows of one method: one per setting."""
    attr = build(m, cnn, **SMALLER.get(m.name, {}))
    ref = np.asarray(jax.jit(lambda x, t, k: attr(x, t, key=k))(x, t, KEY))
    batch = NamedSharding(auto, P("b"))

    def auto_run():
        out = jax.jit(lambda x, t, k: attr(x, t, key=k))(
            jax.device_put(x, batch), jax.device_put(t, batch), KEY
        )
        return out, ref

    def explicit_run():
        with jax.set_mesh(explicit):
            xs, ts = jax.device_put(x, P("b")), jax.device_put(t, P("b"))
            out = jax.jit(lambda x, t, k: attr(x, t, key=k))(xs, ts, KEY)
        return out, ref

    def shard_map_run(plain=False):
        inner, reference = attr, ref
        if m.stochastic and not plain:
            inner = per_example(attr, axis_name="b")
            reference = np.asarray(jax.jit(lambda x, t, k: per_example(attr)(x, t, key=k))(x, t, KEY))
        sm = jax.shard_map(
            lambda x, t, k: inner(x, t, key=k),
            mesh=auto,
            in_specs=(P("b"), P("b"), P()),
            out_specs=P("b"),
            check_vma=True,
        )
        return jax.jit(sm)(jax.device_put(x, batch), jax.device_put(t, batch), KEY), reference

    settings = [("auto", auto_run), ("explicit", explicit_run), ("shard_map", shard_map_run)]
    if m.name in BATCH_FREE_DRAWS:
        settings.append(("shard_map_plain", lambda: shard_map_run(plain=True)))
    for setting, run in settings:
        row = {
            "method": m.name,
            "setting": setting,
            "ok": False,
            "rel_err": None,
            "spec": None,
            "sharded": False,
            "error": None,
        }
        try:
            out, reference = run()
            spec = getattr(out.sharding, "spec", None)
            row["spec"] = str(spec)
            scale = max(float(np.max(np.abs(reference))), float(np.finfo(np.float32).tiny))
            row["rel_err"] = float(np.max(np.abs(np.asarray(out) - reference))) / scale
            sharded = spec is not None and len(spec) > 0 and spec[0] in ("b", ("b",))
            row["sharded"] = bool(sharded and out.shape == reference.shape)
            row["ok"] = bool(row["rel_err"] <= RTOL and row["sharded"])
        except Exception as e:  # reported, not raised: one failure must not hide the others
            tb = traceback.extract_tb(e.__traceback__)
            here = [f for f in tb if "jaxsal" in f.filename]
            where = f"{os.path.basename(here[-1].filename)}:{here[-1].lineno}" if here else ""
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]} @ {where}"
        yield row


if __name__ == "__main__":
    main(sys.argv[1:])
