"""Pure rules of the MariaDB binlog source: GTID positions, row events as RowChanges, type families."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from bizbus.connectors.sources.mariadb_cdc import mapping as m


def test_gtid_state_round_trips_and_advances_per_domain() -> None:
    assert m.parse_state("") == {}
    assert m.parse_state("1-3-7,0-1-42") == {0: (1, 42), 1: (3, 7)}
    assert m.format_state(m.parse_state("1-3-7,0-1-42")) == "0-1-42,1-3-7"
    assert m.advance("", "0-1-1") == "0-1-1"
    assert m.advance("0-1-41", "0-1-42") == "0-1-42"
    assert m.advance("0-1-42,1-3-7", "1-3-8") == "0-1-42,1-3-8"
    assert m.advance("0-1-42", "2-5-1") == "0-1-42,2-5-1"
    with pytest.raises(ValueError, match="not a MariaDB GTID position"):
        m.parse_state("mysql-bin.000001:4")


def test_seen_skips_what_a_reconnect_sends_again() -> None:
    assert m.seen("0-1-42", "0-1-42") and m.seen("0-1-42", "0-1-3")
    assert not m.seen("0-1-42", "0-1-43")
    assert not m.seen("0-1-42", "1-1-1")  # another domain starts fresh
    assert not m.seen("", "0-1-1")


def test_row_events_become_changes_keyed_by_the_primary_key() -> None:
    cols = {"doc": "text", "no": "integer", "qty": "numeric"}
    keys = m.key_columns(("doc", "no"))
    ins = m.row_changes("write", "jxc.line", keys, [{"values": {"doc": "D", "no": 1, "qty": 2}}], cols)
    assert ins[0].op == "insert" and ins[0].key == {"doc": "D", "no": 1} and ins[0].before is None
    upd = m.row_changes("update", "jxc.line", keys, [{"before_values": {"doc": "D", "no": 1, "qty": 2},
                                                      "after_values": {"doc": "D", "no": 1, "qty": 3}}], cols)  # fmt: skip
    assert upd[0].op == "update" and upd[0].before["qty"] == 2 and upd[0].after["qty"] == 3
    dele = m.row_changes("delete", "jxc.line", keys, [{"values": {"doc": "D", "no": 1, "qty": 3}}], cols)
    assert dele[0].op == "delete" and dele[0].after is None and dele[0].image["qty"] == 3
    assert m.key_columns("") == () and m.key_columns("id") == ("id",)
    assert m.key_of({"a": 1, "b": 2}, ()) == {"a": 1, "b": 2}  # no primary key: the whole row


def test_type_families_of_binlog_columns() -> None:
    assert m.family(3) == "integer" and m.family(246) == "numeric" and m.family(15) == "text"
    assert m.family(18) == "timestamp" and m.family(10) == "date" and m.family(5) == "float"
    assert m.family(252, "utf8mb4") == "text" and m.family(252) == "bytes"
    assert m.family(255) == "other"
    columns = [SimpleNamespace(name="id", type=3, character_set_name=None),
               SimpleNamespace(name="note", type=252, character_set_name="utf8mb4")]  # fmt: skip
    assert m.columns_of(columns) == {"id": "integer", "note": "text"}


def test_commit_markers_and_times() -> None:
    assert m.is_commit("COMMIT") and m.is_commit(" commit ") and m.is_commit("XA COMMIT 'x'")
    assert not m.is_commit("BEGIN") and not m.is_commit("ALTER TABLE t ADD c int")
    assert m.commit_time(1_700_000_000).tzinfo is not None


def test_the_spec_derives_topics_from_the_mapping_and_secrets_from_the_config() -> None:
    from bizbus.host.components import COMPONENT_TYPES

    spec = COMPONENT_TYPES["mariadb-cdc"]
    config = spec.config_model().model_validate({
        "host": "erp-db", "user": "bizbus_cdc", "password_env": "JXC_DB_PASSWORD", "database": "jxc",
        "mapping": "deploy/examples/mappings/jxc-cdc.yaml"})  # fmt: skip
    assert set(spec.writes(config)) == {"bizbus.md.material.v1", "bizbus.inventory.level.v1",
                                        "bizbus.inventory.goods-issue.v1", "bizbus.pm.material-need.v1",
                                        "bizbus.sales.order.v1", "bizbus.inventory.goods-receipt.v1"}  # fmt: skip
    assert spec.secrets(config) == ("JXC_DB_PASSWORD",)
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        spec.config_model().model_validate({"host": "h", "user": "u", "database": "jxc", "mapping": "m.yaml",
                                            "password_env": "s3cret pass"})  # fmt: skip
