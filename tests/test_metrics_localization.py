"""Reference tests for the pointing game, relevance mass/rank accuracy and max-sensitivity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsal.metrics import max_sensitivity, pointing_game, relevance_mass_accuracy, relevance_rank_accuracy

MASK = jnp.zeros((3, 5, 5), bool).at[:, :2, :2].set(True)  # object: top-left 2x2


def _maps_with_peak(points):
    m = jnp.zeros((len(points), 5, 5))
    for i, (r, c) in enumerate(points):
        m = m.at[i, r, c].set(1.0)
    return m


def test_pointing_game_constructed_maps():
    maps = _maps_with_peak([(0, 1), (4, 4), (2, 2)])
    pg = pointing_game(maps, MASK)
    np.testing.assert_array_equal(pg.hits, [True, False, False])
    np.testing.assert_array_equal(pg.points, [[0, 1], [4, 4], [2, 2]])
    assert float(pg.accuracy) == pytest.approx(1 / 3)
    # (2, 2) is sqrt(2) from the mask corner (1, 1): outside a radius-1 disk, inside radius 2
    np.testing.assert_array_equal(pointing_game(maps, MASK, tolerance=1).hits, [True, False, False])
    np.testing.assert_array_equal(pointing_game(maps, MASK, tolerance=2).hits, [True, False, True])
    # input-shaped maps are summed over channels; jit works
    far = jnp.zeros_like(maps).at[:, 4, 4].set(0.5)
    rgb = jnp.stack([maps, -2 * maps, far], -1)  # channel sum: -1 at the old peak, max at (4, 4)
    assert not bool(pointing_game(rgb, MASK).hits[0])
    np.testing.assert_array_equal(jax.jit(pointing_game)(maps, MASK).hits, pg.hits)


def test_relevance_mass_and_rank_accuracy_by_hand():
    m = jnp.zeros((1, 5, 5))
    m = m.at[0, 0, 0].set(3.0).at[0, 1, 1].set(-5.0).at[0, 4, 4].set(1.0).at[0, 3, 3].set(2.0)
    mask = MASK[:1]
    # positive relevance 3 + 1 + 2 = 6, of which 3 inside
    assert float(relevance_mass_accuracy(m, mask).mean) == pytest.approx(0.5)
    # K = 4 top pixels: 3 (in), 2 (out), 1 (out), then ties at 0 by row-major index: (0, 1) (in)
    assert float(relevance_rank_accuracy(m, mask).mean) == pytest.approx(0.5)
    assert float(relevance_mass_accuracy(-jnp.ones((1, 5, 5)), mask).mean) == 0.0


def test_localization_errors():
    maps = jnp.ones((3, 5, 5))
    with pytest.raises(ValueError, match="empty"):
        pointing_game(maps, MASK.at[1].set(False))
    with pytest.raises(ValueError, match="empty"):
        relevance_mass_accuracy(maps, jnp.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match=r"mask must have the maps' shape"):
        relevance_rank_accuracy(maps, MASK[:, :4])


def _attr_identity(x, target=None, *, key=None):
    return x


def _attr_const(x, target=None, *, key=None):
    return jnp.ones_like(x)


def test_max_sensitivity_closed_form_bounds_and_keys():
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 1))
    k = jax.random.key(1)
    zero = max_sensitivity(_attr_const, x, 0, key=k, radius=0.1, samples=4)
    np.testing.assert_allclose(zero.max_sensitivity, 0.0)
    s = max_sensitivity(_attr_identity, x, 0, key=k, radius=0.1, samples=6, normalize=False)
    # identity map: ||y - x||_2 <= r sqrt(d), and > 0
    assert s.sensitivities.shape == (6, 3)
    assert np.all(np.asarray(s.max_sensitivity) <= 0.1 * 4 + 1e-6) and np.all(
        np.asarray(s.max_sensitivity) > 0
    )
    s2 = max_sensitivity(_attr_identity, x, 0, key=k, radius=0.1, samples=6, normalize=False)
    np.testing.assert_array_equal(s.sensitivities, s2.sensitivities)
    s3 = max_sensitivity(_attr_identity, x, 0, key=jax.random.key(2), radius=0.1, samples=6, normalize=False)
    assert not np.array_equal(s.sensitivities, s3.sensitivities)
    with pytest.raises(ValueError, match="key"):
        max_sensitivity(_attr_identity, x, 0, key=None)
    with pytest.raises(ValueError, match="radius"):
        max_sensitivity(_attr_identity, x, 0, key=k, radius=0.0)
