"""Key rotation on the gateway: an event in the chain signed by the old key, followed by the store
without a new enrollment, and resumed correctly after a crash at any step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_helpers import reply
from sqlalchemy import select
from test_uplink_forwarder import GATEWAY, SITE, Store
from uplink_support import Mosquitto, Pipeline, cli

from blackbox.agent.control import Caller, ControlError
from blackbox.config import MqttConfig
from blackbox.model import Context, EventDraft
from blackbox.seal import (
    KEY_ROTATED,
    KeyChain,
    decode_records,
    generate_key_file,
    key_id,
    load_private_key,
    load_public_key,
    next_key_path,
    open_batch,
    rotation_data,
)
from blackbox.store.gateways import export_batches
from blackbox.store.schema import gateway_keys

CALLER = Caller(1000, "engineer", "li.na")


@pytest.fixture
def mqtt(broker: Mosquitto, tmp_path: Path) -> MqttConfig:
    return MqttConfig(host=broker.host, port=broker.port, topic_root=f"bbt-{tmp_path.name[-8:]}")


def record_into(p: Pipeline) -> Any:
    async def record(samples: Any, drafts: Any) -> Any:
        return await p.db(p.buffer.commit, samples, drafts, Context())
    return record


def signers(p: Pipeline) -> list[tuple[int, str, int]]:
    """(batch_seq, key_id, last_seq) of every sealed batch in the gateway's buffer."""
    out = []
    for b in p.buffer.undelivered(0, 10_000) or []:
        out.append((b.batch_seq, open_batch(b.wire).header.key_id, b.last_seq))
    return out


async def test_rotation_via_the_control_handler_is_followed_by_the_store(tmp_path: Path, mqtt: MqttConfig) -> None:
    (tmp_path / "agent").mkdir()
    p = Pipeline(tmp_path / "agent", mqtt)
    store = Store(tmp_path / "store.sqlite", mqtt)
    old = key_id(p.key)
    store.enroll(p.key)
    store.start()
    try:
        await p.start()
        await p.commit(100)
        await p.delivered()
        rotate = p.sealer.control_handlers(record_into(p))["keys.rotate"]
        result = await reply(rotate, {}, CALLER)
        new = result["new_key_id"]
        assert result["old_key_id"] == old and result["in_force"] == new != old
        assert key_id(load_private_key(p.key_file)) == new, "the key file now holds the new key"
        assert not next_key_path(p.key_file).exists()
        await p.commit(100)
        await p.delivered()

        with store.engine.connect() as conn:
            rows = {r.key_id: r for r in conn.execute(select(gateway_keys))}
        assert rows[old].valid_to_seq == result["seq"]
        assert rows[new].valid_from_seq == result["seq"] + 1 and rows[new].enrolled_by == "rotation"
        assert store.reading_seqs() == [r.seq for r in p.buffer.readings_between(1, p.buffer.last_seq)]

        # an auditor holding only the old key verifies the whole exported chain, rotation included
        files = export_batches(store.engine, SITE, GATEWAY, tmp_path / "export")
        chain = KeyChain([load_public_key(old_pem(store))])
        signed_by = []
        for f in files:
            opened = open_batch(f.read_bytes())
            chain.check(opened, decode_records(opened))
            signed_by.append(opened.header.key_id)
        assert signed_by[0] == old and signed_by[-1] == new
        pem = tmp_path / "old.pub.pem"
        pem.write_text(old_pem(store))
        out = cli("verify-batch", *map(str, files), "--key", str(pem))
        assert "chain intact" in out and f"rotates key {old} to {new}" in out
    finally:
        store.stop()
        await p.stop()


def old_pem(store: Store) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(select(gateway_keys.c.public_key_pem).where(
            gateway_keys.c.enrolled_by == "operator")).scalar_one())


