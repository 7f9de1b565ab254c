"""The sealer refuses what it could not seal faithfully, and says why."""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from blackbox.model import Event, Quality, Reading
from blackbox.seal import decode_records, open_batch, seal_batch

from .helpers import make_records


def reading(seq: int = 1, value: Any = 1.0, **over: Any) -> Reading:
    r = Reading(seq, "T", value, Quality.GOOD, None, 10, None, None, None)
    return dataclasses.replace(r, **over)


def event(seq: int = 1, data: Any = None, **over: Any) -> Event:
    e = Event(seq, "x.y", None, {} if data is None else data, 10, None, None)
    return dataclasses.replace(e, **over)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(seal_args: dict[str, Any], bad: float) -> None:
    with pytest.raises(ValueError, match="NaN and infinity cannot be sealed"):
        seal_batch([reading(value=bad)], **seal_args)


@pytest.mark.parametrize(
    "data",
    [
        {"x": math.nan},
        {"a": {"b": [1, 2, {"c": -math.inf}]}},
        {"list": [math.inf]},
    ],
)
def test_non_finite_numbers_in_event_data_are_refused(seal_args: dict[str, Any], data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="NaN and infinity"):
        seal_batch([event(data=data)], **seal_args)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"when": datetime.datetime(2026, 1, 1)}, "type datetime"),
        ({"pair": (1, 2)}, "type tuple"),
        ({"set": {1}}, "type set"),
        ({"raw": b"x"}, "type bytes"),
        ({1: "int key"}, "keys must be strings"),
        ({"big": 2**64}, "out of range"),
        ({"s": "\ud800"}, "cannot be encoded as JSON"),
    ],
)
def test_data_that_would_not_round_trip_is_refused(seal_args: dict[str, Any], data: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        seal_batch([event(data=data)], **seal_args)


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (reading(value=[1, 2]), "value has type list"),
        (reading(value=b"\x00"), "value has type bytes"),
        (reading(value=-(2**63) - 1), "out of range"),
        (reading(quality="great"), "quality must be one of"),
        (reading(tag=""), "tag must not be empty"),
        (reading(ts_us=1.5), "ts_us must be an integer"),
        (reading(ts_us=2**63), "ts_us is out of range"),
        (reading(source_ts_us="now"), "source_ts_us must be an integer"),
        (event(type=""), "type must not be empty"),
        (event(data=[1]), "data must be an object"),
    ],
)
def test_invalid_records_are_refused(seal_args: dict[str, Any], record: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        seal_batch([record], **seal_args)


def test_a_plain_string_quality_is_accepted(seal_args: dict[str, Any]) -> None:
    (decoded,) = decode_records(open_batch(seal_batch([reading(quality="bad", value=None)], **seal_args).wire))
    assert isinstance(decoded, Reading) and decoded.quality is Quality.BAD


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([], "empty batch"),
        ([reading(1), reading(3)], "contiguous"),
        ([reading(2), reading(1)], "contiguous"),
        ([reading(1), reading(1)], "contiguous"),
        ([reading(-1)], "seq is out of range"),
        ([reading(True)], "integer seq"),
        (["not a record"], "integer seq"),
    ],
)
def test_sequence_rules(seal_args: dict[str, Any], records: list[Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        seal_batch(records, **seal_args)


def test_a_non_record_with_a_seq_is_refused(seal_args: dict[str, Any]) -> None:
    @dataclasses.dataclass
    class Fake:
        seq: int
        ts_us: int

    with pytest.raises(ValueError, match="only Reading and Event"):
        seal_batch([Fake(1, 10)], **seal_args)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"prev_hash": "0" * 63}, "prev_hash must be 64 lowercase hex"),
        ({"prev_hash": "A" * 64}, "prev_hash must be 64 lowercase hex"),
        ({"config_hash": ""}, "config_hash must be 64 lowercase hex"),
        ({"compression": "brotli"}, "unknown compression"),
        ({"gateway": "gw 1"}, "gateway must be an identifier"),
        ({"site": "site/1"}, "site must be an identifier"),
        ({"clock": ""}, "clock"),
        ({"batch_seq": -1}, "batch_seq is out of range"),
    ],
)
def test_bad_arguments(seal_args: dict[str, Any], over: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        seal_batch(make_records()[:2], **{**seal_args, **over})


def test_key_must_be_ed25519(seal_args: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="Ed25519PrivateKey"):
        seal_batch(make_records()[:1], **{**seal_args, "key": generate_private_key(SECP256R1())})


def test_oversized_batch_is_refused(seal_args: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("blackbox.seal.format.MAX_RECORDS_BYTES", 1000)
    with pytest.raises(ValueError, match="seal fewer"):
        seal_batch([reading(value="x" * 2000)], **seal_args)


def test_float_subclasses_are_sealed_as_plain_floats(seal_args: dict[str, Any]) -> None:
    class Float64(float):  # what numpy.float64 looks like to the sealer
        pass

    (decoded,) = decode_records(open_batch(seal_batch([reading(value=Float64(0.1))], **seal_args).wire))
    assert isinstance(decoded, Reading) and type(decoded.value) is float and decoded.value == 0.1
