"""Tests of lib.conf: typed, validated access to MONAI Label ``--conf`` strings."""

import pytest

from lib.conf import conf_bool, conf_float, conf_int, conf_ints

KEY = "tumor_seg_lr"


def _raises_naming(func, value, *args, **kwargs):
    """Call ``func({KEY: value}, KEY, ...)``; it must raise ValueError naming ``--conf KEY`` and ``value``."""
    with pytest.raises(ValueError) as info:
        func({KEY: value}, KEY, *args, **kwargs)
    message = str(info.value)
    assert f"--conf {KEY}" in message
    return message


# ---------------------------------------------------------------- defaults (missing or empty)

DEFAULT_CASES = [
    (conf_bool, True, {}),
    (conf_bool, False, {}),
    (conf_float, 0.25, {"low": 0.0, "high": 1.0}),
    (conf_int, 7, {}),
    (conf_ints, (16, 32), {}),
]


@pytest.mark.parametrize("func, default, kwargs", DEFAULT_CASES)
@pytest.mark.parametrize("conf", [{}, {KEY: ""}, {KEY: None}, {"other": "3"}])
def test_default_when_missing_or_empty(func, default, kwargs, conf):
    assert func(conf, KEY, default, **kwargs) == default


def test_conf_ints_default_is_returned_as_tuple():
    result = conf_ints({}, KEY, [4, 8])
    assert result == (4, 8) and isinstance(result, tuple)


# ---------------------------------------------------------------- conf_bool


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1", True),
        ("true", True),
        ("True", True),
        ("YES", True),
        ("on", True),
        (" yes ", True),
        ("0", False),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("Off", False),
        ("\tno\n", False),
    ],
)
@pytest.mark.parametrize("default", [True, False])
def test_conf_bool_valid(value, expected, default):
    assert conf_bool({KEY: value}, KEY, default) is expected


@pytest.mark.parametrize("value", ["maybe", "2", "-1", "tru", "y", "n", "1.0", "none"])
def test_conf_bool_invalid(value):
    message = _raises_naming(conf_bool, value, True)
    assert repr(value) in message


# ---------------------------------------------------------------- conf_float


@pytest.mark.parametrize(
    "value, low, high, expected",
    [
        ("0.5", 0.0, 1.0, 0.5),
        ("0", 0.0, 1.0, 0.0),  # both bounds are inclusive
        ("1", 0.0, 1.0, 1.0),
        ("1e-3", 0.0, None, 0.001),
        (" 2.5 ", None, None, 2.5),
        ("-3", None, 0.0, -3.0),
        ("1e6", 0.0, None, 1e6),
    ],
)
def test_conf_float_valid(value, low, high, expected):
    result = conf_float({KEY: value}, KEY, 9.0, low=low, high=high)
    assert isinstance(result, float)
    assert result == pytest.approx(expected)


@pytest.mark.parametrize("value", ["abc", "0.5.1", "1,5", "[0.5]", "one", "0.5mm"])
def test_conf_float_not_a_number(value):
    message = _raises_naming(conf_float, value, 0.5, 0.0, 1.0)
    assert "number" in message and repr(value) in message


@pytest.mark.parametrize(
    "value, low, high, shown",
    [
        ("1.5", 0.0, 1.0, "1.5"),
        ("-0.1", 0.0, 1.0, "-0.1"),
        ("-2", 0.0, None, "-2.0"),
        ("10", None, 5.0, "10.0"),
        ("inf", 0.0, 1.0, "inf"),
        ("-inf", 0.0, None, "-inf"),
    ],
)
def test_conf_float_out_of_range(value, low, high, shown):
    message = _raises_naming(conf_float, value, 0.5, low, high)
    assert shown in message
    assert f"[{low}, {high}]" in message


@pytest.mark.parametrize("value", ["nan", "NaN"])
def test_conf_float_nan_is_refused(value):
    _raises_naming(conf_float, value, 0.5, 0.0, 1.0)


# ---------------------------------------------------------------- conf_int


@pytest.mark.parametrize(
    "value, low, expected",
    [("1", 1, 1), ("8", 1, 8), (" 12 ", 1, 12), ("0", 0, 0), ("-3", -5, -3), ("+4", 1, 4), ("100000", 1, 100000)],
)
def test_conf_int_valid(value, low, expected):
    result = conf_int({KEY: value}, KEY, 3, low=low)
    assert result == expected and isinstance(result, int)


@pytest.mark.parametrize("value", ["1.5", "abc", "2.0", "1e3", "3 4", "[4]", "four"])
def test_conf_int_not_an_integer(value):
    message = _raises_naming(conf_int, value, 3)
    assert "integer" in message and repr(value) in message


