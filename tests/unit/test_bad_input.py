"""Bad input through the HTTP API (in process): every case answered with a 4xx and a message naming the problem,
the datastore (files and ``datastore_v2.json``) byte-identical afterwards; and a property-based test (hypothesis)
throwing random bytes and random shapes at the upload and infer endpoints."""

import gzip
import io
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.app import snapshot

VOLUME = "synth04_flair"  # 96 × 96 × 16
SLICE = "synth_slice01"  # a 2D PNG
AFFINE = np.diag([2.0, 2.0, 6.0, 1.0])


def nifti(data, compress=True) -> bytes:
    raw = nib.Nifti1Image(np.asarray(data), AFFINE).to_bytes()
    return gzip.compress(raw) if compress else raw


def nrrd(data) -> bytes:
    path = io.BytesIO()
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".nrrd") as f:
        sitk.WriteImage(sitk.GetImageFromArray(np.asarray(data)), f.name)
        path.write(open(f.name, "rb").read())
    return path.getvalue()


def absurd_header() -> bytes:
    """A NIfTI header claiming 4000³ voxels in front of a few bytes (a 'zip bomb' by header)."""
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    return gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 1000)


def zero_size() -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape((96, 0, 16))
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    return gzip.compress(header.binaryblock + b"\0" * 4)


NOISE = np.random.default_rng(0).normal(100, 20, (96, 96, 16)).astype(np.float32)  # incompressible: cut = truncated


