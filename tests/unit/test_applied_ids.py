"""The applied-ids guard of additive flow states (streams/runtime/applied.py)."""

import pytest
from bizbus.streams.runtime.applied import remember, seen


def test_a_repeated_event_is_not_fresh_and_leaves_the_ids_alone():
    ids, fresh = remember(None, "e1")
    assert (ids, fresh) == (["e1"], True)
    again, fresh = remember(ids, "e1")
    assert (again, fresh) == (["e1"], False)
    assert seen(again, "e1") and not seen(again, "e2") and not seen(None, "e1")


def test_the_list_keeps_the_newest_ids_within_the_limit():
    ids: list[str] = []
    for n in range(10):
        ids, fresh = remember(ids, f"e{n}", limit=4)
        assert fresh
    assert ids == ["e6", "e7", "e8", "e9"]
    assert remember(ids, "e2", limit=4)[1] is True  # forgotten ids count as new: the bound is the promise's size
    with pytest.raises(ValueError, match="at least 1"):
        remember([], "x", limit=0)
