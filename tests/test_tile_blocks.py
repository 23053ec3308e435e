"""A job's tiles as blocks: expanded one at a time, they are exactly the job's tiles, in order."""

import numpy as np
import shapely

from tfchips.grid import tile_indices_for_shape, tile_indices_in_rows, tiles_for_shape
from tfchips.tile_blocks import MAX_BLOCKS, TileSource

# Across the zone 31/32 edge at 6 degrees east: a polygon with a hole, a line and points.
AREA = shapely.GeometryCollection([
    shapely.Polygon(
        [(5.97, 45.0), (6.03, 45.0), (6.03, 45.04), (5.97, 45.04)], [[(5.99, 45.01), (6.01, 45.01), (6.0, 45.03)]]
    ),
    shapely.LineString([(5.9, 45.1), (6.1, 45.12)]),
    shapely.MultiPoint([(5.95, 44.95), (6.05, 45.2)]),
])


def test_some_rows_of_an_area_are_those_rows_of_all_its_tiles():
    every = tile_indices_for_shape(AREA, 10.0, 16)
    for zone in np.unique(every[:, 0]):
        rows = np.unique(every[every[:, 0] == zone, 2])
        for first, last in [(rows[0], rows[0]), (rows[5], rows[len(rows) // 2]), (rows[0], rows[-1]), (rows[-1] + 1, rows[-1] + 9)]:
            expected = every[(every[:, 0] == zone) & (every[:, 2] >= first) & (every[:, 2] <= last)]
            got = tile_indices_in_rows(AREA, 10.0, 16, int(zone), (int(first), int(last)))
            np.testing.assert_array_equal(got, expected)


def test_the_blocks_of_an_area_expand_to_its_tiles_in_order():
    source, blocks = TileSource.of_area(AREA, 2.0, 16, 2)
    tiles = tiles_for_shape(AREA, 2.0, 16, 2)
    assert source.count == len(tiles) > 10 * MAX_BLOCKS
    assert MAX_BLOCKS // 2 <= len(blocks) <= MAX_BLOCKS + 2  # about MAX_BLOCKS, cut at the zone edge too
    assert source.tiles(blocks) == tiles
    assert all(len({tile.zone for tile in source.block_tiles(block)}) == 1 for block in blocks)


def test_a_small_area_gets_a_block_per_row():
    source, blocks = TileSource.of_area(shapely.box(6.1, 45.0, 6.104, 45.004), 10.0, 16)
    assert len(blocks) == len({tile.tj for tile in source.tiles(blocks)}) and source.count == len(source.tiles(blocks))


def test_the_blocks_of_a_tiles_file_are_its_distinct_tiles_in_order(tmp_path):
    tiles = tiles_for_shape(AREA, 10.0, 16)[:700]
    path = tmp_path / "tiles.txt"
    path.write_text("\n".join(t.key for t in [*tiles, tiles[3]]) + "\n")  # a repeat counts once
    source, blocks = TileSource.of_file(str(path))
    assert source.count == 700 and len(blocks) <= MAX_BLOCKS
    assert source.tiles(blocks) == tiles
