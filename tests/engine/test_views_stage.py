"""src/sslab/engine/augment.py on its own: the views of every row come from that row's own image (the
memory bank is indexed by ``idx``), every image is viewed exactly once per epoch, seeded views
are a function of (seed, epoch) alone, and every epoch draws fresh views.

The images are position-coded: red is ``idx % 256`` and blue ``40 * (idx // 256)`` over the whole
image, green a random texture. The views keep colours as they are (no jitter, no grayscale) and
crops, flips and jigsaw patches of a constant channel keep its value, so each view's red and blue
channels, un-normalised, read back the index of the image it was cut from; the texture makes
two draws of the same image differ.
"""

import numpy as np
import pytest
import ray

from sslab.methods.views import ImageView, JigsawView, Normalization
from sslab.engine.augment import VIEW_BATCH, EpochViews, make_views, with_views

N = 2 * VIEW_BATCH + 88  # three augmentation batches, the last one partial
SIDE = 16
BLOCKS = 8
#: not CIFAR-10's: a view normalised with other statistics would not decode
STATS = Normalization((0.45, 0.5, 0.35), (0.2, 0.25, 0.3))
VIEWS = [ImageView(name="image", size=SIDE, jitter=0.0, grayscale=0.0),
         JigsawView(name="jigsaw", crop_size=15, patch_size=4, jitter=0.0, grayscale=0.0)]
KEYS = ("image", "jigsaw", "jigsaw_perm")


