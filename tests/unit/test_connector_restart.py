"""``Connector.restart_tasks`` (``POST /connectors/NAME/restart``): the old tasks stop with drain and are
closed, new ones are built from the same specs, set up and started; a paused connector's new tasks are
paused before they take a batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from bizbus.connectors.runtime.base import Connector, Task, TaskSpec


class Recorder(Task):
    def __init__(self, spec: TaskSpec, log: list[str]) -> None:
        self.spec, self.log, self.steps = spec, log, 0

    def setup(self) -> None:
        self.log.append(f"setup {self.spec.task_id}")

    def step(self) -> int:
        self.steps += 1
        return 0

    def pause(self) -> None:
        self.log.append(f"pause {self.spec.task_id} after {self.steps} steps")

    def drain(self) -> None:
        self.log.append(f"drain {self.spec.task_id}")

    def close(self) -> None:
        self.log.append(f"close {self.spec.task_id}")


class Two(Connector):
    kind: ClassVar[Any] = "sink"

    def __init__(self) -> None:
        super().__init__("two", None, None)  # type: ignore[arg-type]
        self.log: list[str] = []
        self.closed_connector = False

    def task_specs(self, max_tasks: int) -> list[TaskSpec]:
        return [TaskSpec(0), TaskSpec(1)]

    def create_task(self, spec: TaskSpec) -> Task:
        return Recorder(spec, self.log)

    def close(self) -> None:  # what setup() opened besides the tasks must survive a restart
        self.closed_connector = True
        super().close()

    @property
    def max_tasks(self) -> int:
        return 2


def wait(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(cond())


@contextmanager
def running(c: Two) -> Iterator[None]:
    """``c`` set up and its ``run`` loop in a thread; stopped afterwards, every task then stopped."""
    c.setup()
    stop = threading.Event()
    runner = threading.Thread(target=c.run, args=(stop,), daemon=True)
    runner.start()
    try:
        yield
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive() and set(c.states().values()) == {"stopped"}


def test_restart_drains_closes_and_starts_new_tasks_from_the_same_specs() -> None:
    c = Two()
    with running(c):
        old = list(c.runtimes)
        assert wait(lambda: all(rt.task.steps > 0 for rt in old))  # type: ignore[attr-defined]
        c.log.clear()
        c.restart_tasks()
        assert sorted(c.log) == ["close 0", "close 1", "drain 0", "drain 1", "setup 0", "setup 1"]  # no pause
        assert c.log.index("close 0") < c.log.index("setup 0")  # closed before the new ones are set up
        assert [rt.spec for rt in c.runtimes] == [rt.spec for rt in old]
        assert all(rt.state == "stopped" for rt in old) and not c.closed_connector
        assert wait(lambda: set(c.states().values()) == {"running"})
        assert wait(lambda: all(rt.task.steps > 0 for rt in c.runtimes))  # type: ignore[attr-defined]


def test_a_paused_connector_restarts_paused_and_its_new_tasks_take_no_batch() -> None:
    c = Two()
    with running(c):
        c.pause()
        assert wait(lambda: set(c.states().values()) == {"paused"})
        c.log.clear()
        c.restart_tasks()  # paused=None: as the old tasks were
        assert wait(lambda: set(c.states().values()) == {"paused"})
        # a paused task still steps (a sink keeps polling to stay in its group, its partitions paused), but
        # the pause reaches each new task before its first step
        assert sorted(x for x in c.log if x.startswith("pause")) == ["pause 0 after 0 steps", "pause 1 after 0 steps"]
        c.restart_tasks(paused=False)
        assert wait(lambda: set(c.states().values()) == {"running"})
