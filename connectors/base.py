"""Connector and task model shared by sources and sinks (the Kafka Connect split, in Python).

* A **connector** has a typed config (a frozen pydantic model, ``Config``), checks it against the
  world in ``validate()`` (catalogue topics exist, secrets are present) and splits its work into
  ``task_specs(max_tasks)``; it builds one **task** per spec.
* A **task** is a loop made of ``step()`` calls (one batch each). The runtime around it gives the
  lifecycle: start, pause, resume, and stop with drain (the current batch finishes, its offsets or
  cursor are committed, then ``close()``).
* Scheduling: in one process each task runs in its own thread. Across processes, sink tasks of the same
  connector are members of one consumer group (``bizbus-sink-<name>``), so Kafka spreads partitions;
  source tasks take a lease per shard (connectors/lease.py), so two processes never read one shard —
  a second worker stands by and takes over when the first dies.

A connector is a ``bizbus.components.Component``, so the pipeline YAML refers to it by its type name
(``bizbus.components.COMPONENT_TYPES``) and ``bizbus up`` / ``bizbus worker`` run it.
"""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from dataclasses import dataclass, field
from threading import Event
from typing import Any, ClassVar, Literal

from bizbus import metrics
from bizbus.components import Component

log = logging.getLogger(__name__)

TASK_STATE = metrics.TASK_RUNNING
_RESTART_LOCK = threading.Lock()  # one restart at a time in a process (they are rare, operator-driven)


@dataclass(frozen=True)
class TaskSpec:
    """One unit of work a connector hands to a task (Kafka Connect's ``taskConfigs`` entry)."""

    task_id: int
    shard: str | None = None  # a source shard the task must lease; None for sink tasks
    settings: dict[str, Any] = field(default_factory=dict)


class Task:
    """A loop of ``step()`` calls; ``__init__`` stores settings, ``setup()`` opens connections."""

    def setup(self) -> None:
        """Open connections."""

    @abstractmethod
    def step(self) -> int:
        """Do one batch; return how many records it moved (0 = idle, the runtime may back off a little)."""

    def pause(self) -> None:
        """Stop taking new work but keep group membership / leases (called from the task's thread)."""

    def resume(self) -> None:
        """Undo ``pause``."""

    def drain(self) -> None:
        """Finish in-flight work and commit (offsets, cursor) before ``close``."""

    def close(self) -> None:
        """Release connections."""


class TaskRuntime:
    """Runs one task in a thread with start / pause / resume / stop-with-drain."""

    def __init__(self, connector: str, spec: TaskSpec, task: Task, idle_wait: float = 0.05) -> None:
        self.connector, self.spec, self.task, self.idle_wait = connector, spec, task, idle_wait
        self.stop_event = Event()
        self._paused = Event()
        self._applied_pause = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._loop, name=f"task-{connector}-{spec.task_id}", daemon=True
        )

    @property
    def state(self) -> Literal["running", "paused", "failed", "stopped"]:
        if self.error is not None:
            return "failed"
        if not self.thread.is_alive():
            return "stopped"
        return "paused" if self._applied_pause else "running"

    def start(self) -> None:
        self.thread.start()

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def _loop(self) -> None:
        gauge = TASK_STATE.labels(self.connector, str(self.spec.task_id))
        gauge.set(1)
        try:
            while not self.stop_event.is_set():
                if self._paused.is_set() != self._applied_pause:
                    (self.task.pause if self._paused.is_set() else self.task.resume)()
                    self._applied_pause = self._paused.is_set()
                    gauge.set(0 if self._applied_pause else 1)
                    log.info("task %s/%d %s", self.connector, self.spec.task_id, self.state)
                moved = self.task.step()
                if not moved:
                    self.stop_event.wait(self.idle_wait)
            self.task.drain()
        except Exception as exc:  # kept for /readyz and the connector's state; never swallowed
            self.error = exc
            log.exception("task %s/%d failed: %s", self.connector, self.spec.task_id, exc)
        finally:
            gauge.set(0)


class Connector(Component):
    """A source or sink connector: typed config, validation, tasks. Subclasses set ``Config`` and ``kind``."""

    kind: ClassVar[Literal["source", "sink"]]

    def validate(self) -> None:
        """Check the config against the world (catalogue, environment); raise ``ConfigError`` with the fix."""

    @abstractmethod
    def task_specs(self, max_tasks: int) -> list[TaskSpec]:
        """Split the work; at most ``max_tasks`` specs."""

    @abstractmethod
    def create_task(self, spec: TaskSpec) -> Task:
        """Build (not set up) the task for ``spec``."""

    @property
    def max_tasks(self) -> int:
        return int(getattr(self.config, "tasks_max", 1))

    def setup(self) -> None:
        self.validate()
        self.runtimes: list[TaskRuntime] = []
        for spec in self.task_specs(self.max_tasks):
            task = self.create_task(spec)
            task.setup()
            self.runtimes.append(TaskRuntime(self.name, spec, task))

    def run(self, stop: Event) -> None:
        for rt in self.runtimes:
            rt.start()
        while not stop.wait(0.2):
            failed = [rt for rt in self.runtimes if rt.error is not None]
            if failed:
                self.stop_tasks()
                raise RuntimeError(
                    f"connector {self.name}: task {failed[0].spec.task_id} failed: {failed[0].error}"
                )
        self.stop_tasks()

    def pause(self) -> None:
        for rt in self.runtimes:
            rt.pause()

    def resume(self) -> None:
        for rt in self.runtimes:
            rt.resume()

    def stop_tasks(self, timeout: float = 30.0) -> None:
        """Stop with drain: every task finishes its batch and commits, then returns."""
        for rt in self.runtimes:
            rt.stop()
        for rt in self.runtimes:
            rt.join(timeout)

    def restart_tasks(self, timeout: float = 30.0, paused: bool | None = None) -> None:
        """Stop the tasks with drain, close them, build and set up new ones from the same specs, start them
        (``POST /connectors/NAME/restart``). The connector's own ``run`` loop keeps watching the new ones.
        ``paused``: whether the new tasks start paused (None: as the old ones were)."""
        with _RESTART_LOCK:
            old = list(getattr(self, "runtimes", []))
            if paused is None:
                paused = any(rt.state == "paused" for rt in old)
            self.stop_tasks(timeout)
            Connector.close(self)  # the tasks only: a subclass's close() also closes what setup() opened
            fresh: list[TaskRuntime] = []
            for rt in old:
                task = self.create_task(rt.spec)
                task.setup()
                fresh.append(TaskRuntime(self.name, rt.spec, task))
            self.runtimes = fresh
            for rt in fresh:
                if paused:
                    rt.pause()  # before start: a paused connector's new tasks never take a batch
                rt.start()
            log.info("connector %s: %d task(s) restarted", self.name, len(fresh))

    def states(self) -> dict[int, str]:
        return {rt.spec.task_id: rt.state for rt in getattr(self, "runtimes", [])}

    def close(self) -> None:
        for rt in getattr(self, "runtimes", []):
            try:
                rt.task.close()
            except Exception as exc:  # closing the others matters more than this error
                log.warning("closing task %s/%d: %s", self.name, rt.spec.task_id, exc)
