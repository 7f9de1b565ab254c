"""Puts this folder on the import path, so that every test can use the shared helper modules
(``services``, ``waiting``, ``agent_helpers``…) whichever subset of the suite runs; and the fixtures
several test modules share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from uplink_support import Mosquitto


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A Mosquitto of the test module's own, on a free port (a module may kill or reconfigure it)."""
    from uplink_support import Mosquitto

    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as mq:
        yield mq
