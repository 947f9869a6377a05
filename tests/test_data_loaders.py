"""Evaluation datasets: an image folder with masks, and the gtsegs_ijcv.mat format written by
the test itself with h5py object references (the layout of the published file)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from captum_fvit.data import ImageFolderWithMasks, ImageNetSegmentation


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_with_class_subfolders_and_masks(tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for cls in ("cat", "dog"):
        for i in range(2):
            array = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
            images[(cls, i)] = array
            _write_png(tmp_path / "images" / cls / f"{i}.png", array)
            mask = np.zeros((20, 30), dtype=np.uint8)
            mask[5:10, 3 + i : 12] = 255
            _write_png(tmp_path / "masks" / cls / f"{i}.png", mask)
    ds = ImageFolderWithMasks(tmp_path)
    assert len(ds) == 4 and ds.class_names == ["cat", "dog"] and ds.has_masks
    sample = ds[2]  # dog/0.png in sorted order
    assert sample["label"] == 1
    np.testing.assert_allclose(
        sample["image"].permute(1, 2, 0).numpy(), images[("dog", 0)] / 255.0, atol=1e-6
    )
    assert sample["mask"].shape == (1, 20, 30) and sample["mask"].sum() == 5 * 9
    resized = ImageFolderWithMasks(tmp_path, image_size=16)[0]
    assert resized["image"].shape == (3, 16, 16) and resized["mask"].shape == (1, 16, 16)
    assert resized["mask"].dtype == torch.bool


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="images/"):
        ImageFolderWithMasks(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        ImageFolderWithMasks(tmp_path)
    _write_png(tmp_path / "images" / "a.png", np.zeros((10, 10, 3), dtype=np.uint8))
    _write_png(tmp_path / "masks" / "a.png", np.zeros((8, 10), dtype=np.uint8))
    ds = ImageFolderWithMasks(tmp_path)
    assert ds.labels == [-1] and ds.class_names == []
    with pytest.raises(ValueError, match="8x10 but its image .* is 10x10"):
        ds[0]


def _write_gtsegs(path, images, masks):
    """Write images/masks in the MATLAB v7.3 layout of gtsegs_ijcv.mat."""
    ref = h5py.special_dtype(ref=h5py.Reference)
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        img_refs = np.empty((len(images), 1), dtype=object)
        gt_refs = np.empty((len(images), 1), dtype=object)
        for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
            img = refs.create_dataset(f"img{i}", data=image.transpose(2, 1, 0))
            m = refs.create_dataset(f"mask{i}", data=mask.transpose(1, 0).astype(np.uint8))
            holder = refs.create_dataset(f"gt{i}", (1, 1), dtype=ref)
            holder[0, 0] = m.ref
            img_refs[i, 0] = img.ref
            gt_refs[i, 0] = holder.ref
        value = f.create_group("value")
        value.create_dataset("img", data=img_refs, dtype=ref)
        value.create_dataset("gt", data=gt_refs, dtype=ref)


def test_gtsegs_format_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size=(12, 18, 3), dtype=np.uint8) for _ in range(3)]
    masks = [rng.random((12, 18)) > 0.5 for _ in range(3)]
    path = tmp_path / "gtsegs_ijcv.mat"
    _write_gtsegs(path, images, masks)
    ds = ImageNetSegmentation(path, image_size=None)
    assert len(ds) == 3
    for i in range(3):
        sample = ds[i]
        np.testing.assert_allclose(
            sample["image"].permute(1, 2, 0).numpy(), images[i] / 255.0, atol=1e-6
        )
        np.testing.assert_array_equal(sample["mask"][0].numpy(), masks[i])
        assert sample["label"] == -1
    assert ImageNetSegmentation(path, image_size=8)[0]["image"].shape == (3, 8, 8)
    with pytest.raises(IndexError):
        ds[3]
    ds.close()


def test_gtsegs_wrong_layout(tmp_path):
    path = tmp_path / "other.mat"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="gtsegs_ijcv.mat layout"):
        ImageNetSegmentation(path)


def test_resize_keeps_aspect_ratio_and_center_crops(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :10] = (255, 0, 0)
    array[:, 10:30] = (0, 255, 0)
    array[:, 30:] = (0, 0, 255)
    _write_png(tmp_path / "images" / "a.png", array)
    mask = np.zeros((20, 40), dtype=np.uint8)
    mask[:, 15:] = 255
    _write_png(tmp_path / "masks" / "a.png", mask)
    sample = ImageFolderWithMasks(tmp_path, image_size=10)[0]
    # 20×40 → 10×20 (aspect kept), centre 10×10 = original columns 10..29: all green, not
    # squashed (a squashed image would keep red and blue at its borders).
    image = sample["image"]
    assert image.shape == (3, 10, 10)
    np.testing.assert_allclose(image[1, :, 1:9].numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(image[[0, 2], :, 1:9].numpy(), 0.0, atol=1e-5)
    assert float(image[[0, 2]].max()) < 0.2  # only the antialias filter's edge blur
    # The mask follows: original column 15 is resized column 7.5 → crop column 2.5.
    assert sample["mask"].shape == (1, 10, 10)
    assert not sample["mask"][0, :, :2].any() and sample["mask"][0, :, 3:].all()
    # crop_pct = 0.5: shorter side to 20 px (no resize here), then the central 10×10 pixels.
    cropped = ImageFolderWithMasks(tmp_path, image_size=10, crop_pct=0.5)[0]
    np.testing.assert_allclose(
        cropped["image"].permute(1, 2, 0).numpy(), array[5:15, 15:25] / 255.0, atol=1e-6
    )


def test_label_mapping_for_class_folders(tmp_path):
    for cls in ("n02", "n01"):
        _write_png(tmp_path / "images" / cls / "x.png", np.zeros((8, 8, 3), dtype=np.uint8))
    mapping = {"n01": 417, "n02": 3}
    ds = ImageFolderWithMasks(tmp_path, labels=mapping)
    assert [p.parent.name for p in ds.paths] == ["n01", "n02"] and ds.labels == [417, 3]
    assert ImageFolderWithMasks(tmp_path, labels="none").labels == [-1, -1]
    assert ImageFolderWithMasks(tmp_path).labels == [0, 1]  # sorted index, torchvision's rule
    with pytest.raises(ValueError, match="no class id for 1 of the 2 class folders"):
        ImageFolderWithMasks(tmp_path, labels={"n01": 1, "other": 2})
    from captum_fvit.data.folder import load_label_map

    (tmp_path / "synsets.txt").write_text("n02 tench\nn01 goldfish\n")
    assert load_label_map(tmp_path / "synsets.txt") == {"n02": 0, "n01": 1}
    (tmp_path / "bad.json").write_text('{"n01": "zero"}')
    with pytest.raises(ValueError, match="class ids"):
        load_label_map(tmp_path / "bad.json")


def test_missing_or_corrupt_image_names_the_file(tmp_path):
    _write_png(tmp_path / "images" / "good.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png at all")
    ds = ImageFolderWithMasks(tmp_path)
    with pytest.raises(ValueError, match=r"cannot read image file .*broken\.png"):
        ds[0]
    (tmp_path / "images" / "good.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"good\.png is missing"):
        ds[1]