def _images(idx: np.ndarray) -> np.ndarray:
    texture = np.random.default_rng(0).integers(0, 256, (len(idx), SIDE, SIDE), dtype=np.uint8)
    images = np.empty((len(idx), SIDE, SIDE, 3), dtype=np.uint8)
    images[..., 0] = (idx % 256)[:, None, None]
    images[..., 1] = texture
    images[..., 2] = (40 * (idx // 256))[:, None, None]
    return images


def _label(idx):
    return idx % 7


def decode(view: np.ndarray) -> int:
    """The idx of the image a view (3 x H x W, or patches P x 3 x h x w) was cut from."""
    mean = np.asarray(STATS.mean).reshape(3, 1, 1)
    std = np.asarray(STATS.std).reshape(3, 1, 1)
    pixels = (view.astype(np.float64) * std + mean) * 255
    red, blue = pixels[..., 0, :, :], pixels[..., 2, :, :]
    assert np.ptp(red) < 0.05 and np.ptp(blue) < 0.05, "a constant channel came out varying: colours were changed"
    low, high = red.mean(), blue.mean() / 40
    assert abs(low - round(low)) < 0.05 and abs(high - round(high)) < 0.05, (low, high)
    return int(round(low)) + 256 * int(round(high))


@pytest.fixture(scope="module")
def dataset():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    idx = np.arange(N)
    images, labels = _images(idx), _label(idx)
    yield ray.data.from_items([{"idx": i, "image": images[i], "label": labels[i]} for i in range(N)],
                              override_num_blocks=BLOCKS)
    if started:
        ray.shutdown()


def _epoch(viewed: ray.data.Dataset) -> tuple[list[int], dict[int, dict[str, np.ndarray]]]:
    """One pass: the row order (by idx) and each idx's views, after checking every row is whole
    and its views come from its own image."""
    order, views = [], {}
    for row in viewed.iter_rows():
        i = int(row["idx"])
        assert int(row["label"]) == _label(i), f"row {i} carries another row's label"
        assert decode(row["image"]) == i, f"row {i}'s image view was cut from image {decode(row['image'])}"
        assert decode(row["jigsaw"]) == i, f"row {i}'s jigsaw patches were cut from image {decode(row['jigsaw'])}"
        order.append(i)
        views[i] = {k: np.asarray(row[k]) for k in KEYS}
    assert sorted(order) == list(range(N)), "every image is viewed exactly once per epoch"
    return order, views


def _same(a, b, key):
    return sum(np.array_equal(a[i][key], b[i][key]) for i in a)


# ---------------------------------------------------------------------------- make_views itself


def test_make_views_keeps_each_rows_idx_and_label_with_its_own_views():
    idx = np.array([300, 5, 517, 42, 299])  # not sorted, not contiguous
    batch = {"idx": idx, "image": _images(idx), "label": _label(idx)}
    out = make_views(batch, VIEWS, STATS, seed=(3, 1))
    assert set(out) == {*KEYS, "idx", "label"}
    assert out["idx"].tolist() == idx.tolist() and out["label"].tolist() == _label(idx).tolist()
    assert out["image"].shape == (5, 3, SIDE, SIDE) and out["jigsaw"].shape == (5, 9, 3, 4, 4)
    assert [decode(v) for v in out["image"]] == idx.tolist()
    assert [decode(v) for v in out["jigsaw"]] == idx.tolist()
    # the texture moved: these are random crops, not the image itself
    assert not np.allclose(out["image"][:, 1], STATS.apply(_images(idx).transpose(0, 3, 1, 2) / 255.0)[:, 1])

    no_label = make_views({"idx": idx, "image": _images(idx)}, VIEWS, STATS)
    assert "label" not in no_label and no_label["idx"].tolist() == idx.tolist()

    again = make_views(batch, VIEWS, STATS, seed=(3, 1))
    assert all(np.array_equal(out[k], again[k]) for k in KEYS)  # seeded: a function of seed and rows
    other_epoch = make_views(batch, VIEWS, STATS, seed=(3, 2))
    unseeded = [make_views(batch, VIEWS, STATS) for _ in range(2)]
    for a, b in ((out, other_epoch), tuple(unseeded)):
        assert not any(np.array_equal(a["image"][j], b["image"][j]) for j in range(len(idx)))


# ---------------------------------------------------------------------------- the Ray Data stage


def test_every_row_gets_views_of_its_own_image_exactly_once_per_epoch(dataset):
    """Seeded and unseeded, over several blocks and batches (the last one partial)."""
    for seed in ((0, 0), None):
        _, views = _epoch(with_views(dataset, VIEWS, stats=STATS, seed=seed))
        assert len(views) == N
        assert views[N - 1]["image"].shape == (3, SIDE, SIDE)


def test_seeded_views_are_a_function_of_seed_and_epoch_and_fresh_every_epoch(dataset):
    def epoch(seed, epoch):
        viewed = with_views(dataset, VIEWS, stats=STATS, seed=(seed, epoch))
        # what keeps the order when tasks finish out of turn (rare on 2 CPUs: checked directly)
        assert viewed.context.execution_options.preserve_order
        return _epoch(viewed)

    order, views = epoch(7, 1)
    order_again, views_again = epoch(7, 1)  # the same trial and epoch, e.g. a rerun or a resume
    assert order_again == order
    for key in KEYS:
        assert _same(views, views_again, key) == N, key

    order_next, views_next = epoch(7, 2)  # the next epoch: new views of every image, new block order
    assert _same(views, views_next, "image") == 0 and _same(views, views_next, "jigsaw") == 0
    assert _same(views, views_next, "jigsaw_perm") < N // 20
    assert order_next != order

    _, views_other_seed = epoch(8, 1)  # another seed, the same epoch
    assert _same(views, views_other_seed, "image") == 0


def test_unseeded_views_are_drawn_afresh_each_time_the_dataset_runs(dataset):
    """A TorchTrainer trial iterates the same dataset once per epoch: each pass draws new views."""
    viewed = with_views(dataset, VIEWS, stats=STATS)
    _, first = _epoch(viewed)
    _, second = _epoch(viewed)
    assert _same(first, second, "image") == 0 and _same(first, second, "jigsaw") == 0
    _, third = _epoch(with_views(dataset, VIEWS, stats=STATS))
    assert _same(first, third, "image") == 0


def test_a_seeded_pipeline_leaves_the_order_of_other_pipelines_on_the_same_data_alone(dataset):
    idx = np.arange(16)  # a dataset of its own: the fixture's has met seeded pipelines already
    source = ray.data.from_items([{"idx": i, "image": image, "label": 0} for i, image in zip(idx, _images(idx))])
    assert not source.context.execution_options.preserve_order
    with_views(source, VIEWS, stats=STATS, seed=(0, 0))
    assert not source.context.execution_options.preserve_order
    assert not with_views(source, VIEWS, stats=STATS).context.execution_options.preserve_order


def _shard(viewed: ray.data.Dataset) -> tuple[list[int], dict[int, dict[str, np.ndarray]]]:
    """One worker's pass: its row order and views, each row checked against its own image."""
    order, views = [], {}
    for row in viewed.iter_rows():
        i = int(row["idx"])
        assert decode(row["image"]) == i and decode(row["jigsaw"]) == i and int(row["label"]) == _label(i)
        order.append(i)
        views[i] = {k: np.asarray(row[k]) for k in KEYS}
    return order, views


def test_epoch_views_deal_every_image_once_to_equal_shards_the_same_way_on_every_retry(dataset):
    """What a TorchTrainer's workers read: each builds its own shard from the trial's seed, so the
    shards of one epoch must partition the images into equal parts (DDP steps in lock-step), and
    a restarted worker group must see exactly the shards, order and views it saw before."""
    epoch_views = EpochViews(dataset, VIEWS, STATS, seed=3)
    world = 3
    first = [_shard(epoch_views(0, rank, world)) for rank in range(world)]
    dealt = [i for order, _ in first for i in order]
    assert sorted(dealt) == list(range(N)), "every image in exactly one shard"
    assert len({len(order) for order, _ in first}) == 1, "equal shards"

    retry = _shard(epoch_views(0, 1, world))  # rank 1's worker, restarted
    assert retry[0] == first[1][0] and all(np.array_equal(retry[1][i][k], first[1][1][i][k]) for i in retry[0] for k in KEYS)

    later = [_shard(epoch_views(1, rank, world)) for rank in range(world)]
    assert [set(o) for o, _ in later] != [set(o) for o, _ in first], "each epoch deals the images anew"
    assert sorted(i for order, _ in later for i in order) == list(range(N))
    single = _shard(epoch_views(0))  # one worker: the whole epoch, as with_views(seed=(seed, epoch))
    assert single[0] == _shard(with_views(dataset, VIEWS, stats=STATS, seed=(3, 0)))[0]
    with pytest.raises(ValueError, match="rank 3 is outside a worker group of 3"):
        epoch_views(0, 3, world)