async def test_a_second_rotation_while_one_is_pending_is_refused(tmp_path: Path, mqtt: MqttConfig) -> None:
    (tmp_path / "a").mkdir()
    p = Pipeline(tmp_path / "a", mqtt)
    try:
        await p.start(forward=False)
        generate_key_file(next_key_path(p.key_file))  # a rotation in progress (successor written)
        p.sealer._next_key = load_private_key(next_key_path(p.key_file))
        with pytest.raises(ControlError, match="in progress"):
            await reply(p.sealer.control_handlers(record_into(p))["keys.rotate"], {}, CALLER)
    finally:
        await p.stop()


async def sealed_records(d: Path, mqtt: MqttConfig, n: int) -> Pipeline:
    """A pipeline in a new directory ``d`` (not forwarding) that has recorded and sealed ``n`` readings."""
    d.mkdir()
    p = Pipeline(d, mqtt)
    await p.start(forward=False, seal=False)
    await p.commit(n)
    await p.sealer.flush()
    return p


async def crashed_after(tmp_path: Path, mqtt: MqttConfig, step: str) -> tuple[Path, str, str]:
    """Run a rotation by hand up to ``step`` and stop as a crash would; returns (dir, old id, new id)."""
    d = tmp_path / "agent"
    p = await sealed_records(d, mqtt, 10)
    old = p.key
    new = generate_key_file(next_key_path(p.key_file))
    if step != "successor written":
        await p.db(p.buffer.commit, [], [EventDraft(KEY_ROTATED, key_id(new), rotation_data(old, new, "x"))],
                   Context())
    if step == "rotation sealed":
        p.sealer._key_file = None  # seal the rotation, but crash before the key file is replaced
        p.sealer._next_key = new
        await p.sealer.flush()
    await p.commit(5)
    await p.stop()
    return d, key_id(old), key_id(new)


@pytest.mark.parametrize("step", ["rotation recorded", "rotation sealed"])
async def test_an_interrupted_rotation_is_finished_after_a_restart(tmp_path: Path, mqtt: MqttConfig,
                                                                   step: str) -> None:
    d, old, new = await crashed_after(tmp_path, mqtt, step)
    p = Pipeline(d, mqtt)  # the restarted agent: loads the (old) key file as the runtime does
    try:
        await p.start(forward=False, seal=False)
        await p.sealer.flush()
        batches = signers(p)
        rotation_batch = next(n for n, kid, last in batches if kid == old and last == 11)
        assert all(kid == old for n, kid, _ in batches if n <= rotation_batch)
        assert all(kid == new for n, kid, _ in batches if n > rotation_batch)
        assert batches[-1][2] == 16
        assert key_id(load_private_key(p.key_file)) == new
        assert not next_key_path(p.key_file).exists()
    finally:
        await p.stop()


async def test_a_successor_never_recorded_is_set_aside(tmp_path: Path, mqtt: MqttConfig) -> None:
    d, old, _ = await crashed_after(tmp_path, mqtt, "successor written")
    p = Pipeline(d, mqtt)
    try:
        await p.start(forward=False, seal=False)
        await p.sealer.flush()
        await p.sealer.seal_once()  # nothing left: the stale successor is resolved
        assert {kid for _, kid, _ in signers(p)} == {old}
        assert key_id(load_private_key(p.key_file)) == old
        assert not next_key_path(p.key_file).exists()
        assert list(d.glob("gateway.key.next.unused-*")), "the unused key is moved aside, not deleted"
    finally:
        await p.stop()


async def test_a_key_file_replaced_by_hand_signs_with_a_warning(tmp_path: Path, mqtt: MqttConfig,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "agent"
    p = await sealed_records(d, mqtt, 3)
    await p.stop()
    (d / "gateway.key").unlink()
    replacement = generate_key_file(d / "gateway.key")
    p = Pipeline(d, mqtt)
    try:
        await p.start(forward=False, seal=False)
        assert "which the store accepts only if an operator enrolled it" in caplog.text
        await p.commit(3)
        await p.sealer.flush()
        assert signers(p)[-1][1] == key_id(replacement)
    finally:
        await p.stop()
