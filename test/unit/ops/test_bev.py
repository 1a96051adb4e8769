import numpy as np
import pytest

from airside_perception.errors import ConfigError
from airside_perception.ops.bev import BevSpec, encode


def test_pillar_statistics_of_a_known_cloud():
    spec = BevSpec(half_extent_m=1.6, resolution_m=0.4, max_pillars=100)  # 8 x 8 cells
    pts = np.array([[0.1, 0.1, 0.0, 100], [0.2, 0.3, 1.0, 200], [-1.5, -1.5, 0.5, 50],
                    [np.nan, 0, 0, 0], [5.0, 0, 0, 0]], np.float32)
    b = encode(pts, spec)
    assert b.kept.tolist() == [0, 1, 2] and b.n_input == 5
    cell = 4 * 8 + 4  # x, y in [0, 0.4)
    raster = b.bev[0].reshape(8, -1)
    assert raster[0, cell] == 1 and raster[2, cell] == pytest.approx(0.25) and raster[3, cell] == 0
    assert raster[4, cell] == pytest.approx(0.125) and raster[5, cell] == pytest.approx(200 / 255)
    assert raster[7, cell] == pytest.approx(0.5)
    assert b.point_cells.tolist() == [cell, cell, 0]
    assert b.point_features[1, 0] == pytest.approx(1.0)  # 1 m above the pillar floor


def test_pillar_capacity_overflow_is_counted_not_fatal():
    spec = BevSpec(half_extent_m=1.6, resolution_m=0.4, max_pillars=4)
    xs = np.linspace(-1.5, 1.5, 8)
    grid = np.array([[x, y, 0, 1] for x in xs for y in xs], np.float32)
    b = encode(grid, spec)
    assert b.overflow_pillars == 60 and b.overflow_points == 60 and len(b.kept) == 4
    assert int(b.bev[0, 0].sum()) == 4


def test_empty_cloud():
    b = encode(np.zeros((0, 4), np.float32), BevSpec())
    assert b.bev.shape == (1, 8, 256, 256) and len(b.kept) == 0 and not b.bev.any()


def test_grid_must_divide_by_eight():
    with pytest.raises(ConfigError, match="multiple of 8"):
        BevSpec(half_extent_m=50.0, resolution_m=0.4)
