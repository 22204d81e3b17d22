"""``bizbus up`` restarts a dead embedded broker a bounded number of times within a window."""

from __future__ import annotations

from bizbus.devstack.up import RestartBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_at_most_limit_restarts_within_the_window_then_again_once_old_ones_age_out() -> None:
    clock = Clock()
    budget = RestartBudget(3, 600, clock)
    assert [budget.take() for _ in range(3)] == [True, True, True]
    assert budget.used == 3
    assert not budget.take()  # the fourth within 10 minutes: give up
    clock.now += 601  # the three have aged out of the window
    assert budget.take() and budget.used == 1
    assert "after 3 restart(s) within 10 min" in budget.spent_text()


def test_zero_means_never_restart() -> None:
    budget = RestartBudget(0, 600, Clock())
    assert not budget.take()
    assert "restarts are off" in budget.spent_text() and "BIZBUS_BROKER_RESTARTS=0" in budget.spent_text()
