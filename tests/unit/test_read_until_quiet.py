"""bizbus.kafka.read_until_quiet: the one loop that reads a topic until it is quiet, reaches its end offsets,
a record limit or a timeout (a fake consumer stands in for the broker)."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError

from bizbus.kafka import read_until_quiet


class _Msg:
    def __init__(self, partition: int, offset: int, error: KafkaError | None = None) -> None:
        self.p, self.o, self.err = partition, offset, error

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def error(self) -> KafkaError | None:
        return self.err


class _Consumer:
    """Hands out the prepared polls (lists of messages) one per call, then waits like an idle consumer."""

    def __init__(self, polls: list[list[_Msg]]) -> None:
        self.polls, self.asked = list(polls), []

    def consume(self, num: int, timeout: float) -> list[Any]:
        self.asked.append(num)
        if not self.polls:
            time.sleep(timeout)
            return []
        out, rest = self.polls[0][:num], self.polls[0][num:]
        if rest:
            self.polls[0] = rest
        else:
            self.polls.pop(0)
        return out


def test_stops_after_idle_seconds_without_records_and_leaves_errors_out() -> None:
    errors: list[KafkaError] = []
    eof = KafkaError(KafkaError._PARTITION_EOF)
    broken = KafkaError(KafkaError._TRANSPORT)
    c = _Consumer([[_Msg(0, 0), _Msg(0, 1, eof)], [_Msg(0, 1, broken)], [_Msg(1, 0)]])
    t0 = time.monotonic()
    got = list(read_until_quiet(c, 0.3, poll=0.1, on_error=errors.append))
    assert [(m.partition(), m.offset()) for m in got] == [(0, 0), (1, 0)]
    assert [e.code() for e in errors] == [KafkaError._TRANSPORT]  # end-of-partition notices are not errors
    assert 0.3 <= time.monotonic() - t0 < 2


def test_stops_once_every_partition_reached_its_end_and_leaves_later_records_out() -> None:
    c = _Consumer([[_Msg(0, 5), _Msg(1, 2)], [_Msg(0, 6), _Msg(0, 7), _Msg(1, 3)], [_Msg(1, 4)]])
    t0 = time.monotonic()
    ends = {("t", 0): 7, ("t", 1): 4}
    got = list(read_until_quiet(c, 30.0, ends=ends, poll=0.1))
    assert [(m.partition(), m.offset()) for m in got] == [(0, 5), (1, 2), (0, 6), (1, 3)]
    assert time.monotonic() - t0 < 1  # not waiting for the idle seconds
    assert ends == {}  # both reached


def test_a_partition_that_never_reaches_its_end_is_left_in_ends_after_the_quiet_seconds() -> None:
    ends = {("t", 0): 3, ("t", 1): 10}
    got = list(read_until_quiet(_Consumer([[_Msg(0, 2), _Msg(1, 7)], [_Msg(0, 3)]]), 0.3, ends=ends, poll=0.1))
    assert [(m.partition(), m.offset()) for m in got] == [(0, 2), (1, 7)]  # 0@3 is past its end
    assert ends == {("t", 1): 10}


def test_a_limit_reads_no_record_past_it() -> None:
    c = _Consumer([[_Msg(0, i) for i in range(10)]])
    got = list(read_until_quiet(c, 0, limit=3, batch=500))
    assert [m.offset() for m in got] == [0, 1, 2]
    assert c.asked == [3]
    assert [m.offset() for m in c.polls[0]] == list(range(3, 10))  # the rest is still the consumer's


def test_no_idle_limit_stops_at_the_timeout() -> None:
    t0 = time.monotonic()
    assert list(read_until_quiet(_Consumer([]), 0, timeout=0.3, poll=0.1)) == []
    assert 0.3 <= time.monotonic() - t0 < 2


def test_progress_only_on_long_reads() -> None:
    reports: list[int] = []
    polls = [[_Msg(0, i)] for i in range(6)]

    class Slow(_Consumer):
        def consume(self, num: int, timeout: float) -> list[Any]:
            time.sleep(0.3)
            return super().consume(num, timeout)

    got = list(read_until_quiet(Slow(polls), 0.5, progress=reports.append))
    assert len(got) == 6 and reports and reports == sorted(reports) and reports[-1] <= 6
    reports.clear()
    list(read_until_quiet(_Consumer([[_Msg(0, 0)]]), 0.2, progress=reports.append))
    assert reports == []
