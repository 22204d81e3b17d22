"""The cursor rules: a source's cursor moves past a record only when it and everything before it reached
the broker, and never jumps an id gap that a running transaction could still fill."""

from __future__ import annotations

import pytest
from bizbus.connectors.runtime.cursor import CursorTracker, GapGuard

from bizbus.settings import no_password


def tracker(n: int) -> CursorTracker:
    t = CursorTracker()
    for i in range(n):
        t.add(i, {"id": i + 1})
    return t


def test_nothing_acknowledged_means_nothing_committable() -> None:
    t = tracker(3)
    assert t.committable() is None
    assert not t.complete and t.pending == 3


def test_out_of_order_acks_commit_only_the_contiguous_prefix() -> None:
    t = tracker(4)
    t.ack(1)
    t.ack(3)
    assert t.committable() is None  # record 0 not acknowledged: nothing may be skipped
    t.ack(0)
    assert t.committable() == {"id": 2}  # 0 and 1; record 2 still in flight
    t.ack(2)
    assert t.committable() == {"id": 4} and t.complete


def test_a_failed_delivery_stops_the_cursor_before_it() -> None:
    t = tracker(3)
    t.ack(0)
    t.fail(1)
    t.ack(2)
    assert t.committable() == {"id": 1}
    assert t.failed == 1 and not t.complete


def test_adding_a_record_twice_is_a_bug() -> None:
    t = tracker(1)
    with pytest.raises(ValueError):
        t.add(0, {"id": 9})


class Db:
    """Stands in for pg_current_snapshot / pg_xact_status."""

    def __init__(self, running: list[int]) -> None:
        self.running = set(running)
        self.snapshots = 0

    def in_progress(self) -> list[int]:
        self.snapshots += 1
        return sorted(self.running)

    def ended(self, xids: list[int]) -> bool:
        return not (set(xids) & self.running)


def test_dense_ids_pass_straight_through() -> None:
    g, db = GapGuard(grace=1.0), Db([])
    assert g.admit(10, [11, 12, 13], now=0.0, in_progress=db.in_progress) == 3
    assert db.snapshots == 0


def test_a_gap_holds_the_cursor_until_grace_and_running_transactions_end() -> None:
    g, db = GapGuard(grace=1.0), Db([500])
    ids = [1, 2, 4, 5]  # 3 is missing: maybe a transaction still running, maybe rolled back
    assert g.admit(0, ids, now=0.0, in_progress=db.in_progress) == 2
    assert g.admit(0, ids, now=0.5, in_progress=db.in_progress) == 2  # within grace
    g.refresh(db.ended)
    assert g.admit(0, ids, now=1.5, in_progress=db.in_progress) == 2  # takes the snapshot of running xids
    g.refresh(db.ended)
    assert g.admit(2, ids[2:], now=2.0, in_progress=db.in_progress) == 0  # 500 still runs
    db.running.clear()  # it ended (rolled back: id 3 never shows)
    g.refresh(db.ended)
    assert g.admit(2, ids[2:], now=2.5, in_progress=db.in_progress) == 2
    assert not g.pending


def test_a_gap_filled_late_is_read_in_order() -> None:
    g, db = GapGuard(grace=0.0), Db([700])
    assert g.admit(0, [1, 3], now=0.0, in_progress=db.in_progress) == 1
    # the transaction holding id 2 commits: the next read sees 2 and 3, the gap is gone
    assert g.admit(1, [2, 3], now=0.1, in_progress=db.in_progress) == 2
    assert not g.pending


def test_gap_needs_the_check_before_the_read_that_uses_it() -> None:
    # a transaction that commits between the read and the check must not be skipped: readiness is
    # only taken from refresh(), which runs before the read
    g, db = GapGuard(grace=0.0), Db([900])
    g.admit(0, [2], now=0.0, in_progress=db.in_progress)
    g.admit(0, [2], now=0.1, in_progress=db.in_progress)  # xids captured
    db.running.clear()
    assert g.admit(0, [2], now=0.2, in_progress=db.in_progress) == 0  # no refresh yet
    g.refresh(db.ended)
    assert g.admit(0, [2], now=0.3, in_progress=db.in_progress) == 1


@pytest.mark.parametrize("dsn", ["postgresql://u:secret@h/db", "host=h password=secret dbname=x"])
def test_dsn_with_password_is_refused(dsn: str) -> None:
    with pytest.raises(ValueError, match="PGPASSWORD"):
        no_password(dsn)


def test_dsn_without_password_is_fine() -> None:
    assert no_password("postgresql://app@db:5432/erp") == "postgresql://app@db:5432/erp"
