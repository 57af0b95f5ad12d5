"""Fuzzing the schedule JSON loader: anything malformed is a ScheduleError, never another exception."""

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lees import Schedule, ScheduleError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

VALID = Schedule(
    np.array([[True, False, True], [False, True, True]]),
    ["a", "b"],
    [900, 500, 100],
    "learned",
    {"lam": 0.05},
    [0.3, 0.2],
).to_dict()


def _load(data) -> None:
    try:
        schedule = Schedule.from_dict(data)
    except ScheduleError:
        return
    # whatever loads is a consistent schedule that writes back to the same table
    assert schedule.table.shape == (len(schedule.block_names), len(schedule.timesteps))
    assert (
        Schedule.from_dict(json.loads(json.dumps(schedule.to_dict()))).table.tolist()
        == schedule.table.tolist()
    )


def _load_file(path) -> None:
    try:
        schedule = Schedule.load(path)
    except ScheduleError:
        return
    _load(schedule.to_dict())


@given(JSON)
@settings(max_examples=300, deadline=None)
def test_arbitrary_json(data):
    _load(data)


@given(st.sampled_from(sorted(VALID)), JSON)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_one_field_replaced(key, value):
    _load({**VALID, key: value})


@given(st.sampled_from(sorted(VALID)))
def test_one_field_missing(key):
    _load({k: v for k, v in VALID.items() if k != key})


@given(st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_arbitrary_file_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "schedule.json"
    path.write_bytes(raw)
    _load_file(path)


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_truncated_valid_file(tmp_path_factory, cut):
    text = json.dumps(VALID)
    path = tmp_path_factory.mktemp("fuzz") / "schedule.json"
    path.write_text(text[: len(cut) % len(text)])
    _load_file(path)
