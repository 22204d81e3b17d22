"""Two ``bizbus flows run`` workers of one flow share its GlobalTables (bizbus issue 7).

The ``projects`` table is global: the timesheet agent of one worker prices timesheets with projects that
the project agent of the other worker wrote (12 projects on the 3-partition project topic, timesheets on
the 6-partition timesheet topic, as in the processor benchmark: each worker gets project and timesheet
partitions). Every timesheet must become a voucher; none may wait out the grace period and be
dead-lettered as unknown master data. Three ways the two workers come together:

* ``together``: both start at the same moment on a backlog of projects and 12,000 timesheets, then new
  projects and their timesheets arrive while both run (the benchmark's ``--workers 2``);
* ``one-after-the-other``: the first worker handles the backlog alone, the second joins, then the new
  projects and timesheets arrive;
* ``after-a-restart``: both start together on the backlog, one is stopped and started again (a
  rebalance), then the new projects and timesheets arrive.

Before the fix in streams/runtime/recovery.py (``ProbingRecovery._follow_as_standbys``) each case dead-lettered the
timesheets of projects the other worker wrote after this one's last recovery: a worker applied the other
worker's writes to a GlobalTable only once 1,000 of them had piled up, or at its next rebalance. With that
fixed, ``together`` still dead-lettered with Faust's default stream buffer (4,096 events, unlimited
fetches): a full timesheet buffer held up the delivery of the other worker's projects
(:func:`bizbus.streams.runtime.app.stream_buffer_size`).

Takes about 2 minutes (three pairs of workers starting, Tansu group joins).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from bizbus.schemas import catalog
from confluent_kafka import Consumer, Producer, TopicPartition

from bizbus import lineage
from bizbus.serde import AvroSerde
from tests.bench.faust_profile import (
    PROJECT_TOPIC,
    T0,
    TIMESHEET_TOPIC,
    VOUCHER_TOPIC,
    prepare,
    project_record,
)
from tests.chaos.harness import Stack, Worker, private_stack

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]

DEAD_LETTER_TOPIC = "bizbus.ops.dead-letter.v1"
BACKLOG = 240  # timesheets produced before the workers start (on the bench's 12 projects)
BIG_BACKLOG = 12_000  # together: ≈ 6,000 per worker, more than Faust's default stream buffer (4,096)
NEW_PROJECTS = 6  # projects produced while both workers run
LIVE = 60  # timesheets of the new projects
GRACE_SECONDS = 20.0  # long enough for a worker to join and recover; a failing run waits it out once
BOUND = 240.0  # s: how long a broken run may take to show it; no assertion on time
MODES = ("together", "one-after-the-other", "after-a-restart")


@dataclass(frozen=True)
class Phase:
    """What one phase of a scenario produced: new vouchers (distinct keys) and new dead letters by type."""

    name: str
    expected: int
    vouchers: int
    dead_letters: dict[str, int]

    @property
    def ok(self) -> bool:
        return self.vouchers == self.expected and not self.dead_letters


def live_timesheet(n: int) -> dict[str, Any]:
    """Timesheet entry ``n`` of one of the projects that arrive while the workers run."""
    wid, prj = f"LW{n:06d}", f"LP{n % NEW_PROJECTS:02d}"
    return {"meta": lineage.meta(lineage.event_id("jira", "worklog", wid, 1), prj, "jira", T0), "op": "CREATED",
            "worklog_id": wid, "project": prj, "task": None, "employee": f"BE{n % 7}", "work_date": date(2026, 3, 2),
            "hours": Decimal(f"{1 + n % 8}.25"), "billable": True, "description": None, "version": 1}  # fmt: skip


def produce(stack: Stack, topic: str, schema: str, records: list[dict[str, Any]], key: str) -> None:
    enc = AvroSerde({"url": stack.registry_url}).encoder(f"{topic}-value", catalog.load(schema))
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    for rec in records:
        producer.produce(topic, key=rec[key].encode(), value=enc(rec), headers=lineage.headers(rec["meta"]))
    assert producer.flush(30) == 0


class Outcomes:
    """Reads the voucher and dead-letter topics as the workers write them."""

    def __init__(self, stack: Stack, stop_at_dead_letter: bool) -> None:
        self.consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "scale-out-test",
                                  "enable.auto.commit": False})  # fmt: skip
        self.consumer.assign([TopicPartition(VOUCHER_TOPIC, p, 0) for p in range(6)]
                             + [TopicPartition(DEAD_LETTER_TOPIC, p, 0) for p in range(6)])  # fmt: skip
        self.serde = AvroSerde({"url": stack.registry_url})
        self.stop_at_dead_letter = stop_at_dead_letter
        self.vouchers: set[bytes] = set()
        self.dead_letters: Counter[str] = Counter()  # by error type, e.g. Permanent/unknown_master_data

    def phase(self, name: str, expected: int, workers: list[Worker]) -> Phase:
        """Read until ``expected`` more inputs have a voucher or a dead letter, or a worker died, or the
        bound; with ``stop_at_dead_letter`` also at the phase's first dead letter (a failing run need not
        wait out the grace period of every project)."""
        vouchers, dead = len(self.vouchers), Counter(self.dead_letters)
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline and not died(workers):
            new_dead = self.dead_letters - dead
            if len(self.vouchers) - vouchers + new_dead.total() >= expected:
                break
            if new_dead and self.stop_at_dead_letter:
                break
            for m in self.consumer.consume(1000, 0.2):
                if m.error() is not None:
                    continue
                if m.topic() == VOUCHER_TOPIC:
                    self.vouchers.add(m.key())
                else:
                    self.dead_letters[str(self.serde.decode(m.value())["error_type"])] += 1
        return Phase(name, expected, len(self.vouchers) - vouchers, dict(self.dead_letters - dead))

    def close(self) -> None:
        self.consumer.close()


def log_text(worker: Worker) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(worker.stack.workdir.glob(f"{worker.name}.*.log"))
    )


def died(workers: list[Worker]) -> bool:
    return any(w.proc is not None and not w.alive() for w in workers)


def wait_ready(worker: Worker, workers: list[Worker]) -> None:
    """Wait until the worker's current run logged Faust's "Worker ready" (it joined the group with the other
    one and recovered its tables)."""
    current = worker.stack.workdir / f"{worker.name}.{worker.starts}.log"
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline and not died(workers):
        if "Worker ready" in current.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{worker.name} did not get ready\n{logs(workers)}")


def last_assignment(worker: Worker) -> str:
    """The worker's last "Setting newly assigned partitions" log line (aiokafka)."""
    lines = [line for line in log_text(worker).splitlines() if "newly assigned partitions" in line]
    return lines[-1] if lines else ""


