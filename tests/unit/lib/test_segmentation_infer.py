"""The slice-wise segmentation infer task's post-processing, run whole on a generated volume with a stand-in
network: the largest connected component kept where the task declares it, every component otherwise."""

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lib.infers.segmentation import SliceSegmentationInfer


class IntensityNet(torch.nn.Module):
    """Foreground logit = 10 (input - 0.5): bright voxels are foreground."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 10 * (x - 0.5)], dim=1)


@pytest.fixture
def two_blobs(tmp_path):
    """A 32x32x8 volume (1 x 1 x 3 mm) of 0.2 with a 6x6x4-voxel blob of 1.0 and, apart from it, a 2x2x2-voxel one
    (after the infer's z-score, the blobs lie far above 0.5, the rest below)."""
    volume = np.full((32, 32, 8), 0.2, np.float32)
    volume[4:10, 4:10, 2:6] = 1.0
    volume[20:22, 20:22, 3:5] = 1.0
    path = tmp_path / "blobs.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 3.0, 1.0])), path)
    return path


@pytest.mark.parametrize("keep_largest, voxels, lesions", [(True, 144, 1), (False, 152, 2)])
def test_the_largest_component_is_kept_only_where_declared(two_blobs, keep_largest, voxels, lesions):
    infer = SliceSegmentationInfer(
        str(two_blobs.parent / "absent.pt"),
        IntensityNet(),
        {"tumor": 1},
        "stand-in",
        size=32,
        lesions="tumor",
        keep_largest=keep_largest,
    )
    file, result = infer({"image": str(two_blobs), "device": "cpu", "result_extension": ".nii.gz"})
    mask = sitk.GetArrayFromImage(sitk.ReadImage(file)).transpose(2, 1, 0)
    os.remove(file)
    assert int((mask == 1).sum()) == voxels
    assert mask[4:10, 4:10, 2:6].all()  # the large blob is never touched
    assert result["measurements"]["lesions"]["components"] == lesions
