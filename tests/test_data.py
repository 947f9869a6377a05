"""Tests of the procedural shapes benchmark (:mod:`captum_fvit.data`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from captum_fvit.data import (
    CLASS_NAMES,
    NUM_CLASSES,
    SPLIT_SEEDS,
    ShapesBenchmark,
    ShapesConfig,
    class_index,
    rasterize_shape,
    render_batch,
    sample_labels,
    shape_area,
)
from captum_fvit.data.distractors import KEEP_OUT
from captum_fvit.data.rng import counter_uniform
from captum_fvit.data.shapes import UNIT_AREA, shape_sdf_pixels

N_STATS = 600
SEED = 12345


@pytest.fixture(scope="module")
def big():
    """600 rendered images of one stream, shared by the statistical tests."""
    return render_batch(SEED, range(N_STATS), 64)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_is_bit_identical():
    a = render_batch(7, range(24), 64)
    b = render_batch(7, range(24), 64)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.masks, b.masks)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.coverage, b.coverage)


def test_different_seeds_give_different_images():
    a = render_batch(0, range(16), 64)
    b = render_batch(1, range(16), 64)
    per_image = (a.images - b.images).abs().flatten(1).amax(dim=1)
    assert bool((per_image > 0.1).all())
    assert not torch.equal(a.masks, b.masks)


def test_different_indices_give_different_images():
    r = render_batch(0, range(12), 64)
    flat = r.images.flatten(1)
    for i in range(12):
        for j in range(i + 1, 12):
            assert not torch.equal(flat[i], flat[j])


def test_item_alone_equals_item_in_batch_any_chunking_and_order():
    ds = ShapesBenchmark(size=60, image_size=64, seed=3)
    full = ds.batch(range(60))
    for i in (0, 1, 5, 17, 59):
        item = ds[i]
        assert torch.equal(item["image"], full["image"][i])
        assert torch.equal(item["mask"], full["mask"][i])
        assert item["label"] == int(full["label"][i])
    order = np.random.default_rng(0).permutation(60)
    shuffled = render_batch(3, order, 64, batch_size=7)
    assert torch.equal(shuffled.images, full["image"][order])
    assert torch.equal(shuffled.masks, full["mask"][order])
    assert torch.equal(shuffled.labels, full["label"][order])


def test_independent_of_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = render_batch(2, range(20), 64)
        torch.set_num_threads(2)
        b = render_batch(2, range(20), 64)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)


def test_object_parameters_do_not_depend_on_image_size():
    small = render_batch(8, range(12), 64)
    large = render_batch(8, range(12), 128)
    assert torch.equal(small.labels, large.labels)
    assert torch.equal(small.params["area_fraction"], large.params["area_fraction"])
    # Same relative position (up to the fixed 1-px border).
    assert torch.allclose(2 * small.params["center"], large.params["center"], atol=2.0)
    frac_s = small.masks.float().mean(dim=(1, 2, 3))
    frac_l = large.masks.float().mean(dim=(1, 2, 3))
    assert torch.allclose(frac_s, frac_l, atol=0.01)


def test_counter_rng_depends_only_on_seed_domain_index():
    idx = np.array([0, 5, 9, 5])
    u = counter_uniform(11, idx, 3, 4)
    assert u.shape == (4, 4) and u.dtype == np.float64
    assert ((u >= 0) & (u < 1)).all()
    assert np.array_equal(u[1], u[3])  # same index, same numbers
    assert np.array_equal(counter_uniform(11, idx[1:2], 3, 4)[0], u[1])
    assert not np.array_equal(counter_uniform(12, idx, 3, 4), u)
    assert not np.array_equal(counter_uniform(11, idx, 4, 4), u)


def test_dataloader_batches_equal_direct_rendering():
    ds = ShapesBenchmark(size=40, seed=5)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False)
    first = next(iter(loader))
    direct = ds.batch(range(16))
    assert torch.equal(first["image"], direct["image"])
    assert torch.equal(first["mask"], direct["mask"])
    assert torch.equal(first["label"], direct["label"])
    batches = list(ds.iter_batches(16))
    assert [len(b["label"]) for b in batches] == [16, 16, 8]
    assert torch.equal(batches[0]["image"], direct["image"])


def test_split_seeds_are_distinct_streams():
    assert len(set(SPLIT_SEEDS.values())) == len(SPLIT_SEEDS)
    tr = ShapesBenchmark.from_split("train", size=8)
    te = ShapesBenchmark.from_split("test", size=8)
    assert tr.seed == SPLIT_SEEDS["train"] and te.seed == SPLIT_SEEDS["test"]
    assert not torch.equal(tr.batch(range(8))["image"], te.batch(range(8))["image"])


# --------------------------------------------------------------------- shapes, dtypes, ranges


@pytest.mark.parametrize("image_size", [32, 64, 97])
def test_shapes_dtypes_ranges(image_size):
    ds = ShapesBenchmark(size=12, image_size=image_size, seed=1)
    item = ds[3]
    assert set(item) == {"image", "label", "mask"}
    assert item["image"].shape == (3, image_size, image_size) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, image_size, image_size) and item["mask"].dtype == torch.bool
    assert isinstance(item["label"], int) and 0 <= item["label"] < NUM_CLASSES
    r = ds.render(range(12))
    assert r.images.shape == (12, 3, image_size, image_size)
    assert float(r.images.min()) >= 0.0 and float(r.images.max()) <= 1.0
    assert r.labels.dtype == torch.int64
    assert r.coverage.shape == (12, 1, image_size, image_size)
    assert float(r.coverage.min()) >= 0.0 and float(r.coverage.max()) <= 1.0
    frac = r.masks.float().mean(dim=(1, 2, 3))
    assert bool((frac > 0.05).all()) and bool((frac < 0.22).all())
    assert len(ds) == 12 and ds.num_classes == NUM_CLASSES == len(CLASS_NAMES) >= 6


def test_mask_area_within_bounds_and_inside_image(big):
    n = 64 * 64
    area = big.masks.flatten(1).sum(dim=1).double()
    frac = area / n
    lo, hi = ShapesConfig().area_range
    # Documented: the closed-form fraction is uniform in area_range; the mask matches it up
    # to pixel rounding, within [0.055, 0.21] at 64x64.
    assert float(frac.min()) >= 0.055 and float(frac.max()) <= 0.21
    target = big.params["area_fraction"].double()
    assert float(target.min()) >= lo and float(target.max()) <= hi
    rel = (area - target * n).abs() / (target * n)
    assert float(rel.max()) < 0.10
    # The object stays fully inside the image (at least the 1 px border is free).
    m = big.masks[:, 0]
    border = m[:, 0, :].any() | m[:, -1, :].any() | m[:, :, 0].any() | m[:, :, -1].any()
    assert not bool(border)
    # Centres cover the image: not all objects in the middle.
    cx = big.params["center"][:, 0]
    assert float(cx.min()) < 24 and float(cx.max()) > 40


def test_mask_covers_object_pixels(big):
    diff = (big.images - big.backgrounds).abs().amax(dim=1, keepdim=True)  # (B,1,H,W)
    # Outside the object's footprint the image is exactly the object-free image.
    outside = big.coverage == 0
    assert float(diff[outside].max()) == 0.0
    # Inside the mask the object changes (nearly) every pixel clearly.
    inside = big.masks
    assert bool((big.coverage[inside] >= 0.5).all())
    changed = (diff > 0.05) & inside
    per_image = changed.flatten(1).sum(1).double() / inside.flatten(1).sum(1).double()
    assert float(per_image.mean()) > 0.97
    assert float(per_image.min()) > 0.7
    # The anti-aliased rim outside the mask is thin: at most ~ perimeter pixels.
    rim = ((big.coverage > 0) & ~inside).flatten(1).sum(1).double()
    assert bool((rim < 0.8 * inside.flatten(1).sum(1).double()).all())


def test_mask_agrees_with_shape_sdf(big):
    bad = 0
    for i in range(0, N_STATS, 25):
        cx, cy = (float(v) for v in big.params["center"][i])
        _, mask = rasterize_shape(
            int(big.labels[i]), float(big.params["scale"][i]), 64, (cx, cy), float(big.params["angle"][i])
        )
        bad += int((mask != big.masks[i, 0]).sum())
    assert bad <= 6  # float32 rounding of the stored parameters may flip a boundary pixel


def test_distractors_present_and_kept_off_the_object():
    plain = render_batch(4, range(40), 64, ShapesConfig(num_distractors=(0, 0)))
    busy = render_batch(4, range(40), 64)
    # Same object and background (independent random streams), distractors only added.
    assert torch.equal(plain.masks, busy.masks)
    assert torch.equal(plain.labels, busy.labels)
    changed = (plain.images != busy.images).flatten(1).any(dim=1)
    assert float(changed.float().mean()) > 0.9
    # Nothing changes on or within KEEP_OUT pixels of the object.
    pix = torch.arange(64, dtype=torch.float32) + 0.5
    sdf = shape_sdf_pixels(
        busy.labels,
        pix,
        pix,
        busy.params["center"][:, 0],
        busy.params["center"][:, 1],
        busy.params["scale"],
        torch.cos(busy.params["angle"]),
        torch.sin(busy.params["angle"]),
    )
    near = (sdf < KEEP_OUT - 0.1)[:, None].expand_as(busy.images)
    assert torch.equal(plain.images[near], busy.images[near])
    # Distractors are small: all of an image's distractors together cover less than the
    # smallest object (6 % of the image, 246 px).
    footprint = (plain.images != busy.images).any(dim=1).flatten(1).sum(1)
    assert bool((footprint < 246).all())


# ------------------------------------------------------------------------ class statistics


def test_classes_balanced(big):
    counts = np.bincount(big.labels.numpy(), minlength=NUM_CLASSES)
    assert (counts > 0).all()
    assert stats.chisquare(counts).pvalue > 0.01
    # Any window of 600 consecutive indices is balanced too (blocks of NUM_CLASSES).
    shifted = np.bincount(sample_labels(SEED, np.arange(3, 603)).numpy(), minlength=NUM_CLASSES)
    assert stats.chisquare(shifted).pvalue > 0.01
    assert torch.equal(sample_labels(SEED, range(N_STATS)), big.labels)
    blocks = sample_labels(99, range(60)).reshape(10, NUM_CLASSES)
    assert all(sorted(b.tolist()) == list(range(NUM_CLASSES)) for b in blocks)
    assert len({tuple(b.tolist()) for b in blocks}) > 1  # the order within blocks varies


def test_colour_does_not_reveal_class(big):
    m = big.masks.float()
    obj = (big.images * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3))  # (B, 3) mean object colour
    bg = (big.images * (1 - m)).sum(dim=(2, 3)) / (1 - m).sum(dim=(2, 3))  # mean surround
    feats = torch.cat([obj, bg], dim=1).numpy()
    y = big.labels.numpy()
    for k in range(feats.shape[1]):
        groups = [feats[y == c, k] for c in range(NUM_CLASSES)]
        assert stats.f_oneway(*groups).pvalue > 1e-3
    # Nearest-centroid classifier on colour, fit on one half, scored on the other: chance.
    tr, te = np.arange(N_STATS) % 2 == 0, np.arange(N_STATS) % 2 == 1
    cent = np.stack([feats[tr & (y == c)].mean(0) for c in range(NUM_CLASSES)])
    pred = np.argmin(((feats[te][:, None] - cent[None]) ** 2).sum(-1), axis=1)
    assert (pred == y[te]).mean() < 0.3  # chance is 1/6


def test_object_contrasts_with_its_surround(big):
    colour = big.params["colour"]
    m = big.masks.float()
    under = (big.backgrounds * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3))
    dist = (colour - under).norm(dim=1)
    assert float((dist > 0.3).float().mean()) > 0.95
    # Object colours span the colour cube (not a fixed palette).
    assert float(colour.min()) < 0.05 and float(colour.max()) > 0.95
    assert float(colour.std(dim=0).min()) > 0.2


# -------------------------------------------------------------------- shape rasterisation


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_shape_rasterises_to_closed_form_area(name):
    c = class_index(name)
    unit = shape_area(name, 1.0)
    # Object areas across the benchmark's range at 64x64 (6 %, 12 %, 20 % of the image).
    for area in (246.0, 500.0, 819.0):
        scale = math.sqrt(area / unit)
        assert shape_area(name, scale) == pytest.approx(area)
        for angle in (0.0, 0.37, 1.9):
            for center in ((32.3, 31.8), (32.0, 32.0)):
                cov, mask = rasterize_shape(c, scale, 64, center=center, angle=angle)
                # Box-filtered coverage: within 1.2 % of the closed-form area.
                assert abs(float(cov.sum()) - area) / area < 0.012, (name, area, angle, center)
                # Pixel-centre mask: within 10 % (worst case: edges on rows of pixel centres).
                assert abs(float(mask.sum()) - area) / area < 0.10, (name, area, angle, center)
                assert bool((mask <= (cov > 0)).all())
    closed = {
        "disk": math.pi * 10**2,
        "square": (2 * 10) ** 2,
        "triangle": 3 * math.sqrt(3) / 4 * 10**2,
        "ring": math.pi * (10**2 - 5.5**2),
    }
    if name in closed:
        assert shape_area(name, 10.0) == pytest.approx(closed[name])
    cov, _ = rasterize_shape(c, 12.0, 64, angle=0.5, supersample=8)
    assert float(cov.sum()) == pytest.approx(shape_area(name, 12.0), rel=0.01)


def test_shapes_differ_after_rotation():
    # No class equals another under any rotation: compare each pair of equal-area shapes at
    # several rotations; they must always differ in many pixels.
    area = 500.0
    masks = {}
    for c in range(NUM_CLASSES):
        s = math.sqrt(area / UNIT_AREA[c])
        masks[c] = [rasterize_shape(c, s, 64, angle=a)[1] for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    for a in range(NUM_CLASSES):
        for b in range(a + 1, NUM_CLASSES):
            best = min(int((masks[a][0] ^ mb).sum()) for mb in masks[b])
            assert best > 0.15 * area, (CLASS_NAMES[a], CLASS_NAMES[b], best)


# ------------------------------------------------------------------------- bad arguments


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="image_size"):
        ShapesBenchmark(size=4, image_size=31)
    with pytest.raises(TypeError, match="image_size"):
        ShapesBenchmark(size=4, image_size=64.0)
    with pytest.raises(ValueError, match="size"):
        ShapesBenchmark(size=0)
    with pytest.raises(TypeError, match="size"):
        ShapesBenchmark(size=2.5)
    with pytest.raises(ValueError, match="seed"):
        ShapesBenchmark(size=4, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        render_batch(1.5, [0])
    ds = ShapesBenchmark(size=4)
    with pytest.raises(IndexError, match="negative"):
        ds[-1]
    with pytest.raises(IndexError, match="out of range"):
        ds[4]
    with pytest.raises(TypeError, match="index"):
        ds[1.0]
    with pytest.raises(IndexError):
        ds.batch([0, 4])
    with pytest.raises(ValueError, match="non-negative"):
        render_batch(0, [3, -2])
    with pytest.raises(TypeError, match="integers"):
        render_batch(0, [0.5])
    with pytest.raises(ValueError, match="area_range"):
        ShapesConfig(area_range=(0.2, 0.1))
    with pytest.raises(ValueError, match="does not fit"):
        render_batch(0, [0], 64, ShapesConfig(area_range=(0.1, 0.4)))
    with pytest.raises(ValueError, match="num_distractors"):
        ShapesConfig(num_distractors=(5, 2))
    with pytest.raises(ValueError, match="split"):
        ShapesBenchmark.from_split("holdout")
    with pytest.raises(ValueError, match="class"):
        class_index("hexagon")
    with pytest.raises(ValueError, match="batch_size"):
        render_batch(0, [0], batch_size=0)
    with pytest.raises(TypeError, match="ShapesConfig"):
        render_batch(0, [0], config={"area_range": (0.1, 0.2)})
    # The same mistakes raise what captum_fvit.validation raises everywhere else.
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        render_batch(0, [0], batch_size=2.5)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        next(ds.iter_batches(batch_size=True))
    with pytest.raises(ValueError, match="batch_size must be an integer ≥ 1"):
        next(ds.iter_batches(batch_size=0))
    with pytest.raises(TypeError, match="seed must be an int"):
        ShapesBenchmark(size=4, seed=None)
    with pytest.raises(ValueError, match=r"seed must lie in \[0, 2\*\*63\)"):
        sample_labels(2**63, [0])
    with pytest.raises(TypeError, match="stripe_prob must be a number"):
        ShapesConfig(stripe_prob="half")
    with pytest.raises(ValueError, match=r"min_contrast must lie in \[0, 1\]"):
        ShapesConfig(min_contrast=1.5)


def test_old_seed_check_warns_and_forwards():
    from captum_fvit.data import rng

    with pytest.warns(DeprecationWarning, match="captum_fvit.validation.check_seed"):
        assert rng.check_seed(5) == 5
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="seed must be an int"):
        rng.check_seed(1.5)


def test_chunk_size_is_the_deprecated_name_of_the_render_batch_size():
    """``render_batch(chunk_size=)`` → ``batch_size=``; ``ShapesBenchmark(chunk_size=)`` →
    ``render_batch_size=`` (not the size of the batches it yields): the old name warns at the
    caller and renders the same images; both names at once is a TypeError."""
    new = render_batch(5, range(9), 64, batch_size=4)
    with pytest.warns(DeprecationWarning, match="render_batch: chunk_size= is deprecated.*use batch_size=") as rec:
        old = render_batch(5, range(9), 64, chunk_size=4)
    assert rec[0].filename == __file__
    assert torch.equal(new.images, old.images) and torch.equal(new.masks, old.masks)
    assert torch.equal(new.labels, old.labels)
    with pytest.raises(TypeError, match="pass batch_size= only"):
        render_batch(5, [0], batch_size=2, chunk_size=3)
    ds = ShapesBenchmark(12, 64, seed=5, render_batch_size=5)
    with pytest.warns(DeprecationWarning, match="ShapesBenchmark: chunk_size= is deprecated.*render_batch_size="):
        legacy = ShapesBenchmark(12, 64, seed=5, chunk_size=5)
    with pytest.warns(DeprecationWarning, match="from_split: chunk_size= is deprecated"):
        split = ShapesBenchmark.from_split("test", 12, chunk_size=5)
    assert ds.render_batch_size == legacy.render_batch_size == split.render_batch_size == 5
    with pytest.warns(DeprecationWarning, match=r"ShapesBenchmark.chunk_size is deprecated.*\.render_batch_size"):
        assert ds.chunk_size == 5
    assert torch.equal(ds.batch(range(12))["image"], legacy.batch(range(12))["image"])
    assert torch.equal(ds.batch(range(12))["image"], render_batch(5, range(12)).images)
    with pytest.raises(TypeError, match="pass render_batch_size= only"):
        ShapesBenchmark(12, render_batch_size=3, chunk_size=5)
