"""Display normalisation: hand-computed values, per-example batching, jit == eager."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsal._src import normalize as nz

# One pixel with channels (3, -4, 0), one with (-1, 1, 2): values worked by hand.
M = np.array([[[[3.0, -4.0, 0.0], [-1.0, 1.0, 2.0]]]], np.float32)  # (B=1, H=1, W=2, C=3)


@pytest.mark.parametrize(
    "how, expected",
    [
        ("sum", [-1.0, 2.0]),
        ("abs_sum", [7.0, 4.0]),
        ("max_abs", [4.0, 2.0]),
        ("l2", [5.0, np.sqrt(6.0)]),
    ],
)
def test_reduce_channels_hand_values(how, expected):
    out = nz.reduce_channels(M, how)
    assert out.shape == (1, 1, 2)
    np.testing.assert_allclose(np.asarray(out)[0, 0], expected, rtol=1e-6)


def test_reduce_channels_other_axis_and_bad_name():
    chw = np.moveaxis(M, -1, 1)  # (B, C, H, W)
    np.testing.assert_allclose(nz.reduce_channels(chw, "max_abs", axis=1), nz.reduce_channels(M, "max_abs"))
    with pytest.raises(ValueError, match="how must be one of"):
        nz.reduce_channels(M, "mean")


def test_abs_percentile_hand_values():
    # |m| = 0..4 ; the 50th percentile of [0, 1, 2, 3, 4] is 2.
    m = jnp.array([[0.0, -1.0, 2.0, -3.0, 4.0]])
    out = nz.abs_percentile(m, q=50)
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0, 1.0, 1.0]])
    # q = 100 is a plain max-abs scaling.
    np.testing.assert_allclose(nz.abs_percentile(m, q=100), [[0.0, 0.25, 0.5, 0.75, 1.0]])
    # Linear interpolation between order statistics, as numpy.percentile: P_75 of 0..4 is 3.
    np.testing.assert_allclose(nz.abs_percentile(m, q=75), [[0.0, 1 / 3, 2 / 3, 1.0, 1.0]], rtol=1e-6)


def test_signed_symmetric_hand_values():
    m = jnp.array([[0.0, -1.0, 2.0, -3.0, 4.0]])
    out = nz.signed_symmetric(m, q=50)  # limit P_50(|m|) = 2
    np.testing.assert_allclose(out, [[0.0, -0.5, 1.0, -1.0, 1.0]])
    out = nz.signed_symmetric(m, q=100)  # limit 4: signs and 0 preserved
    np.testing.assert_allclose(out, [[0.0, -0.25, 0.5, -0.75, 1.0]])


def test_minmax_hand_values():
    m = jnp.array([[-2.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(nz.minmax(m), [[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]])


def test_statistics_are_per_example():
    """A huge second example must not change the first example's normalisation."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 5, 6, 3)).astype(np.float32)
    b = 1e6 * rng.normal(size=(1, 5, 6, 3)).astype(np.float32)
    both = np.concatenate([a, b])
    for fn in (nz.abs_percentile, nz.signed_symmetric, nz.minmax):
        np.testing.assert_allclose(fn(both)[:1], fn(a), rtol=1e-6, atol=1e-7, err_msg=fn.__name__)
        np.testing.assert_allclose(fn(both)[1:], fn(b), rtol=1e-6, atol=1e-7, err_msg=fn.__name__)


def test_matches_numpy_loop_reference():
    """Against an obviously-correct per-example NumPy loop."""
    rng = np.random.default_rng(1)
    m = rng.standard_t(2, size=(3, 7, 9)).astype(np.float32)  # heavy tails: clipping matters
    for b in range(3):
        a = np.abs(m[b])
        p = np.percentile(a, 97)
        np.testing.assert_allclose(nz.abs_percentile(m, 97)[b], np.clip(a / p, 0, 1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            nz.signed_symmetric(m, 97)[b], np.clip(m[b] / p, -1, 1), rtol=1e-5, atol=1e-6
        )
        lo, hi = m[b].min(), m[b].max()
        np.testing.assert_allclose(nz.minmax(m)[b], (m[b] - lo) / (hi - lo), rtol=1e-5, atol=1e-6)


def test_ranges_and_zero_maps_have_no_nan():
    z = jnp.zeros((2, 4, 4))
    for fn in (nz.abs_percentile, nz.signed_symmetric, nz.minmax):
        out = fn(z)
        assert not jnp.isnan(out).any(), fn.__name__
        np.testing.assert_array_equal(out, 0)
    m = jax.random.normal(jax.random.key(0), (4, 8, 8, 3)) * 10
    assert 0 <= float(nz.abs_percentile(m).min()) and float(nz.abs_percentile(m).max()) <= 1
    s = nz.signed_symmetric(m)
    assert -1 <= float(s.min()) and float(s.max()) <= 1
    assert float(nz.minmax(m).min()) == 0 and float(nz.minmax(m).max()) == 1


def test_jit_equals_eager_and_q_may_be_traced():
    m = jax.random.normal(jax.random.key(1), (2, 6, 6, 3))
    for fn in (nz.abs_percentile, nz.signed_symmetric):
        np.testing.assert_allclose(jax.jit(fn)(m, 95.0), fn(m, 95.0), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(nz.minmax)(m), nz.minmax(m), rtol=1e-6)
    red = jax.jit(nz.reduce_channels, static_argnames="how")
    np.testing.assert_allclose(red(m, how="l2"), nz.reduce_channels(m, "l2"), rtol=1e-6)


def test_vmap_over_an_extra_axis_equals_loop():
    m = jax.random.normal(jax.random.key(2), (3, 2, 5, 5))
    out = jax.vmap(nz.abs_percentile)(m)
    for i in range(3):
        np.testing.assert_allclose(out[i], nz.abs_percentile(m[i]), rtol=1e-6)


def test_unbatched_input_is_refused_with_a_fix():
    with pytest.raises(ValueError, match=r"m\[None\]"):
        nz.minmax(jnp.ones(5))


def test_integer_maps_are_accepted():
    out = nz.minmax(np.array([[0, 5, 10]], np.int32))
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0]])
