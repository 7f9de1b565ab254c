"""Acknowledgements on a gateway's topic that are not about its own batches: anyone may publish on
the gateway's batch topic, and the store answers each message there. Such rejections are counted
and shown, never taken for the gateway's own (no ERROR, no rejected count, the batch keeps its slot,
even when the forged batch has the batch_seq of one of ours in flight).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from test_uplink_forwarder import make_pipeline, mqtt  # noqa: F401 - fixtures
from waiting import eventually


def ack(batch_seq: int | None, hash_: str | None, reason: str = "fork") -> bytes:
    return orjson.dumps({"batch_seq": batch_seq, "hash": hash_, "status": "rejected", "reason": reason})


async def test_rejections_of_batches_not_ours_are_counted_not_reported_as_ours(
        make_pipeline: Any, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811 - fixture imported above
    p = make_pipeline(uplink={"ack_timeout": 30})  # no store: our batch 1 stays in flight
    await p.commit(5)
    await p.start()
    await eventually(lambda: p.forwarder.stats().in_flight == 1, 10, "batch 1 to go out")
    with caplog.at_level(logging.DEBUG, logger="blackbox.uplink.forwarder"):
        p.forwarder.on_ack(ack(1, "ab" * 32))  # a forged batch 1 on our topic, refused by the store
        p.forwarder.on_ack(ack(7, "cd" * 32, "unknown_key"))  # a batch we never sealed
        p.forwarder.on_ack(ack(None, None, "malformed"))  # bytes the store could not even open
        await eventually(lambda: p.forwarder.stats().ignored_acks == 3, 10, "three foreign acks to be counted")
    stats = p.forwarder.stats()
    assert (stats.rejected, stats.last_rejection) == (0, None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    assert stats.in_flight == 1  # our batch 1 keeps its place in the window, not marked rejected