@pytest.mark.parametrize("value, low", [("0", 1), ("-1", 1), ("-7", 0), ("3", 4)])
def test_conf_int_below_low(value, low):
    message = _raises_naming(conf_int, value, 3, low)
    assert f">= {low}" in message and f"got {int(value)}" in message


# ---------------------------------------------------------------- conf_ints


@pytest.mark.parametrize(
    "value, length, expected",
    [
        ("[16, 32, 64]", None, (16, 32, 64)),
        ("[16,32,64,128]", 4, (16, 32, 64, 128)),
        ("16,32,64", None, (16, 32, 64)),
        ("16, 32, 64", 3, (16, 32, 64)),
        (" 48,48,48 ", 3, (48, 48, 48)),
        ("[8]", 1, (8,)),
        ("8", None, (8,)),
        ("  [1,2]  ", 2, (1, 2)),
    ],
)
def test_conf_ints_valid(value, length, expected):
    result = conf_ints({KEY: value}, KEY, (1,), length=length)
    assert result == expected and isinstance(result, tuple)
    assert all(isinstance(n, int) for n in result)


@pytest.mark.parametrize(
    "value",
    ["a,b", "16,,32", "[16, 32", '[16, "x"]', "[[16], 32]", "16;32", "16 32", "[null]", "16.5,32"],
)
def test_conf_ints_not_integers(value):
    message = _raises_naming(conf_ints, value, (1,))
    assert "list of integers" in message and repr(value) in message


@pytest.mark.parametrize(
    "value, length, need",
    [
        ("[16, 0, 64]", None, "positive integers"),
        ("16,-32", None, "positive integers"),
        ("[]", None, "positive integers"),
        ("0", None, "positive integers"),
        ("[16, 32]", 3, "3 positive integers"),
        ("16,32,64,128", 3, "3 positive integers"),
        ("[0, 1, 2]", 3, "3 positive integers"),
    ],
)
def test_conf_ints_wrong_values_or_length(value, length, need):
    message = _raises_naming(conf_ints, value, (1,), length=length)
    assert f"must hold {need}" in message and repr(value) in message


@pytest.mark.parametrize("value", ["[16.7, 32]", "[true, 2]"])
def test_conf_ints_json_non_integers_are_refused(value):
    _raises_naming(conf_ints, value, (1,))


# ---------------------------------------------------------------- where: the source the message names

WHERE_CASES = [
    (conf_bool, "maybe", (True,), {}),
    (conf_float, "x", (0.5,), {}),
    (conf_float, "7", (0.5,), {"low": 0.0, "high": 1.0}),
    (conf_int, "x", (3,), {}),
    (conf_int, "0", (3,), {}),
    (conf_ints, "a,b", ((1,),), {}),
    (conf_ints, "[16, 32]", ((1,),), {"length": 3}),
]


@pytest.mark.parametrize("func, value, args, kwargs", WHERE_CASES)
def test_a_request_param_is_named_as_one(func, value, args, kwargs):
    """``where="params"``: the message names the request's parameter, and says nothing of ``--conf``."""
    with pytest.raises(ValueError) as info:
        func({"finetune": value}, "finetune", *args, where="params", **kwargs)
    message = str(info.value)
    assert message.startswith("params finetune must ") and "--conf" not in message


# ---------------------------------------------------------------- conf_choice, and the options every task reads


def test_conf_choice():
    from lib.conf import conf_choice

    assert conf_choice({KEY: " Approved "}, KEY, ("all", "approved"), "all") == "approved"
    assert conf_choice({}, KEY, ("all", "approved"), "all") == "all"
    message = _raises_naming(conf_choice, "some", ("all", "approved"), "all")
    assert "must be one of all, approved" in message and "'some'" in message


@pytest.mark.parametrize(
    "conf,words",
    [
        ({"train_on": "reviewed"}, "--conf train_on must be one of all, approved, got 'reviewed'"),
        ({"history_keep": "0"}, "--conf history_keep must be >= 1, got 0"),
        ({"history_keep": "many"}, "--conf history_keep must be an integer"),
    ],
)
def test_every_task_validates_train_on_and_history_keep(tmp_path, conf, words):
    from main import discover_configs

    config = discover_configs()["tumor_seg"]()
    with pytest.raises(ValueError) as refused:
        config.init("tumor_seg", str(tmp_path), conf, None)
    assert words in str(refused.value)


def test_train_on_and_history_keep_reach_the_trainer(tmp_path):
    from main import discover_configs

    config = discover_configs()["tumor_gate"]()
    config.init("tumor_gate", str(tmp_path), {"train_on": "APPROVED", "history_keep": "2"}, None)
    trainer = config.trainer()
    assert (trainer.train_on, trainer.history_keep) == ("approved", 2)
