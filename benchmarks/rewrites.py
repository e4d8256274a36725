"""Do the convolution speed rewrites pay? ``python -m benchmarks.rewrites [--quick]``.

For each model (a standard MobileNet-style Flax model written with
``nn.Conv(feature_group_count=C)``, and the standard small CNN of
:mod:`benchmarks.flax_models`), batch and method (``vanilla_grad``,
``guided_backprop``), the jitted attribution is compiled (timed apart) under each
``jaxsal.config.rewrites`` mode, then the modes, the *floor* (plain ``jax.grad`` of
the summed target scores of the unmodified model) and, when torch + captum are
installed, Captum's ``Saliency`` / ``GuidedBackprop`` on a PyTorch twin with the same
weights, are called in turn (interleaved), ``runs`` times each. Reported: medians in
ms, each mode's ratio to ``off``, to the floor and to Captum, and the load average
before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxsal
from benchmarks.flax_models import small_cnn
from jaxsal._src import config, rewrites

MODES = ("off", "auto", "all")


class MobileNetStyle(nn.Module):
    """stem 3x3/2 conv, then (1x1 expand, 3x3 depthwise (stride), ReLU6, 1x1 project) blocks, GAP, dense.

    Written as a user would: ``nn.Conv(C, (3, 3), feature_group_count=C)`` for the
    depthwise convolutions, ``nn.Conv(C, (1, 1))`` for the pointwise ones.
    """

    num_classes: int = 10
    widths: tuple = ((16, 1), (24, 2), (32, 2), (64, 2))

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu6(nn.Conv(16, (3, 3), strides=2, padding=1, name="stem")(x))
        c = 16
        for i, (w, s) in enumerate(self.widths):
            mid = 4 * c
            h = jax.nn.relu6(nn.Conv(mid, (1, 1), name=f"b{i}_expand")(x))
            h = nn.Conv(mid, (3, 3), strides=s, padding=1, feature_group_count=mid, name=f"b{i}_dw")(h)
            h = jax.nn.relu6(h)
            h = nn.Conv(w, (1, 1), name=f"b{i}_project")(h)
            x = x + h if (s == 1 and w == c) else h
            c = w
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


def mobilenet(size: int = 96, num_classes: int = 10, seed: int = 0):
    module = MobileNetStyle(num_classes)
    variables = module.init(jax.random.key(seed), jnp.zeros((1, size, size, 3), jnp.float32))
    return module, variables


def torch_twin(name: str, module, variables):
    """A PyTorch model with the same function and weights, or None (torch not installed)."""
    try:
        import torch
    except ImportError:
        return None
    p = jax.tree.map(np.asarray, variables["params"])

    def conv(q, stride, pad, groups=1):
        k = q["kernel"]  # HWIO (depthwise: kh, kw, 1, C)
        m = torch.nn.Conv2d(k.shape[2] * groups, k.shape[3], k.shape[:2], stride, pad, groups=groups)
        m.weight.data = torch.tensor(k.transpose(3, 2, 0, 1).copy())
        m.bias.data = torch.tensor(q["bias"])
        return m

    def dense(q):
        m = torch.nn.Linear(*q["kernel"].shape)
        m.weight.data = torch.tensor(q["kernel"].T.copy())
        m.bias.data = torch.tensor(q["bias"])
        return m

    if name == "small_cnn":
        from benchmarks import torch_models
        from benchmarks.weights import flax_to_torch

        size = 4 * int(round((variables["params"]["fc1"]["kernel"].shape[0] // 32) ** 0.5))
        chw = {"fc1": (32, size // 4, size // 4)}
        return flax_to_torch(variables, torch_models.ParityCNN(size), chw).eval()

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv(p["stem"], 2, 1)
            blocks, c = [], 16
            for i, (w, s) in enumerate(module.widths):
                mid = 4 * c
                blocks.append(
                    torch.nn.ModuleList(
                        [
                            conv(p[f"b{i}_expand"], 1, 0),
                            torch.nn.ReLU6(),
                            conv(p[f"b{i}_dw"], s, 1, groups=mid),
                            torch.nn.ReLU6(),
                            conv(p[f"b{i}_project"], 1, 0),
                        ]
                    )
                )
                blocks[-1].residual = s == 1 and w == c
                c = w
            self.blocks = torch.nn.ModuleList(blocks)
            self.act = torch.nn.ReLU6()
            self.head = dense(p["head"])

        def forward(self, x):
            x = self.act(self.stem(x))
            for b in self.blocks:
                h = x
                for m in b:
                    h = m(h)
                x = x + h if b.residual else h
            return self.head(x.mean((2, 3)))

    return Twin().eval()


def _time(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def bench(name: str, module, variables, size: int, batch: int, method: str, runs: int) -> dict:
    x = jax.random.normal(jax.random.key(1), (batch, size, size, 3), jnp.float32)
    t = jnp.zeros((batch,), jnp.int32) + 3

    def f(v, x):
        return module.apply(v, x)

    factory = {"vanilla_grad": jaxsal.vanilla_grad, "guided_backprop": jaxsal.guided_backprop}[method]
    fns, compile_s = {}, {}
    for mode in MODES:
        with config.using(rewrites=False if mode == "off" else mode):
            jitted = jax.jit(lambda v, x, t: factory(lambda x: f(v, x))(x, t))
            t0 = time.perf_counter()
            fns[mode] = jitted.lower(variables, x, t).compile()
            compile_s[mode] = time.perf_counter() - t0

    def floor(v, x, t):
        return jax.grad(lambda x: jnp.take_along_axis(f(v, x), t[:, None], 1).sum())(x)

    fns["floor"] = jax.jit(floor).lower(variables, x, t).compile()
    calls = {k: (lambda fn=fn: fn(variables, x, t)) for k, fn in fns.items()}
    ref = np.asarray(calls["off"]())
    err = {m: float(np.max(np.abs(np.asarray(calls[m]()) - ref))) for m in MODES}

    twin = torch_twin(name, module, variables)
    if twin is not None:
        try:
            import captum.attr as ca
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
            xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
            tt = torch.tensor(np.asarray(t), dtype=torch.long)
            cls = {"vanilla_grad": lambda m: ca.Saliency(m), "guided_backprop": ca.GuidedBackprop}[method]
            explainer = cls(twin)
            kw = {"abs": False} if method == "vanilla_grad" else {}
            calls["captum"] = lambda: explainer.attribute(xt, target=tt, **kw)
        except ImportError:
            pass
    for c in calls.values():
        c()
    times: dict = {k: [] for k in calls}
    for _ in range(runs):
        for k, c in calls.items():
            times[k].append(_time(c))
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "batch": batch,
        "method": method,
        "ms": med,
        "compile_s": compile_s,
        "max_abs_err": err,
    }


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs and workloads")
    ap.add_argument("--runs", type=int, default=None)
    args = ap.parse_args(argv)
    runs = args.runs or (5 if args.quick else 15)
    workloads = [("mobilenet", 96, b) for b in ((1, 16) if args.quick else (1, 8, 16))]
    workloads += [("small_cnn", 32, b) for b in ((8,) if args.quick else (1, 8, 32))]
    methods = ("vanilla_grad",) if args.quick else ("vanilla_grad", "guided_backprop")
    print(f"loadavg before: {open('/proc/loadavg').read().strip()}  backend={jax.default_backend()}")
    print(f"auto on this backend: {rewrites.selected('auto')}")
    hdr = "model      B  method            off ms  auto/off all/off auto/floor floor ms captum ms auto/captum compile off/auto/all s"
    print(hdr)
    rows = []
    for name, size, batch in workloads:
        module, variables = mobilenet(size) if name == "mobilenet" else small_cnn(size)
        for method in methods:
            r = bench(name, module, variables, size, batch, method, runs)
            rows.append(r)
            ms, cs = r["ms"], r["compile_s"]
            cap = ms.get("captum", float("nan"))
            print(
                f"{name:10s} {batch:2d} {method:16s} {ms['off']:8.2f} {ms['auto'] / ms['off']:8.2f} "
                f"{ms['all'] / ms['off']:7.2f} {ms['auto'] / ms['floor']:9.2f} {ms['floor']:8.2f} "
                f"{cap:9.2f} {ms['auto'] / cap:10.2f}   {cs['off']:.1f}/{cs['auto']:.1f}/{cs['all']:.1f}"
                f"   err {max(r['max_abs_err'].values()):.1e}",
                flush=True,
            )
    print(f"loadavg after: {open('/proc/loadavg').read().strip()}")
    return rows


if __name__ == "__main__":
    main()
