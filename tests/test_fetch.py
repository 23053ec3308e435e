"""Issue #18, items 1-3: a STAC API searched once per block of tiles, each byte of a COG fetched
once per worker, one warp per scene; pixels exactly as the read path before (kept as the
benchmarks' baseline in `benchmarks.legacy_read`)."""

import numpy as np
import pytest
import rasterio

from benchmarks import legacy_read
from benchmarks.loopback import Service, make_world, tile_grid
from tfchips.imagery import ImageryRequest, imagery_for_tile
from tfchips.sources import items, warp
from tfchips.sources.dataset_pool import DatasetPool, worker_pool
from tfchips.sources.search_blocks import block_of

# 4 x 4 tiles of 64 px at 30 m, all in one block of 16 x 16 tiles.
TILES = tile_grid(4, 64, 30.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(str(tmp_path_factory.mktemp("world")), TILES, blocksize=128)


@pytest.fixture(scope="module")
def tie_world(tmp_path_factory):
    # Scene pixels half a pixel off the tile grid: nearest resampling meets a tie at every pixel.
    return make_world(str(tmp_path_factory.mktemp("ties")), TILES, dates=2, blocksize=128, offset=15.0)


@pytest.fixture
def service(world):
    with Service(world) as running:
        yield running


def _imagery(world, catalog, **options):
    request = ImageryRequest.from_options(world.options(catalog, **options))
    return [imagery_for_tile(tile, request) for tile in TILES]


def _legacy(monkeypatch):
    monkeypatch.setenv("TFCHIPS_STAC_SEARCH_BLOCK", "1")
    monkeypatch.setattr(items, "read_bands_and_masks", legacy_read._legacy_bands_and_masks)
    monkeypatch.setattr(items, "read_bands", legacy_read.legacy_read_bands)


def _same(ours, before):
    for new, old in zip(ours, before):
        assert new.scenes == old.scenes
        assert new.data.dtype == old.data.dtype and np.array_equal(new.data, old.data)
        assert np.array_equal(new.valid, old.valid)


def test_the_tiles_share_one_block():
    assert len({block_of(tile, 16) for tile in TILES}) == 1


def test_one_search_for_the_block_with_an_explicit_page_limit(world, service, monkeypatch):
    monkeypatch.setenv("TFCHIPS_STAC_PAGE_LIMIT", "4")
    ours = _imagery(world, service.url)
    # Both footprints x 3 dates meet the block: 6 items, pages of 4.
    assert service.log.searches == 1 and service.log.limits == [4] and service.log.pages == 2
    assert all(result.valid_fraction > 0 for result in ours)


def test_blocks_of_one_tile_search_per_tile_and_assign_the_same_scenes(world, service, monkeypatch):
    ours = _imagery(world, service.url, method="median")
    assert service.log.searches == 1 and service.log.limits == [100]
    service.log.reset()
    monkeypatch.setenv("TFCHIPS_STAC_SEARCH_BLOCK", "1")
    per_tile = _imagery(world, service.url, method="median")
    assert service.log.searches == len(TILES)
    # Tiles in the west see only the west footprint's 3 scenes, and the block search agrees.
    counts = [len(result.scenes) for result in per_tile]
    assert min(counts) == 3 and max(counts) == 6
    _same(ours, per_tile)


def test_each_byte_is_fetched_once_by_a_worker(world, service, monkeypatch):
    _imagery(world, service.url, method="median")
    assert service.log.fetched() == service.log.unique()
    # The same job as before #18 fetches the blocks that neighbouring tiles share again.
    service.log.reset()
    _legacy(monkeypatch)
    _imagery(world, service.url, method="median")
    assert service.log.fetched() > 1.5 * service.log.unique()


@pytest.mark.parametrize("resampling, warps", [("nearest", 1), ("bilinear", 2)])
def test_one_warp_per_scene_carries_bands_masks_and_coverage(world, monkeypatch, resampling, warps):
    calls = []
    real = warp.reproject
    def counted(source, *args, **kwargs):
        calls.append(source.shape)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(warp, "reproject", counted)
    request = ImageryRequest.from_options(world.options(world.catalog, method="median", resampling=resampling))
    imagery_for_tile(TILES[5], request)
    # The tile lies where the footprints overlap: median reads all 6 scenes. Nearest: 4 bands,
    # the bit mask and each file's coverage in one call per scene; bilinear: the 4 bands in a
    # second call, their nodata kept out of the kernel.
    assert len(calls) == warps * 6
    layers = sorted(shape[0] for shape in calls)
    if resampling == "nearest":
        assert all(count >= 4 + 1 + 1 for count in layers)  # bands, mask, at least one coverage
    else:
        assert layers[:6] == [2] * 6 and layers[6:] == [4] * 6  # mask + coverage; the bilinear bands


@pytest.mark.parametrize(
    "method, resampling",
    [("closest", "nearest"), ("median", "nearest"), ("median", "bilinear"), ("latest", "bilinear"),
     ("least-cloudy", "nearest")],
)
def test_pixels_are_those_of_the_read_path_before(world, tie_world, monkeypatch, method, resampling):
    for where in (world, tie_world):
        ours = _imagery(where, where.catalog, method=method, resampling=resampling)
        with monkeypatch.context() as patch:
            _legacy(patch)
            before = _imagery(where, where.catalog, method=method, resampling=resampling)
        _same(ours, before)
        assert any(0 < result.valid_fraction < 1 for result in ours)  # clouds and edges were masked


def test_pixels_through_the_api_equal_local_files(world, service):
    _same(_imagery(world, service.url, method="median"), _imagery(world, world.catalog, method="median"))


def test_open_datasets_are_bounded_and_the_oldest_closes_first(world, monkeypatch):
    monkeypatch.setenv("TFCHIPS_OPEN_RASTERS", "3")
    pool = worker_pool()
    assert pool.size == 3
    paths = [f"{world.root}/files/scene-0-0-{band}.tif" for band in ("blue", "green", "red", "nir")]
    opened = [pool.get(path) for path in paths]
    assert len(pool) == 3 and opened[0].closed and not any(d.closed for d in opened[1:])
    assert pool.get(paths[3]) is opened[3]


def test_a_local_file_rewritten_since_it_was_opened_is_opened_again(tmp_path):
    path = str(tmp_path / "a.tif")

    def write(value, width):
        profile = dict(driver="GTiff", width=width, height=4, count=1, dtype="uint8", crs="EPSG:32613",
                       transform=rasterio.Affine(30, 0, 0, 0, -30, 120))
        with rasterio.open(path, "w", **profile) as dataset:
            dataset.write(np.full((1, 4, width), value, dtype=np.uint8))

    pool = DatasetPool(2)
    write(1, 4)
    first = pool.get(path)
    assert first.read(1)[0, 0] == 1
    write(2, 5)
    assert pool.get(path).read(1)[0, 0] == 2
    assert first.closed and len(pool) == 1
