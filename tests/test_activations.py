import numpy as np
import pytest

from imgidx.search.activations import PAD_VALUE, activation_grid, normalise_channels


def _maps(h: int, w: int, c: int) -> np.ndarray:
    """Channel k is a ramp 0..h·w−1 scaled by 10^(k mod 4) and shifted by k: wildly different ranges."""
    ramp = np.arange(h * w, dtype=np.float32).reshape(h, w)
    return np.stack([ramp * 10.0 ** (k % 4) + k for k in range(c)], axis=-1)


def test_grid_has_16_tiles_per_row_with_padding():
    image = activation_grid(_maps(5, 7, 20))
    assert image.mode == "L"
    # 20 channels → 2 rows of at most 16; each tile takes (h + pad) × (w + pad).
    assert image.size == (16 * (7 + 1), 2 * (5 + 1))


def test_fewer_channels_than_per_row_make_one_short_row():
    image = activation_grid(_maps(3, 3, 4), per_row=16, pad=2)
    assert image.size == (4 * (3 + 2), 1 * (3 + 2))


def test_every_channel_is_normalised_on_its_own():
    maps = _maps(2, 3, 3)
    tiles = normalise_channels(maps)
    expected = np.array([[0, 51, 102], [153, 204, 255]], dtype=np.uint8)
    for k in range(3):
        np.testing.assert_array_equal(tiles[:, :, k], expected)


def test_constant_channel_becomes_black_and_gaps_are_white():
    maps = np.zeros((2, 2, 3), dtype=np.float32)
    maps[:, :, 0] = [[1.0, 2.0], [3.0, 5.0]]
    maps[:, :, 1] = 7.0  # constant
    maps[:, :, 2] = [[-4.0, -4.0], [-4.0, 0.0]]
    grid = np.asarray(activation_grid(maps, per_row=2, pad=1))
    assert grid.shape == (2 * 3, 2 * 3)
    np.testing.assert_array_equal(grid[0:2, 0:2], [[0, 64], [128, 255]])  # (v − 1) / 4 · 255, rounded
    np.testing.assert_array_equal(grid[0:2, 3:5], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(grid[3:5, 0:2], [[0, 0], [0, 255]])
    assert (grid[2, :] == PAD_VALUE).all() and (grid[:, 2] == PAD_VALUE).all()
    assert (grid[3:5, 3:5] == PAD_VALUE).all()  # the empty fourth slot


def test_channel_lands_in_row_major_slot():
    maps = np.zeros((4, 4, 18), dtype=np.float32)
    maps[0, 0, 17] = 1.0  # channel 17 → second row, second column
    grid = np.asarray(activation_grid(maps, pad=0))
    assert grid.shape == (8, 64)
    assert (grid[4:8, 8:] == PAD_VALUE).all()  # slots 18..31 are empty
    assert np.argwhere(grid[:, :8] == 255).tolist() == [[4, 4]]
    assert not grid[:4, 8:].any()


def test_leading_batch_axis_of_one_is_dropped():
    maps = _maps(3, 3, 5)
    np.testing.assert_array_equal(np.asarray(activation_grid(maps[None])), np.asarray(activation_grid(maps)))


def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match=r"shape \(h, w, c\).*received \(3, 3\)"):
        activation_grid(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="numpy array"):
        activation_grid([[[0.0]]])
    with pytest.raises(ValueError, match="per_row must be an integer >= 1; received 0"):
        activation_grid(_maps(2, 2, 2), per_row=0)
    with pytest.raises(ValueError, match="pad must be an integer >= 0; received -1"):
        activation_grid(_maps(2, 2, 2), pad=-1)
    with pytest.raises(ValueError, match="NaN"):
        activation_grid(np.full((2, 2, 1), np.nan))
