"""The gateway clock: jumps of the wall clock against the boot clock are found, timestamps never go back."""

from __future__ import annotations

from agent_helpers import FakeClock

from blackbox.agent.clock import StepWatch


def test_steady_time_and_small_corrections_are_not_jumps() -> None:
    fake = FakeClock()
    clock = fake.gateway_clock(threshold_s=1.0)
    times = []
    for _ in range(5):
        fake.advance(0.5, jump=0.2)  # NTP slewing or a small step stays under the threshold
        ts, jump = clock.now()
        assert jump is None
        times.append(ts)
    assert times == sorted(times) and clock.jumps == 0


def test_a_forward_jump_is_recorded_and_followed() -> None:
    fake = FakeClock()
    clock = fake.gateway_clock()
    first, _ = clock.now()
    fake.advance(1.0, jump=3600)
    ts, jump = clock.now()
    assert jump is not None and jump.type == "clock.jump"
    assert jump.data["direction"] == "forward" and jump.data["delta_us"] == 3600 * 10**6
    assert jump.data["from_us"] == first + 10**6 and jump.data["to_us"] == ts
    assert "held_until_us" not in jump.data


def test_a_backward_jump_holds_the_time_until_the_wall_clock_passes_it() -> None:
    fake = FakeClock()
    clock = fake.gateway_clock()
    fake.advance(1.0)
    before, _ = clock.now()
    fake.advance(1.0, jump=-10)
    held, jump = clock.now()
    assert jump is not None and jump.data["direction"] == "backward"
    assert held == before and jump.data["held_until_us"] == before
    fake.advance(5.0)
    assert clock.now() == (before, None)  # still behind
    fake.advance(10.0)
    ts, jump = clock.now()
    assert jump is None and ts > before  # follows the wall clock again
    assert clock.jumps == 1


def test_a_clock_set_back_while_the_agent_was_stopped_is_found_at_start() -> None:
    fake = FakeClock()
    floor = fake.wall_ns // 1000 + 600 * 10**6  # the last commit before the restart was 10 minutes "later"
    clock = fake.gateway_clock(floor_us=floor)
    ts, jump = clock.now()
    assert jump is not None and jump.data["direction"] == "backward" and "note" in jump.data
    assert ts == floor
    unchanged = fake.gateway_clock(floor_us=fake.wall_ns // 1000 - 10**6)
    assert unchanged.now()[1] is None



def test_step_watch_reports_a_step_beyond_the_threshold_and_remembers_each_offset() -> None:
    """The one step rule (used by clock.jump events and the batch header's clock status), by hand."""
    watch = StepWatch(threshold_us=1_000_000)
    offsets = [5_000, 5_900, 1_005_901, 1_005_901, 6_000, -2_000_000, -1_000_000]
    assert [watch.step_us(o) for o in offsets] == [
        None,        # nothing to compare with yet
        None,        # +900 µs
        1_000_001,   # forward, just beyond the threshold
        None,        # unchanged
        None,        # back by 999_901 µs: under the threshold
        -2_006_000,  # back by 2.006 s
        None,        # forward by exactly the threshold: not beyond it
    ]
