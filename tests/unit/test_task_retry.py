"""The task runtime keeps a task alive through retryable errors: state "retrying" with the reason, a capped
jittered back-off, one log line per streak, ``bizbus_task_restarts_total`` and ``bizbus_task_problem``;
only a fatal error (bad credentials, config) ends the task. (The real thing against PostgreSQL:
tests/chaos/test_pg_reconnect.py.)"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest
from bizbus.connectors.runtime.base import Task, TaskRuntime, TaskSpec, retry_delay
from prometheus_client import REGISTRY

from bizbus.errors import ConfigError
from bizbus.failures import Fatal, classify


class Scripted(Task):
    """Raises ``error()`` from each step while ``failing`` is set; counts steps and recoveries."""

    def __init__(self, error: Callable[[], Exception]) -> None:
        self.error = error
        self.failing = threading.Event()
        self.failing.set()
        self.steps = self.recovered = 0
        self.reported: str | None = None

    def step(self) -> int:
        self.steps += 1
        if self.failing.is_set():
            raise self.error()
        return 0

    def recover(self) -> None:
        self.recovered += 1

    def problem(self) -> str | None:
        return self.reported


def wait(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def sample(name: str, **labels: str) -> float:
    return float(REGISTRY.get_sample_value(name, labels) or 0.0)


def runtime(task: Task) -> tuple[TaskRuntime, str]:
    name = f"retry-{uuid.uuid4().hex[:8]}"
    return TaskRuntime(name, TaskSpec(0), task, idle_wait=0.01, retry_min=0.01, retry_max=0.05), name


def test_a_retryable_error_makes_the_task_retry_and_recover(caplog: pytest.LogCaptureFixture) -> None:
    task = Scripted(lambda: psycopg.OperationalError("server closed the connection unexpectedly"))
    rt, name = runtime(task)
    assert sample("bizbus_task_restarts_total", component=name, task="0", reason="connection") == 0  # from start
    caplog.set_level(logging.INFO, logger="bizbus.connectors.runtime.base")
    rt.start()
    try:
        wait(lambda: task.steps >= 5)
        assert rt.state == "retrying" and rt.error is None
        assert rt.problem() is not None and "server closed the connection" in rt.problem()  # type: ignore[operator]
        assert sample("bizbus_task_problem", component=name, task="0") == 1
        assert sample("bizbus_task_restarts_total", component=name, task="0", reason="connection") >= 4
        assert task.recovered >= task.steps - 2  # recover() before every step of the streak but the first
        task.failing.clear()
        wait(lambda: rt.state == "running")
        assert rt.problem() is None
        wait(lambda: sample("bizbus_task_problem", component=name, task="0") == 0)
        task.reported = "waiting for the target: HTTP 503"  # the task's own problem shows once it runs
        wait(lambda: rt.problem() == "waiting for the target: HTTP 503")
        wait(lambda: sample("bizbus_task_problem", component=name, task="0") == 1)
    finally:
        rt.stop()
        rt.join(5)
    assert rt.state == "stopped"
    lines = [r.getMessage() for r in caplog.records if r.name == "bizbus.connectors.runtime.base" and name in r.getMessage()]
    assert sum("retrying with back-off" in m for m in lines) == 1, lines  # one line per streak, not per attempt
    assert sum("working again" in m for m in lines) == 1, lines


@pytest.mark.parametrize("error", [
    lambda: Fatal("credentials refused", reason="auth"),
    lambda: psycopg.OperationalError('connection failed: FATAL:  password authentication failed for user "bus"'),
    lambda: ConfigError("topic x is not in the catalogue"),
])  # fmt: skip
def test_a_fatal_error_ends_the_task(error: Callable[[], Exception]) -> None:
    task = Scripted(error)
    rt, name = runtime(task)
    rt.start()
    rt.join(5)
    assert rt.state == "failed" and task.steps == 1 and task.recovered == 0
    assert type(rt.error) is type(error())
    assert (rt.problem() or "").startswith("failed: ")
    assert sample("bizbus_task_problem", component=name, task="0") == 1


def test_postgres_refusals_are_fatal_and_outages_retryable() -> None:
    refused = ['connection failed: connection to server at "db", port 5432 failed: FATAL:  role "bus" does not exist',
               'connection failed: FATAL:  database "bus" does not exist',
               'connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "bus"']  # fmt: skip
    for text in refused:
        assert classify(psycopg.OperationalError(text)).error_class == "fatal", text
    away = ['connection failed: connection to server at "db", port 5432 failed: Connection refused',
            "connection failed: FATAL:  the database system is starting up",
            "terminating connection due to administrator command", "server closed the connection unexpectedly"]
    for text in away:
        err = classify(psycopg.OperationalError(text))
        assert (err.error_class, err.reason) == ("retryable", "connection"), text


def test_retry_delay_grows_to_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    for attempt in range(1, 40):
        base = min(30.0, 0.5 * 2 ** (attempt - 1))
        d = retry_delay(attempt, rng)
        assert base * 0.5 <= d <= base, (attempt, d)
    assert {round(retry_delay(3, rng), 6) for _ in range(20)} != {2.0}  # not every task waits the same