def run_scenario(tmp: Path, mode: str, backlog: int = BACKLOG, grace: float = GRACE_SECONDS,
                 stop_at_dead_letter: bool = True) -> tuple[list[Phase], list[Worker]]:  # fmt: skip
    """Two flow workers come together as ``mode`` says; the backlog and live phases (stopped workers)."""
    with private_stack(tmp, {}) as stack:
        config = {"master_data_grace_seconds": grace, "stall_restart_seconds": 3 * BOUND}
        pipeline = prepare(stack, backlog, config)
        workers = [Worker(f"flows#{i}", stack, pipeline, command=["flows", "run", "--pipeline", str(pipeline)])
                   for i in range(2)]  # fmt: skip
        outcomes = Outcomes(stack, stop_at_dead_letter)
        phases: list[Phase] = []
        try:
            workers[0].start()
            if mode != "one-after-the-other":
                workers[1].start()
            phases.append(outcomes.phase("backlog", backlog, workers))
            if mode == "one-after-the-other":
                workers[1].start()
                wait_ready(workers[1], workers)
            elif mode == "after-a-restart":
                workers[1].stop()
                workers[1].start()
                wait_ready(workers[1], workers)
            produce(stack, PROJECT_TOPIC, "bizbus.pm.ProjectChanged",
                    [project_record(f"LP{p:02d}") for p in range(NEW_PROJECTS)], "project")  # fmt: skip
            produce(stack, TIMESHEET_TOPIC, "bizbus.pm.TimesheetEntry", [live_timesheet(n) for n in range(LIVE)],
                    "project")  # fmt: skip
            phases.append(outcomes.phase("live", LIVE, workers))
        finally:
            outcomes.close()
            for w in workers:
                w.stop()
        return phases, workers


@pytest.mark.parametrize("mode", MODES)
def test_two_workers_share_the_projects_table(tmp_path: Path, mode: str) -> None:
    phases, workers = run_scenario(tmp_path, mode, backlog=BIG_BACKLOG if mode == "together" else BACKLOG)
    # the case at hand: each worker had project partitions (it wrote projects) and timesheet partitions
    for w in workers:
        assert PROJECT_TOPIC in last_assignment(w) and TIMESHEET_TOPIC in last_assignment(w), logs(workers)
    assert all(p.ok for p in phases), f"{phases}\n{logs(workers)}"


def logs(workers: list[Worker]) -> str:
    return "\n".join(w.logs() for w in workers)
