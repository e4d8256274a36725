"""Parity of jaxsal's metrics with Quantus 0.6 on the same maps (float64).

Run ``python -m benchmarks.quantus_parity`` (needs torch and quantus; see
``tests/test_parity_quantus.py`` for the installation). For each metric both libraries
implement deterministically, the same maps (and, for faithfulness correlation, the same
model, as a PyTorch twin in float64, and the same pixel subsets) go through both; the
table lists ``max |jaxsal - quantus|`` over the batch.

Choices that make the two comparable (each is a documented option of Quantus):

* Single-channel inputs ``(B, 1, H, W)`` for Quantus, ``(B, H, W, 1)`` for jaxsal: then
  Quantus' features (elements of the attribution) are jaxsal's pixels.
* ``normalise=False`` everywhere (the metrics compared are scale invariant, but the
  normalisation adds a division).
* Non-negative maps for the localisation metrics: Quantus' ``AttributionLocalisation``
  uses ``|R|`` and ``RelevanceMassAccuracy`` the signed sum, where the papers (and
  jaxsal) use the positive part; on non-negative maps all three agree.
* Faithfulness correlation: ``perturb_baseline=0.0`` (Quantus' default "black" is the
  image minimum), ``softmax=False`` (logits), and ``numpy.random.choice`` replaced for
  the call so that Quantus draws exactly the subsets given to jaxsal.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

B, H, W = 4, 12, 12
RUNS, SUBSET = 16, 10


def import_quantus():
    """Quantus imports Zennit when it is installed, and Zennit imports torchvision."""
    from benchmarks import zennit_shim

    with contextlib.suppress(ImportError):
        zennit_shim.import_zennit()
    import quantus

    return quantus


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(B, H, W)).astype(np.float32).astype(np.float64)  # float32-exact
    maps = rng.uniform(size=(B, H, W)) ** 3  # non-negative, skewed
    masks = np.zeros((B, H, W), bool)
    for b in range(B):
        r, c = rng.integers(0, H - 5, 2)
        masks[b, r : r + 5, c : c + 4] = True
    subsets = np.stack(
        [np.stack([rng.choice(H * W, SUBSET, replace=False) for _ in range(RUNS)]) for _ in range(B)]
    )
    w1 = rng.normal(size=(H * W, 8)) / np.sqrt(H * W)
    w2 = rng.normal(size=(8, 3))
    y = rng.integers(0, 3, B)
    return x, maps, masks, subsets, (w1, w2), y


def torch_model(weights):
    import torch
    from torch import nn

    w1, w2 = weights

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(H * W, 8, bias=False, dtype=torch.float64)
            self.fc2 = nn.Linear(8, 3, bias=False, dtype=torch.float64)
            with torch.no_grad():
                self.fc1.weight.copy_(torch.from_numpy(w1.T))
                self.fc2.weight.copy_(torch.from_numpy(w2.T))

        def forward(self, x):
            return self.fc2(torch.tanh(self.fc1(x.double().reshape(x.shape[0], -1))))

    return Twin().eval()


def jax_model(weights):
    import jax.numpy as jnp

    w1, w2 = (jnp.asarray(w, jnp.float64) for w in weights)
    return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2


@contextlib.contextmanager
def fixed_choice(subsets):
    """Make ``numpy.random.choice`` return ``subsets[b, r]`` in Quantus' call order (runs outer)."""
    queue = [subsets[b, r] for r in range(subsets.shape[1]) for b in range(subsets.shape[0])]
    original = np.random.choice

    def choice(n, size=None, replace=True, p=None):
        s = queue.pop(0)
        assert size == len(s) and not replace
        return np.array(s)

    np.random.choice = choice
    try:
        yield
    finally:
        np.random.choice = original
    assert not queue, "Quantus drew fewer subsets than given"


def rows(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (jaxsal per-example scores, quantus per-example scores)``."""
    import jax
    import jax.numpy as jnp

    from jaxsal.metrics.concentration import complexity, sparseness
    from jaxsal.metrics.fidelity import faithfulness_correlation
    from jaxsal.metrics.localization import (
        attribution_localisation,
        relevance_mass_accuracy,
        top_k_intersection,
    )

    quantus = import_quantus()
    x, maps, masks, subsets, weights, y = data(seed)
    xq, aq, sq = x[:, None], maps[:, None], masks[:, None].astype(float)
    common = dict(normalise=False, return_aggregate=False, disable_warnings=True, display_progressbar=False)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = {
            "sparseness": quantus.Sparseness(abs=True, **common)(
                model=None, x_batch=xq, y_batch=y, a_batch=aq
            ),
            "complexity": quantus.Complexity(abs=True, **common)(
                model=None, x_batch=xq, y_batch=y, a_batch=aq
            ),
            "top_k_intersection": quantus.TopKIntersection(k=20, abs=False, **common)(
                model=None, x_batch=xq, y_batch=y, a_batch=aq, s_batch=sq
            ),
            "attribution_localisation": quantus.AttributionLocalisation(abs=True, **common)(
                model=None, x_batch=xq, y_batch=y, a_batch=aq, s_batch=sq
            ),
            "relevance_mass_accuracy": quantus.RelevanceMassAccuracy(abs=False, **common)(
                model=None, x_batch=xq, y_batch=y, a_batch=aq, s_batch=sq
            ),
        }
        with fixed_choice(subsets):
            q["faithfulness_correlation"] = quantus.FaithfulnessCorrelation(
                nr_runs=RUNS, subset_size=SUBSET, abs=False, perturb_baseline=0.0, **common
            )(model=torch_model(weights), x_batch=xq.astype(np.float32), y_batch=y, a_batch=aq, softmax=False)
    with jax.enable_x64(True):
        m, s = jnp.asarray(maps), jnp.asarray(masks)
        j = {
            "sparseness": sparseness(m).per_example,
            "complexity": complexity(m).per_example,
            "top_k_intersection": top_k_intersection(m, s, k=20).per_example,
            "attribution_localisation": attribution_localisation(m, s).per_example,
            "relevance_mass_accuracy": relevance_mass_accuracy(m, s).per_example,
            "faithfulness_correlation": faithfulness_correlation(
                jax_model(weights), jnp.asarray(x)[..., None], m, jnp.asarray(y), subsets=jnp.asarray(subsets)
            ).correlation,
        }
        for name in q:
            out[name] = (np.asarray(j[name], np.float64), np.asarray(q[name], np.float64))
    return out


def main() -> None:
    print("| metric | max abs diff | jaxsal (mean) | quantus (mean) |")
    print("| --- | ---: | ---: | ---: |")
    for name, (a, b) in rows().items():
        print(f"| {name} | {np.abs(a - b).max():.2e} | {a.mean():.6f} | {b.mean():.6f} |")


if __name__ == "__main__":
    main()
