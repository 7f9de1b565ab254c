"""The MQTT topic namespace, one per site and gateway (SPEC §9), shared by uplink and store.

``{root}/{site}/{gateway}/batches``  sealed batches, agent -> store, QoS 1
``{root}/{site}/{gateway}/acks``     store acknowledgements, store -> agent, QoS 1
``{root}/{site}/{gateway}/alarms``   live alarm transitions, agent -> anyone, QoS 1
``{root}/{site}/{gateway}/status``   retained ``online``/``offline`` JSON; the will sets ``offline``
``{root}/{site}/{gateway}/proofs``   consistency-proof requests, agent -> store, QoS 1 (answered on ``acks``)
``{root}/log/checkpoint``            retained: the store's latest signed checkpoint (C2SP tlog-checkpoint)

Documented in docs/uplink.md.
"""

from __future__ import annotations

from dataclasses import dataclass

STORE_SHARE_GROUP = "blackbox-store"


@dataclass(frozen=True)
class GatewayTopics:
    root: str
    site: str
    gateway: str

    def _t(self, leaf: str) -> str:
        return f"{self.root}/{self.site}/{self.gateway}/{leaf}"

    @property
    def batches(self) -> str:
        return self._t("batches")

    @property
    def acks(self) -> str:
        return self._t("acks")

    @property
    def alarms(self) -> str:
        return self._t("alarms")

    @property
    def status(self) -> str:
        return self._t("status")

    @property
    def proofs(self) -> str:
        return self._t("proofs")


def store_batch_filter(root: str, shared: bool) -> str:
    """Subscription of the store: every gateway's batches, shared between store workers on MQTT 5."""
    plain = f"{root}/+/+/batches"
    return f"$share/{STORE_SHARE_GROUP}/{plain}" if shared else plain


def store_proofs_filter(root: str, shared: bool) -> str:
    """Subscription of the store to consistency-proof requests (any one store worker answers)."""
    plain = f"{root}/+/+/proofs"
    return f"$share/{STORE_SHARE_GROUP}/{plain}" if shared else plain


def store_checkpoint_topic(root: str) -> str:
    """Where the store publishes its latest signed checkpoint, retained (a two-level topic: never a gateway's)."""
    return f"{root}/log/checkpoint"


def store_status_filter(root: str) -> str:
    """Subscription of the store to every gateway's status (each store worker sees all of them)."""
    return f"{root}/+/+/status"


def parse_gateway_topic(root: str, topic: str) -> tuple[str, str, str] | None:
    """``(site, gateway, leaf)`` of a topic in the namespace, or ``None`` if the topic is not one."""
    parts = topic.split("/")
    root_parts = root.split("/")
    if len(parts) != len(root_parts) + 3 or parts[: len(root_parts)] != root_parts:
        return None
    return parts[-3], parts[-2], parts[-1]
