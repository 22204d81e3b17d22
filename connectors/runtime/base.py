"""Connector and task model shared by sources and sinks (the Kafka Connect split, in Python).

* A **connector** has a typed config (a frozen pydantic model, ``Config``), checks it against the
  world in ``validate()`` (catalogue topics exist, secrets are present) and splits its work into
  ``task_specs(max_tasks)``; it builds one **task** per spec.
* A **task** is a loop made of ``step()`` calls (one batch each). The runtime around it gives the
  lifecycle: start, pause, resume, and stop with drain (the current batch finishes, its offsets or
  cursor are committed, then ``close()``).
* Scheduling: in one process each task runs in its own thread. Across processes, sink tasks of the same
  connector are members of one consumer group (``bizbus-sink-<name>``), so Kafka spreads partitions;
  source tasks take a lease per shard (connectors/runtime/lease.py), so two processes never read one shard —
  a second worker stands by and takes over when the first dies.

* Failures: a step that raises a retryable error (a lost database connection, a broker or target away;
  ``bizbus/failures.py``'s ``classify``) does not end the task. The runtime marks it "retrying" (shown in
  ``/connectors`` and ``/readyz``), counts it (``bizbus_task_restarts_total``), lets the task reset what the
  error left behind (``Task.recover``), waits a capped, jittered exponential back-off and steps again; one
  log line when a streak starts and one when it ends. Only a "fatal" error (bad credentials, config the
  target refuses) stops the task for good.

A connector is a ``bizbus.host.components.Component``, so the pipeline YAML refers to it by its type name
(``bizbus.host.components.COMPONENT_TYPES``) and ``bizbus up`` / ``bizbus worker`` run it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from threading import Event
from typing import Any, ClassVar, Literal

from bizbus import metrics
from bizbus.backoff import Backoff
from bizbus.errors import ConfigError
from bizbus.failures import classify
from bizbus.host.components import Component

log = logging.getLogger(__name__)

TASK_STATE = metrics.TASK_RUNNING
TaskState = Literal["running", "paused", "retrying", "failed", "stopped"]

RETRY_MIN, RETRY_MAX = 0.5, 30.0  # s: back-off after the first failure of a streak, and its cap
RESTART_REASONS = ("connection", "tls", "timeout", "db_conflict", "throttled", "transient", "unexpected")
"""``bizbus_task_restarts_total`` series created at 0 for every task (the reasons ``classify`` gives the
errors a step meets; another reason still counts, its series just starts at its first failure)."""
PROBLEM_EVERY = 0.5  # s between updates of ``bizbus_task_problem`` from a task's own ``problem()``


def retry_delay(attempt: int, rng: random.Random | None = None, low: float = RETRY_MIN,
                high: float = RETRY_MAX) -> float:  # fmt: skip
    """Seconds to wait after failure ``attempt`` (1-based) of a streak: ``low * 2**(attempt-1)`` capped at
    ``high``, times a random factor in [0.5, 1] so that many tasks (or workers) do not retry in step."""
    return Backoff(low, high, 2.0, jitter=0.5).delay(max(attempt, 1), rng)


def describe(exc: BaseException) -> str:
    """One line for an operator: the error's type and first line (no traceback)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


_RESTART_LOCK = threading.Lock()  # one restart at a time in a process (they are rare)


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

    def abandon(self) -> None:
        """Drop what is in flight instead of draining it (the broker it went to is gone: it is sent again from
        the durable side); called before ``close`` when tasks are replaced after a lost broker."""

    def close(self) -> None:
        """Release connections."""

    def problem(self) -> str | None:
        """What keeps this task from making progress right now (e.g. "waiting for the target: ..."), or None."""
        return None

    def recover(self) -> None:
        """Called after ``step`` raised a retryable error, before the next ``step``: drop or check what the
        error may have left half done (a lease session, a batch consumed but not committed). Connections are
        reopened lazily by their holders. Raising here counts as another failure of the streak."""


