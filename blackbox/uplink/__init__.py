"""The uplink: MQTT session and store-and-forward of sealed batches with end-to-end acks."""

from blackbox.uplink.forwarder import Forwarder
from blackbox.uplink.session import UplinkSession

__all__ = ["Forwarder", "UplinkSession"]
