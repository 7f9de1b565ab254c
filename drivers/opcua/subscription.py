"""Subscription mode: one OPC UA subscription with a monitored item per node, and its watchdog.

asyncua's high-level ``Subscription`` either queues at most 1,000 events and silently drops the
oldest (the async-iterator mode) or starts one task per notification (the handler mode). This
feed registers its own publish callback on the session instead: each PublishResponse becomes one
list of samples in the callback itself, nothing is dropped without being counted, and the
callback is cheap enough for thousands of items at 100 ms.

Counted losses: a monitored item whose server-side queue overflowed (the Overflow info bit on
the value), and notification messages missing from the sequence numbers. The feed also notes
when the last publish response (data or keep-alive) arrived, so that the driver's watchdog can
rebuild a subscription that went silent while the connection stayed up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence

from asyncua import Client, ua
from asyncua.ua.uaerrors import UaError

from blackbox.model import Quality, Sample
from drivers.opcua.config import OpcUaSourceConfig
from drivers.opcua.values import OVERFLOW_BITS, Node, status_name, to_sample

log = logging.getLogger(__name__)

KEEPALIVE_TARGET_S = 2.0
"""About how often a subscription with no changes still sends a keep-alive."""
NUMERIC_TYPES = frozenset({"Double", "Float", "Int16", "Int32", "Int64", "UInt16", "UInt32", "UInt64"})
"""Types a deadband filter applies to (a server refuses one on text or flags)."""
FILTER_REFUSED = frozenset({ua.StatusCodes.BadMonitoredItemFilterUnsupported, ua.StatusCodes.BadFilterNotAllowed,
                            ua.StatusCodes.BadDeadbandFilterInvalid, ua.StatusCodes.BadMonitoredItemFilterInvalid})


class Feed:
    """One subscription of a source on one session.

    ``sink`` receives the samples of every publish response; ``on_status`` the name of a status
    change the server (or asyncua, on a lost link) reports for the subscription.
    """

    def __init__(self, client: Client, nodes: Sequence[Node], cfg: OpcUaSourceConfig, *,
                 sink: Callable[[list[Sample]], None], on_status: Callable[[str], None],
                 max_items_per_call: int = 0) -> None:
        self._client = client
        self._nodes = list(nodes)
        self._cfg = cfg
        self._sink = sink
        self._on_status = on_status
        self._max_items = max_items_per_call
        self.subscription_id: int | None = None
        self.publishing_interval_s = cfg.publishing_interval_s
        self.keepalive_count = 1
        self.last_publish_at = time.monotonic()
        self.notifications = 0
        self.overflows = 0
        """Values the server discarded because an item's queue was full (queue_size too small)."""
        self.missed_messages = 0
        """Notification messages that never arrived (gaps in the sequence numbers)."""
        self.filter_fallbacks: list[str] = []
        """Tags the server refused a deadband for; they are subscribed without one."""
        self._last_seq: int | None = None

    @property
    def watchdog_s(self) -> float:
        """Silence (no data, no keep-alive) after which the subscription counts as dead."""
        if self._cfg.watchdog is not None:
            return self._cfg.watchdog
        return 3 * self.publishing_interval_s * self.keepalive_count + self._cfg.timeout

    def silent_for(self) -> float:
        return time.monotonic() - self.last_publish_at

    async def create(self) -> list[Sample]:
        """Create the subscription and its items; bad samples for the items the server refused."""
        cfg = self._cfg
        interval_ms = cfg.publishing_interval_s * 1000
        keepalive = max(1, math.ceil(KEEPALIVE_TARGET_S / cfg.publishing_interval_s))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval_ms, RequestedMaxKeepAliveCount=keepalive,
            RequestedLifetimeCount=10 * keepalive, MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
        result = await self._client.uaclient.create_subscription(params, self._on_publish)
        self.subscription_id = result.SubscriptionId
        self.publishing_interval_s = result.RevisedPublishingInterval / 1000 or cfg.publishing_interval_s
        self.keepalive_count = max(1, int(result.RevisedMaxKeepAliveCount))
        self._last_seq = None
        self.last_publish_at = time.monotonic()
        handles = list(range(len(self._nodes)))
        refused = await self._create_items(handles, with_filter=cfg.deadband_type != "none")
        retry = [h for h, code in refused.items() if code in FILTER_REFUSED]
        if retry:
            self.filter_fallbacks = [self._nodes[h].name for h in retry]
            log.warning("%s: the server refused the %s deadband for %s; subscribed without it", cfg.name,
                        cfg.deadband_type, ", ".join(self.filter_fallbacks))
            for h in retry:
                del refused[h]
            refused.update(await self._create_items(retry, with_filter=False))
        return [Sample(self._nodes[h].name, None, Quality.BAD, status_name(code))
                for h, code in sorted(refused.items())]

    async def delete(self, timeout: float) -> None:
        """Delete the subscription on the server, if it can still be reached; never raises."""
        sid, self.subscription_id = self.subscription_id, None
        if sid is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._client.uaclient.delete_subscriptions([sid])
        except (TimeoutError, OSError, UaError) as exc:
            log.debug("%s: deleting subscription %s failed: %s", self._cfg.name, sid, exc)

    async def _create_items(self, handles: list[int], *, with_filter: bool) -> dict[int, int]:
        """Create monitored items for ``handles`` (indexes into the nodes); the status codes of the refused."""
        cfg = self._cfg
        requests = []
        for handle in handles:
            node = self._nodes[handle]
            mfilter = None
            if with_filter and node.type in NUMERIC_TYPES:
                kind = ua.DeadbandType.Absolute if cfg.deadband_type == "absolute" else ua.DeadbandType.Percent
                mfilter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=kind,
                                              DeadbandValue=cfg.deadband_value)
            requests.append(ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=node.node_id, AttributeId=ua.AttributeIds.Value),
                MonitoringMode=ua.MonitoringMode.Reporting,
                RequestedParameters=ua.MonitoringParameters(
                    ClientHandle=handle, SamplingInterval=cfg.sampling_interval_s * 1000, Filter=mfilter,
                    QueueSize=cfg.queue_size, DiscardOldest=True)))
        size = self._max_items or len(requests) or 1
        refused: dict[int, int] = {}
        for i in range(0, len(requests), size):
            part = requests[i:i + size]
            results = await self._client.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
                SubscriptionId=self.subscription_id, TimestampsToReturn=ua.TimestampsToReturn.Both,
                ItemsToCreate=part))
            for request, result in zip(part, results, strict=True):
                if not result.StatusCode.is_good():
                    refused[request.RequestedParameters.ClientHandle] = result.StatusCode.value
        return refused

    def _on_publish(self, result: ua.PublishResult) -> None:
        """asyncua's publish loop calls this for every response to this subscription (keep-alives too)."""
        if result.SubscriptionId != self.subscription_id:
            return  # a subscription this feed has replaced
        self.last_publish_at = time.monotonic()
        message = result.NotificationMessage
        if not message.NotificationData:
            return  # keep-alive
        seq = int(message.SequenceNumber)
        if self._last_seq is not None and seq > self._last_seq + 1:
            self.missed_messages += seq - self._last_seq - 1
        self._last_seq = seq
        nodes = self._nodes
        samples: list[Sample] = []
        for data in message.NotificationData:
            if isinstance(data, ua.DataChangeNotification):
                for item in data.MonitoredItems:
                    handle = item.ClientHandle
                    if not 0 <= handle < len(nodes):
                        continue
                    dv = item.Value
                    if dv.StatusCode is not None and dv.StatusCode.value & OVERFLOW_BITS == OVERFLOW_BITS:
                        self.overflows += 1
                    node = nodes[handle]
                    samples.append(to_sample(node.name, node.type, dv))
            elif isinstance(data, ua.StatusChangeNotification):
                self._on_status(status_name(data.Status.value))
        if samples:
            self.notifications += len(samples)
            self._sink(samples)
