"""Tests of lib.slice_cache: one read per image, the same slices inference sees, reuse across runs, invalidation."""

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image

import lib.slice_cache as slice_cache
from lib.slice_cache import LoadCachedSliced, cache_folder, cache_items, train_cached_pre, volume_items
from lib.slicewise import SlicewiseInferer
from lib.transforms import infer_slices_pre, scanner_augment


def _volume(path, shape=(40, 36, 6), seed=0):
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, np.float32)
    data[5:-5, 4:-4, :] = rng.uniform(100, 400, (shape[0] - 10, shape[1] - 8, shape[2]))
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return data


def _mask(path, shape=(40, 36, 6)):
    mask = np.zeros(shape, np.uint8)
    mask[10:20, 10:22, 2:4] = 1
    nib.save(nib.Nifti1Image(mask, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return mask


@pytest.fixture
def files(tmp_path):
    image, mask = tmp_path / "img.nii.gz", tmp_path / "img_mask.nii.gz"
    _volume(image)
    _mask(mask)
    return str(image), str(mask), str(tmp_path / "cache")


@pytest.mark.parametrize("size", [16, 32])
def test_cached_slices_equal_what_inference_feeds_the_network(files, size):
    image, _, folder = files
    items = [{"image": image, "label": 1, "slice": k, "subject": "s"} for k in (1, 3)]
    cached = cache_items(items, folder, size, with_mask=False)
    volume = Compose(infer_slices_pre())({"image": image})["image"]
    seen = []
    inferer = SlicewiseInferer(size, axis=2, segmentation=False, batch_size=1)
    inferer(volume[None], lambda batch: seen.append(batch) or torch.zeros(1, 2))
    for item in cached:
        got = LoadCachedSliced(keys="image")(item)["image"]
        assert got.shape == (1, size, size)
        assert torch.allclose(got, seen[item["slice"]][0], atol=2e-2, rtol=1e-2)  # float16 storage
        assert item["source_image"] == image and item["subject"] == "s" and item["label"] == 1


def test_each_image_is_read_once_and_reused_by_a_later_run(files, monkeypatch):
    image, mask, folder = files
    reads = []
    original = slice_cache.build_entry

    def counting(*args, **kwargs):
        reads.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(slice_cache, "build_entry", counting)
    items = [{"image": image, "label": mask, "slice": k, "subject": "s"} for k in range(6)]
    first = cache_items(items, folder, 16, with_mask=True)
    assert reads == [image]
    stamps = {p: os.stat(p).st_mtime_ns for p in os.listdir(folder) for p in [os.path.join(folder, p)]}
    second = cache_items(items, folder, 16, with_mask=True)
    assert second == first
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps  # nothing written again
    assert len(os.listdir(folder)) == 2  # one image stack, one mask stack


def test_mask_slices_are_binary_and_match_the_mask(files):
    image, mask, folder = files
    items = [{"image": image, "label": mask, "slice": k, "subject": "s"} for k in range(6)]
    cached = cache_items(items, folder, 40, with_mask=True)
    for item in cached:
        label = LoadCachedSliced(keys="label")(item)["label"]
        assert set(torch.unique(label).tolist()) <= {0.0, 1.0}
        assert bool(label.any()) == (item["slice"] in (2, 3))


def test_a_replaced_image_gets_a_new_entry(files):
    image, _, folder = files
    items = [{"image": image, "label": 0, "slice": 2, "subject": "s"}]
    before = cache_items(items, folder, 16, with_mask=False)[0]["image"]
    _volume(image, seed=1)
    os.utime(image, ns=(os.stat(image).st_atime_ns, os.stat(image).st_mtime_ns + 10**9))
    after = cache_items(items, folder, 16, with_mask=False)[0]["image"]
    assert after != before
    assert not np.array_equal(np.load(after), np.load(before))


def test_a_2d_picture_is_a_stack_of_one(tmp_path):
    path = tmp_path / "slice.png"
    Image.fromarray((np.arange(30 * 20).reshape(30, 20) % 255).astype(np.uint8)).save(path)
    item = {"image": str(path), "label": 2, "slice": -1, "subject": "p"}
    cached = cache_items([item], str(tmp_path / "c"), 24, with_mask=False)
    assert cached[0]["slice"] == 0
    assert np.load(cached[0]["image"]).shape == (1, 24, 24)
    assert LoadCachedSliced(keys="image")(cached[0])["image"].shape == (1, 24, 24)


def test_whole_stacks_for_validation(files):
    image, mask, folder = files
    items = [{"image": image, "label": mask, "slice": k, "subject": "s"} for k in (1, 2, 4)]
    volumes = volume_items(cache_items(items, folder, 16, with_mask=True))
    assert len(volumes) == 1 and volumes[0]["slice"] == -1
    data = Compose(train_cached_pre(with_mask=True, augment=False))(volumes[0])
    assert data["image"].shape == (1, 16, 16, 6) and data["label"].shape == (1, 16, 16, 6)


@pytest.mark.parametrize("with_mask", [True, False])
def test_training_chain_gives_batchable_tensors(files, with_mask):
    image, mask, folder = files
    item = {"image": image, "label": mask if with_mask else 1, "slice": 2, "subject": "s"}
    item = cache_items([item], folder, 16, with_mask)[0]
    data = Compose(train_cached_pre(with_mask=with_mask, augment=True, scanner=not with_mask))(item)
    assert data["image"].shape == (1, 16, 16) and data["image"].dtype == torch.float32
    assert (
        (data["label"].shape == (1, 16, 16))
        if with_mask
        else (data["label"].dtype == torch.long and data["label"].ndim == 0)
    )


def test_scanner_augmentation_keeps_shape_and_changes_values():
    torch.manual_seed(0)
    chain = Compose(scanner_augment())
    for transform in chain.transforms:
        transform.set_random_state(seed=1)
        transform.prob = 1.0
    image = torch.rand(1, 32, 32)
    out = chain({"image": image.clone()})["image"]
    assert out.shape == image.shape and torch.isfinite(torch.as_tensor(out)).all()
    assert not torch.allclose(torch.as_tensor(out), image)


def test_cache_folder_prefers_the_datastore(tmp_path):
    assert cache_folder(str(tmp_path / "ds"), str(tmp_path / "model")).startswith(str(tmp_path / "ds"))
    assert cache_folder(None, str(tmp_path / "model")).startswith(str(tmp_path / "model"))


def test_too_small_size_refused(files):
    image, _, folder = files
    with pytest.raises(ValueError, match="size must be >= 8 pixels, got 4"):
        cache_items([{"image": image, "label": 0, "slice": 0}], folder, 4, with_mask=False)


def test_scanner_augmentation_zooms_a_mask_with_its_image():
    """A segmentation's mask must stay on its image: the zoom moves both (nearest for the mask), the appearance
    changes leave the mask's values alone."""
    mask = torch.zeros(1, 32, 32)
    mask[:, 4:12, 20:28] = 1  # off centre, so a zoom of the image alone would move it away from the mask
    chain = Compose(scanner_augment(mask="label"))
    for transform in chain.transforms:
        transform.set_random_state(seed=3)
        transform.prob = 1.0
    out = chain({"image": mask.clone(), "label": mask.clone()})
    label, image = torch.as_tensor(out["label"]), torch.as_tensor(out["image"])
    assert set(label.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(label, mask)  # zoomed
    # the label lies where the (zoomed, re-shaded) image is brightest
    rows, cols = torch.nonzero(label[0] > 0, as_tuple=True)
    bright = image[0] > image[0].mean()
    assert bright[rows, cols].float().mean() > 0.9


def test_scanner_augmentation_zoom_keeps_a_mask_on_its_image_pixel_for_pixel():
    """Over many zooms of a binary image and its own mask, the zoomed mask and the zoomed image's bright half agree
    on at least 93% of either (a mask shifted by one pixel against its image, as torch's legacy nearest resize beside
    the image's "area" resize gives, falls to 88%)."""
    from monai.transforms import RandZoomd

    mask = torch.zeros(1, 64, 64)
    mask[:, 16:32, 21:37] = 1
    zoom = next(t for t in scanner_augment(mask="label") if isinstance(t, RandZoomd))
    zoom.prob = 1.0
    zoom.set_random_state(seed=1)
    for _ in range(30):
        out = zoom({"image": 10 * mask, "label": mask.clone()})
        label, bright = torch.as_tensor(out["label"]) > 0, torch.as_tensor(out["image"]) > 5
        both = float((label & bright).sum())
        assert both >= 0.93 * float(label.sum()) and both >= 0.93 * float(bright.sum())


@pytest.mark.parametrize("conf, expected", [({}, None), ({"tumor_seg_scanner_augment": "true"}, True)])
def test_tumor_seg_scanner_augmentation_reaches_the_training_chain_and_the_card(tmp_path, conf, expected):
    from lib.configs.tumor_seg import TumorSegConfig

    config = TumorSegConfig()
    config.init("tumor_seg", str(tmp_path), {"shipped_models": "none", **conf})
    default = expected if expected is not None else TumorSegConfig.scanner_augment
    names = {type(t).__name__ for t in config.trainer().train_pre_transforms(None)}
    assert ("RandBiasFieldd" in names and "RandZoomd" in names) == default
    assert ("training_augmentation" in config.card()) == default
