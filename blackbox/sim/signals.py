"""Small building blocks for simulated signals: seeded noise and first-order lags."""

from __future__ import annotations

import math
import random


def stream(seed: int, name: str) -> random.Random:
    """An independent random stream per signal.

    Seeding with a string is deterministic across processes (``random`` hashes it with SHA-512,
    not with the salted ``hash()``), and one stream per signal means adding a signal or a fault
    never shifts the values of the others.
    """
    return random.Random(f"{seed}:{name}")


class Noise:
    """White measurement noise plus a slow AR(1) wander, as a real transmitter shows.

    Call once per step whether or not the value is used, so that a stream's position depends
    only on the step number.
    """

    def __init__(self, seed: int, name: str, sigma: float, wander: float = 0.0,
                 correlation_s: float = 300.0, dt: float = 1.0) -> None:
        self._rng = stream(seed, name)
        self._sigma = sigma
        self._a = math.exp(-dt / correlation_s)
        self._b = math.sqrt(1.0 - self._a * self._a) * wander
        self._w = 0.0

    def __call__(self) -> float:
        gauss = self._rng.gauss
        white = gauss(0.0, 1.0)
        self._w = self._a * self._w + self._b * gauss(0.0, 1.0)
        return self._sigma * white + self._w


def lag(x: float, target: float, tau: float, dt: float, max_rate: float | None = None) -> float:
    """One step of a first-order lag towards ``target`` (time constant ``tau``), rate-limited."""
    delta = (target - x) * (1.0 - math.exp(-dt / tau))
    if max_rate is not None:
        limit = max_rate * dt
        delta = max(-limit, min(limit, delta))
    return x + delta