class TaskRuntime:
    """Runs one task in a thread with start / pause / resume / stop-with-drain."""

    def __init__(self, connector: str, spec: TaskSpec, task: Task, idle_wait: float = 0.05,
                 retry_min: float = RETRY_MIN, retry_max: float = RETRY_MAX) -> None:  # fmt: skip
        self.connector, self.spec, self.task, self.idle_wait = connector, spec, task, idle_wait
        self.retry_min, self.retry_max = retry_min, retry_max
        self.stop_event = Event()
        self.drain_on_stop = True  # False: stop without draining (the broker the work went to is gone)
        self._paused = Event()
        self._applied_pause = False
        self.error: BaseException | None = None  # the fatal error that ended the task
        self.retrying: str | None = None  # the error the task is retrying after (None: it is not retrying)
        self.failures = 0  # failed attempts in the current streak
        self._streak_started = 0.0
        self._problem_at = 0.0
        self.thread = threading.Thread(
            target=self._loop, name=f"task-{connector}-{spec.task_id}", daemon=True
        )
        task_label = str(spec.task_id)
        for reason in RESTART_REASONS:
            metrics.TASK_RESTARTS.labels(connector, task_label, reason)
        metrics.TASK_PROBLEM.labels(connector, task_label).set(0)

    @property
    def state(self) -> TaskState:
        if self.error is not None:
            return "failed"
        if not self.thread.is_alive():
            return "stopped"
        if self.retrying is not None:
            return "retrying"
        return "paused" if self._applied_pause else "running"

    def problem(self) -> str | None:
        """Why the task makes no progress: its own retry streak first, else what the task reports."""
        if self.error is not None:
            return f"failed: {describe(self.error)}"
        retrying = self.retrying
        if retrying is not None:
            since = time.monotonic() - self._streak_started
            return f"retrying for {since:.0f} s ({self.failures} failed attempt(s)): {retrying}"
        if not self.thread.is_alive():
            return None
        try:
            return self.task.problem()
        except Exception as exc:  # a broken problem() is a problem too
            return f"problem() failed: {describe(exc)}"

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
                try:
                    if self.failures:
                        self.task.recover()
                    if self._paused.is_set() != self._applied_pause:
                        (self.task.pause if self._paused.is_set() else self.task.resume)()
                        self._applied_pause = self._paused.is_set()
                        gauge.set(0 if self._applied_pause else 1)
                        log.info("task %s/%d %s", self.connector, self.spec.task_id, self.state)
                    moved = self.task.step()
                except Exception as exc:
                    if not self._failed(exc):
                        raise
                    continue
                if self.failures:
                    self._recovered()
                self._show_problem()
                if not moved:
                    self.stop_event.wait(self.idle_wait)
            if self.drain_on_stop:
                self.task.drain()
        except Exception as exc:  # kept for /readyz and the connector's state; never swallowed
            self.error = exc
            log.exception("task %s/%d failed: %s", self.connector, self.spec.task_id, exc)
        finally:
            self.retrying = None
            gauge.set(0)
            metrics.TASK_PROBLEM.labels(self.connector, str(self.spec.task_id)).set(1 if self.error else 0)

    def _failed(self, exc: Exception) -> bool:
        """A step (or recover) raised: True when the task backs off and tries again, False when the error
        is fatal and ends the task."""
        err = classify(exc)
        if err.error_class == "fatal" or isinstance(exc, ConfigError):
            return False
        self.failures += 1
        what = describe(exc)
        metrics.TASK_RESTARTS.labels(self.connector, str(self.spec.task_id), err.reason).inc()
        wait = retry_delay(self.failures, None, self.retry_min, self.retry_max)
        retry_after = getattr(err, "retry_after", None)
        if retry_after:
            wait = max(wait, min(float(retry_after), self.retry_max))
        if self.failures == 1:
            self._streak_started = time.monotonic()
            log.warning("task %s/%d: %s (%s); retrying with back-off (%.1f s first, at most %.0f s)",
                        self.connector, self.spec.task_id, what, err.reason, wait, self.retry_max)  # fmt: skip
        else:
            log.debug("task %s/%d: attempt %d failed: %s; next in %.1f s",
                      self.connector, self.spec.task_id, self.failures, what, wait)  # fmt: skip
        self.retrying = what
        metrics.TASK_PROBLEM.labels(self.connector, str(self.spec.task_id)).set(1)
        self.stop_event.wait(wait)
        return True

    def _recovered(self) -> None:
        log.info("task %s/%d: working again after %d failed attempt(s) in %.1f s", self.connector,
                 self.spec.task_id, self.failures, time.monotonic() - self._streak_started)  # fmt: skip
        self.failures = 0
        self.retrying = None
        self._problem_at = 0.0

    def _show_problem(self) -> None:
        """``bizbus_task_problem`` from the task's own ``problem()``, at most every PROBLEM_EVERY seconds."""
        now = time.monotonic()
        if now - self._problem_at < PROBLEM_EVERY:
            return
        self._problem_at = now
        metrics.TASK_PROBLEM.labels(self.connector, str(self.spec.task_id)).set(1 if self.problem() else 0)


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
        self.runtimes: list[TaskRuntime] = self._new_runtimes(paused=False)

    def _new_runtimes(self, paused: bool) -> list[TaskRuntime]:
        """A task per spec, set up, in a runtime not started yet (paused first if ``paused``)."""
        runtimes = []
        for spec in self.task_specs(self.max_tasks):
            task = self.create_task(spec)
            task.setup()
            rt = TaskRuntime(self.name, spec, task)
            if paused:
                rt.pause()
            runtimes.append(rt)
        return runtimes

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
        """Stop every task with drain, close it, then set up and start a new set (new clients and connections;
        ``POST /connectors/NAME/restart``). The connector itself stays (its webhook intake keeps answering) and
        its ``run`` loop watches the new tasks. ``paused``: whether the new tasks start paused (None: as the old
        ones were). ``bizbus up`` after a lost broker uses ``halt_tasks`` and ``start_tasks`` around it."""
        with _RESTART_LOCK:
            self.halt_tasks(timeout)
            self.start_tasks(paused)

    def halt_tasks(self, timeout: float = 60.0, drain: bool = True) -> None:
        """Stop and close every task; ``drain=False``: drop what is in flight (``Task.abandon``) instead of
        draining it, for a broker that is gone. ``start_tasks`` starts a new set."""
        old = list(getattr(self, "runtimes", []))
        self._restart_paused = any(rt._paused.is_set() for rt in old)
        for rt in old:
            rt.drain_on_stop = drain
            if not drain:  # also frees a step that waits for the gone broker (a flush)
                rt.stop()
                try:
                    rt.task.abandon()
                except Exception as exc:  # stopping matters more
                    log.warning("abandoning task %s/%d: %s", self.name, rt.spec.task_id, exc)
        self.stop_tasks(timeout)
        for rt in old:
            if rt.thread.is_alive():
                log.warning("task %s/%d did not stop within %.0f s; closing it anyway", self.name,
                            rt.spec.task_id, timeout)  # fmt: skip
        Connector.close(self)  # the tasks only: a subclass's close() also closes what setup() opened
        self.runtimes = []

    def start_tasks(self, paused: bool | None = None) -> None:
        """Set up and start a new set of tasks; ``paused`` (None: as the set ``halt_tasks`` stopped was) pauses
        them before they start, so a paused connector's new tasks never take a batch."""
        paused = getattr(self, "_restart_paused", False) if paused is None else paused
        fresh = self._new_runtimes(paused)
        self.runtimes = fresh
        for rt in fresh:
            rt.start()
        log.info("connector %s: %d task(s) restarted", self.name, len(fresh))

    def states(self) -> dict[int, str]:
        return {rt.spec.task_id: rt.state for rt in getattr(self, "runtimes", [])}

    def problems(self) -> dict[int, str]:
        """Task id -> what keeps that task from making progress (only tasks that have a problem)."""
        out: dict[int, str] = {}
        for rt in getattr(self, "runtimes", []):
            problem = rt.problem()
            if problem:
                out[rt.spec.task_id] = problem
        return out

    def close(self) -> None:
        for rt in getattr(self, "runtimes", []):
            try:
                rt.task.close()
            except Exception as exc:  # closing the others matters more than this error
                log.warning("closing task %s/%d: %s", self.name, rt.spec.task_id, exc)