def with_value(shape, value, dtype=np.float32):
    data = np.zeros(shape, dtype)
    data[shape[0] // 2, shape[1] // 2, ...] = value
    return data


def truncated_dicom() -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MR", 64, 64, 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = np.zeros((64, 64), np.uint16).tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    buffer = io.BytesIO()
    ds.save_as(buffer, write_like_original=False)
    return buffer.getvalue()[:-3000]


TUMOR = json.dumps({"label_info": [{"name": "tumor", "idx": 1}]})
HIPPO = json.dumps({"label_info": [{"name": "anterior", "idx": 1}, {"name": "posterior", "idx": 2}]})
BANANA = json.dumps({"label_info": [{"name": "banana", "idx": 1}]})

# (case, method, url, files (name, bytes) or json body, form params, status, words in the message)
CASES = [
    (
        "text as an image",
        "put",
        "/datastore/image?image=x",
        ("x.nii.gz", b"hello " * 50),
        None,
        415,
        "not a readable image",
    ),
    ("text as a PNG", "put", "/datastore/image?image=x", ("x.png", b"hello " * 50), None, 415, "not a readable image"),
    (
        "truncated NIfTI (gz)",
        "put",
        "/datastore/image?image=x",
        ("x.nii.gz", nifti(NOISE)[:30000]),
        None,
        415,
        "could not be read",
    ),
    (
        "truncated NIfTI (raw)",
        "put",
        "/datastore/image?image=x",
        ("x.nii", nifti(NOISE, False)[:30000]),
        None,
        415,
        "could not be read",
    ),
    (
        "truncated NRRD",
        "put",
        "/datastore/image?image=x",
        ("x.nrrd", nrrd(NOISE.T)[:30000]),
        None,
        415,
        "could not be read",
    ),
    (
        "NRRD with a broken header",
        "put",
        "/datastore/image?image=x",
        ("x.nrrd", b"NRRD0004\ntype: banana\ndimension: 3\n\n"),
        None,
        415,
        "not a readable image",
    ),
    ("truncated DICOM", "post", "/infer/tumor_gate?output=json", ("x.dcm", truncated_dicom()), None, 415, "read"),
    (
        "NaN voxels (upload)",
        "put",
        "/datastore/image?image=x",
        ("x.nii.gz", nifti(with_value((96, 96, 16), np.nan))),
        None,
        422,
        "NaN or infinite",
    ),
    (
        "inf voxels (upload)",
        "put",
        "/datastore/image?image=x",
        ("x.nii.gz", nifti(with_value((96, 96, 16), np.inf))),
        None,
        422,
        "NaN or infinite",
    ),
    (
        "NaN voxels (infer)",
        "post",
        "/infer/tumor_gate?output=json",
        ("x.nii.gz", nifti(with_value((96, 96, 16), np.nan))),
        None,
        422,
        "NaN or infinite",
    ),
    (
        "-inf voxels (infer)",
        "post",
        "/infer/tumor_seg?output=json",
        ("x.nii.gz", nifti(with_value((96, 96, 16), -np.inf))),
        None,
        422,
        "NaN or infinite",
    ),
    ("zero-size image", "put", "/datastore/image?image=x", ("x.nii.gz", zero_size()), None, 422, "empty"),
    ("absurd size (upload)", "put", "/datastore/image?image=x", ("x.nii.gz", absurd_header()), None, 413, "max_voxels"),
    (
        "absurd size (infer)",
        "post",
        "/infer/sequence?output=json",
        ("x.nii.gz", absurd_header()),
        None,
        413,
        "max_voxels",
    ),
    ("2D where 3D is needed", "post", f"/infer/hippocampus?image={SLICE}&output=json", None, None, 422, "3D volume"),
    (
        "2D label for a 3D image",
        "put",
        f"/datastore/label?image={VOLUME}&tag=final",
        ("m.nii.gz", nifti(np.zeros((96, 96), np.uint8))),
        None,
        422,
        "size",
    ),
    (
        "3D label for a 2D image",
        "put",
        f"/datastore/label?image={SLICE}&tag=final",
        ("m.nii.gz", nifti(np.zeros((64, 64, 8), np.uint8))),
        None,
        422,
        "size",
    ),
    (
        "label of the wrong shape",
        "put",
        f"/datastore/label?image={VOLUME}&tag=final",
        ("m.nii.gz", nifti(np.zeros((96, 96, 15), np.uint8))),
        None,
        422,
        "(96, 96, 15)",
    ),
    (
        "label value of no task",
        "put",
        f"/datastore/label?image={VOLUME}&tag=final",
        ("m.nii.gz", nifti(with_value((96, 96, 16), 7, np.uint8))),
        None,
        422,
        "[7]",
    ),
    (
        "label value outside its task",
        "put",
        f"/datastore/label?image={VOLUME}&tag=final",
        ("m.nii.gz", nifti(with_value((96, 96, 16), 2, np.uint8))),
        TUMOR,
        422,
        "not labels of tumor_seg",
    ),
    (
        "negative label value",
        "put",
        f"/datastore/label?image={VOLUME}&tag=final",
        ("m.nii.gz", nifti(with_value((96, 96, 16), -1, np.int16))),
        HIPPO,
        422,
        "[-1]",
    ),
    (
        "fractional label",
        "put",
        f"/datastore/label?image={VOLUME}&tag=final",
        ("m.nii.gz", nifti(with_value((96, 96, 16), 0.5))),
        None,
        422,
        "fractional",
    ),
    (
        "NaN in a label",
        "put",
        f"/datastore/label?image={VOLUME}&tag=final",
        ("m.nii.gz", nifti(with_value((96, 96, 16), np.nan))),
        None,
        422,
        "NaN or infinite",
    ),
    (
        "unknown segment name",
        "put",
        f"/datastore/label?image={VOLUME}&tag=final",
        ("m.nii.gz", nifti(with_value((96, 96, 16), 1, np.uint8))),
        BANANA,
        422,
        "banana",
    ),
    (
        "truncated label",
        "put",
        f"/datastore/label?image={VOLUME}&tag=final",
        ("m.nii.gz", nifti(np.zeros((96, 96, 16), np.uint8))[:200]),
        None,
        415,
        "label for image",
    ),
    (
        "label for an unknown image",
        "put",
        "/datastore/label?image=nobody&tag=final",
        ("m.nii.gz", nifti(np.zeros((96, 96, 16), np.uint8))),
        None,
        404,
        "nobody",
    ),
    ("image id with ..", "put", "/datastore/image?image=..", ("x.png", b"x"), None, 422, "image id"),
    ("image id with a path", "put", "/datastore/image?image=../evil", ("x.png", b"x"), None, 422, "image id"),
    ("image id with a separator", "put", "/datastore/image?image=a/b", ("x.png", b"x"), None, 422, "image id"),
    (
        "label tag with a path",
        "put",
        f"/datastore/label?image={VOLUME}&tag=../final",
        ("m.nii.gz", nifti(np.zeros((96, 96, 16), np.uint8))),
        None,
        422,
        "label tag",
    ),
    ("infer on a server path", "post", "/infer/tumor_gate?image=/etc/passwd&output=json", None, None, 422, "image id"),
    (
        "infer on a relative path",
        "post",
        "/infer/tumor_gate?image=../datastore_v2.json&output=json",
        None,
        None,
        422,
        "image id",
    ),
    ("unknown class name", "put", f"/classlabel/sequence?image={VOLUME}", {"label": "T3"}, None, 422, "valid classes"),
    (
        "class name of another task",
        "put",
        f"/classlabel/tumor_gate?image={VOLUME}",
        {"label": "glioma"},
        None,
        422,
        "valid classes",
    ),
    ("class label not a string", "put", f"/classlabel/sequence?image={VOLUME}", {"label": 5}, None, 422, None),
    (
        "class label for an unknown image",
        "put",
        "/classlabel/sequence?image=nobody",
        {"label": "T1"},
        None,
        404,
        "nobody",
    ),
    ("params not JSON", "post", f"/infer/sequence?image={VOLUME}&output=json", None, "{not json", 422, "params"),
    (
        "resume with nothing to resume",
        "post",
        "/train/tumor_gate",
        {"resume": True, "name": "r"},
        None,
        409,
        "nothing to resume",
    ),
    (
        "resume and finetune together",
        "post",
        "/train/tumor_gate",
        {"resume": True, "finetune": True},
        None,
        422,
        "exclude each other",
    ),
    (
        "resume with a bad max_epochs",
        "post",
        "/train/tumor_gate",
        {"resume": True, "max_epochs": "ten"},
        None,
        422,
        "max_epochs",
    ),
    ("unknown model", "post", f"/infer/banana?image={VOLUME}&output=json", None, None, 404, "banana"),
]


@pytest.mark.parametrize("case, method, url, body, params, status, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_4xx_with_a_message_and_changes_nothing(
    api_trained, case, method, url, body, params, status, words
):
    client, _, folder = api_trained
    before = snapshot(folder)
    kwargs = {}
    if isinstance(body, dict):
        kwargs["json"] = body
    elif body is not None:
        kwargs["files"] = {"label" if "/label" in url else "file": body}
    if params is not None:
        kwargs["data"] = {"params": params}
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.text
    if words:
        detail = response.json()["detail"]
        assert words in (detail if isinstance(detail, str) else json.dumps(detail)), detail
    assert snapshot(folder) == before


def test_a_label_within_its_task_is_accepted(api_trained):
    client, _, folder = api_trained
    response = client.put(
        f"/datastore/label?image={VOLUME}&tag=final",
        data={"params": HIPPO},
        files={"label": ("m.nii.gz", nifti(with_value((96, 96, 16), 2, np.uint8)))},
    )
    assert response.status_code == 200, response.text
    assert (folder / "labels" / "final" / f"{VOLUME}.nii.gz").exists()


@pytest.mark.parametrize(
    "url, key, as_form",
    [
        ("/train/tumor_gate", "finetune", False),
        ("/train/tumor_gate", "resume", False),
        ("/train/", "finetune", False),
        (f"/infer/sequence?image={VOLUME}&output=image", "cam", True),
    ],
)
def test_a_bad_flag_param_is_refused_naming_the_param_not_conf(api_server, url, key, as_form):
    """A request's true/false params are refused with a message naming ``params <key>`` (not ``--conf <key>``)."""
    client, _, folder = api_server
    before = snapshot(folder)
    body = {key: "maybe"}
    response = client.post(url, data={"params": json.dumps(body)}) if as_form else client.post(url, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == f"params {key} must be true or false, got 'maybe'"
    assert snapshot(folder) == before


# ------------------------------------------------------------------------------------------- property-based

EXTENSIONS = [".nii.gz", ".nii", ".nrrd", ".png", ".jpg", ".dcm", ".txt", ""]
DTYPES = [np.uint8, np.int16, np.float32, np.float64]


@st.composite
def random_volume(draw):
    """A NIfTI of random shape (1–4 axes, 0–24 voxels each), dtype and values (NaN/inf included)."""
    shape = tuple(draw(st.lists(st.integers(0, 24), min_size=1, max_size=4)))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    data = np.random.default_rng(seed).normal(0, 100, shape)
    if np.issubdtype(dtype, np.floating) and data.size and draw(st.booleans()):
        data.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    try:
        raw = nifti(data.astype(dtype), compress=draw(st.booleans()))
    except Exception:  # nibabel refuses some shapes itself: send them as bytes anyway
        raw = bytes(8)
    return raw


payloads = st.one_of(st.binary(max_size=4096), random_volume())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=payloads,
    extension=st.sampled_from(EXTENSIONS),
    endpoint=st.sampled_from(["upload", "label", "infer_gate", "infer_seg", "infer_hippocampus", "infer_pipeline"]),
)
def test_random_bytes_and_shapes_never_get_a_5xx_and_a_refusal_changes_nothing(
    api_trained, payload, extension, endpoint
):
    client, app, folder = api_trained
    before = snapshot(folder)
    name = f"fuzz{extension}"
    if endpoint == "upload":
        response = client.put("/datastore/image?image=fuzz", files={"file": (name, payload)})
    elif endpoint == "label":
        response = client.put(f"/datastore/label?image={VOLUME}&tag=fuzz", files={"label": (name, payload)})
    else:
        task = (
            endpoint.split("_", 1)[1]
            .replace("gate", "tumor_gate")
            .replace("seg", "tumor_seg")
            .replace("pipeline", "tumor_pipeline")
        )
        response = client.post(f"/infer/{task}?output=json", files={"file": (name, payload)})
    assert response.status_code < 500, (endpoint, extension, response.text[:500])
    if response.status_code >= 400 or endpoint.startswith("infer"):
        assert snapshot(folder) == before, (endpoint, response.status_code)
    else:  # accepted: undo, so every example starts from the same datastore
        if endpoint == "upload":
            app.datastore().remove_image("fuzz")
        else:
            app.datastore().remove_label(VOLUME, "fuzz")
