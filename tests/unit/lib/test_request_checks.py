"""Request checks (:mod:`lib.request_checks`): JSON depth, infer and train params, the infer work budget; and a
property test (hypothesis): nested JSON is refused past the depth limit, and whatever info the datastore accepts
loads again at the next start."""

import json

import nibabel as nib
import numpy as np
import pytest
from fastapi import HTTPException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.request_checks import (
    MAX_JSON_DEPTH,
    RequestError,
    check_infer_params,
    check_name,
    check_train_params,
    infer_cost,
    json_depth,
    parse_object,
)


def nested(depth: int):
    value = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("value,depth", [(1, 0), ({}, 1), ([[]], 2), ({"a": [1, {"b": 2}]}, 3), (nested(40), 40)])
def test_json_depth(value, depth):
    assert json_depth(value) == depth


@pytest.mark.parametrize(
    "text,words",
    [
        ("{oops", "must be a JSON object"),
        ("[1, 2]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        (json.dumps({"a": nested(MAX_JSON_DEPTH)}), "deeper than 20"),
        ("{" + '"a":[' * 5000 + "]" * 5000 + "}", "deeper than 20"),
    ],
)
def test_parse_object_refuses(text, words):
    with pytest.raises(RequestError, match=words):
        parse_object(text, "params")


def test_parse_object_takes_an_object_at_the_limit():
    assert parse_object(json.dumps({"a": nested(MAX_JSON_DEPTH - 1)}), "params")["a"] == nested(MAX_JSON_DEPTH - 1)
    assert parse_object("", "params") == {}


@pytest.mark.parametrize("value", ["../etc", "a/b", "", ".hidden", "x" * 129, 5, None, "a..b"])
def test_check_name_refuses(value):
    with pytest.raises(RequestError, match="plain name"):
        check_name(value, "params name")


INFER = [
    ({"image": "/etc/passwd"}, True, True, 422, "may not set"),
    ({"session": {}}, True, True, 422, "may not set"),
    ({"device": "meta"}, True, True, 422, "device 'meta'"),
    ({"device": "cuda:0"}, True, True, 422, "device 'cuda:0'"),
    ({"logging": 5}, True, True, 422, "logging 5"),
    ({"logging": "LOUD"}, True, True, 422, "log level"),
    ({"result_extension": ".json"}, True, True, 422, "result_extension"),
    ({"result_dtype": "object"}, True, True, 422, "result_dtype"),
    ({"timeout": -1}, True, True, 422, "timeout"),
    ({"label_tag": "../final"}, True, True, 422, "label_tag"),
    ({"save_label": "maybe"}, True, True, 422, "true or false"),
    ({"save_label": True}, False, True, 403, "monailabel-annotator"),
    ({"save_label": True, "label_tag": "final"}, False, True, 403, "monailabel-annotator"),
    ({"save_label": True}, True, False, 422, "datastore image"),
]


@pytest.mark.parametrize("params,may_write,from_datastore,status,words", INFER)
def test_infer_params_refused(params, may_write, from_datastore, status, words):
    with pytest.raises(RequestError, match=words) as refused:
        check_infer_params(params, may_write, from_datastore, gpus=0)
    assert refused.value.status == status


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"device": "cpu"},
        {"logging": "debug"},
        {"result_extension": ".nrrd"},
        {"save_label": True, "label_tag": "original"},
        {"cam": True, "timeout": 30},
    ],
)
def test_infer_params_accepted(params):
    check_infer_params(params, may_write_labels=True, from_datastore=True, gpus=0)


def test_a_gpu_device_is_accepted_where_there_is_one():
    check_infer_params({"device": "cuda:1"}, True, True, gpus=2)


DEFAULTS = {"max_epochs": 50, "learning_rate": 1e-3, "amp": True, "name": "train_01", "val_split": 0.2}
TRAIN = [
    ({"name": "../../../../etc"}, "plain name"),
    ({"name": "a/b"}, "plain name"),
    ({"max_epochs": "abc"}, "max_epochs"),
    ({"max_epochs": 0}, "max_epochs"),
    ({"max_epochs": True}, "max_epochs"),
    ({"max_epochs": 2.5}, "max_epochs"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"val_split": float("nan")}, "val_split"),
    ({"amp": "sometimes"}, "amp"),
    ({"model": "other"}, "may not set"),
    ({"x": nested(30)}, "deeper"),
]


@pytest.mark.parametrize("params,words", TRAIN)
def test_train_params_refused(params, words):
    with pytest.raises(RequestError, match=words):
        check_train_params(params, DEFAULTS)


def test_train_params_accepted():
    check_train_params(
        {"name": "run_2", "max_epochs": 3, "learning_rate": 0.01, "amp": "false", "val_split": 1}, DEFAULTS
    )


class Slicewise:
    size = 256


class Volume:
    spacing = (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "size,spacing,config,cost",
    [
        ((256, 256, 1000), (1, 1, 1), Slicewise(), 1000 * 256 * 256),
        ((64, 64, 1000), (1, 1, 1), Slicewise(), 1000 * 256 * 256),  # small slices cost as much: each is resized
        ((512, 512), (1, 1), Slicewise(), 256 * 256),
        ((100, 100, 50), (2, 2, 3), Volume(), 200 * 200 * 150),
        ((10, 10, 10), (float("nan"), 0.0, -2.0), Volume(), 10 * 10 * 20),  # unusable spacing counts as 1 mm
        ((10, 10, 10), (1, 1, 1), object(), 1000),
    ],
)
def test_infer_cost_counts_what_the_network_sees(size, spacing, config, cost):
    assert infer_cost(size, spacing, config) == cost


def test_infer_cost_validates_size():
    with pytest.raises(ValueError, match="size"):
        infer_cost((0, 5), (1, 1), Volume())


# ------------------------------------------------------------------------------------------- property-based

LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4))


def json_values(max_leaves=30):
    return st.recursive(
        LEAVES,
        lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=3), inner, max_size=2)),
        max_leaves=max_leaves,
    )


@st.composite
def deep_values(draw):
    """A JSON value wrapped in 0-60 random levels of lists and objects."""
    value = draw(json_values(8))
    for kind in draw(st.lists(st.booleans(), max_size=60)):
        value = [value] if kind else {draw(st.text(max_size=3)): value}
    return value


@settings(max_examples=100, deadline=None)
@given(value=deep_values())
def test_nested_json_is_taken_exactly_up_to_the_depth_limit(value):
    text = json.dumps({"v": value})
    if json_depth(value) + 1 <= MAX_JSON_DEPTH:
        assert parse_object(text, "info") == {"v": value}
    else:
        with pytest.raises(RequestError, match="deeper"):
            parse_object(text, "info")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), folder / "img.nii.gz")
    return folder


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=deep_values())
def test_the_datastore_stores_only_info_the_next_start_can_load(tiny_store, value):
    from lib.datastore import MRIDatastore

    store = MRIDatastore(str(tiny_store), auto_reload=False)
    try:
        store.update_image_info("img", {"note": value})
    except HTTPException as error:
        assert error.status_code == 422 and json_depth(value) + 1 > MAX_JSON_DEPTH
        return
    assert MRIDatastore(str(tiny_store), auto_reload=False).get_image_info("img")["note"] == value
