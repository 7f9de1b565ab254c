"""The collector pause around a trace report leaves the collector as it found it, however the pauses overlap."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from blackbox.store.gc_pause import gc_paused


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_paused_inside_and_enabled_after_nested_pauses() -> None:
    gc.enable()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def test_enabled_again_after_an_exception() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_overlapping_pauses_in_threads_enable_it_once_the_last_ends() -> None:
    gc.enable()
    first_in, second_in, first_may_leave = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with gc_paused():
            first_in.set()
            first_may_leave.wait(10)
        seen.append(gc.isenabled())  # the second pause still holds

    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(10)
    with gc_paused():
        second_in.set()
        first_may_leave.set()
        thread.join(10)
        assert not thread.is_alive()
        assert not gc.isenabled()
    assert seen == [False]
    assert gc.isenabled()
