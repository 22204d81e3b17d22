"""The Tryton sink against a REAL Tryton 8.2 (trytond on SQLite, one seeded template per session, a copy per
test): cost centers, posted vouchers with analytic lines, purchase orders and their cancellation, exactly
once across re-deliveries and crashes, and the refusals that must end as dead letters.

Timing here (2 cores): the template build takes ~20 s once per session; each test 2-4 s (about 2 s of it
starting trytond), the connector test ~7 s; the whole file ~90 s including the build."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from bizbus.connectors.runtime.sink import SinkRecord, WriteResult
from bizbus.connectors.sinks.tryton.config import TrytonSinkConfig
from bizbus.connectors.sinks.tryton.writer import TrytonWriter
from bizbus.schemas import catalog

from bizbus import lineage
from bizbus.devstack.procs import free_port
from bizbus.failures import Fatal, Retryable, RetryPolicy
from tests.tryton_env import TrytonServer

MOVE, ANALYTIC, PURCHASE = "model.account.move", "model.analytic_account.account", "model.purchase.purchase"
MARCH = date(2026, 3, 14)


# -- canonical records ------------------------------------------------------------------------------------


def _meta(value: dict[str, Any], *parts: object) -> dict[str, Any]:
    value["meta"]["event_id"] = lineage.event_id("tryton-sink-test", *parts)
    value["meta"]["correlation_id"] = str(parts[1])
    return value


def cost_center(code: str, version: int = 1, active: bool = True, parent: str | None = None,
                name: str | None = None) -> dict[str, Any]:  # fmt: skip
    v = catalog.sample("bizbus.md.CostCenter")
    v.update(
        code=code, name=name or f"Cost center {code}", parent_code=parent, active=active, version=version
    )
    return _meta(v, "cost_center", code, version)


def voucher(no: str, lines: list[tuple[str, str | None, str, str]], posting_date: date = MARCH,
            reversal_of: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``lines``: (account code, cost center, debit, credit)."""
    v = catalog.sample("bizbus.finance.Voucher")
    v.update(voucher_no=no, posting_date=posting_date, currency="CNY", reversal_of=reversal_of,
             description=f"labor cost {no}")  # fmt: skip
    v["lines"] = [
        {"line_no": i, "account_code": acc, "cost_center": cc, "project": None, "debit": Decimal(debit),
         "credit": Decimal(credit), "description": f"line {i}"}
        for i, (acc, cc, debit, credit) in enumerate(lines, start=1)
    ]  # fmt: skip
    return _meta(v, "voucher", no)


def labor(no: str, amount: str, cc: str | None = "CC-ZJ", **kw: Any) -> dict[str, Any]:
    return voucher(no, [("6601", cc, amount, "0.00"), ("2211", None, "0.00", amount)], **kw)


def purchase(no: str, op: str = "CREATED", status: str = "APPROVED", version: int = 1, supplier: str = "SUP-001",
             lines: list[tuple[str, str, str | None]] | None = None) -> dict[str, Any]:  # fmt: skip
    """``lines``: (material, quantity, unit price)."""
    v = catalog.sample("bizbus.purchase.PurchaseOrder")
    v.update(op=op, status=status, version=version, supplier=supplier, order_no=no, currency="CNY",
             order_date=MARCH, delivery_date=date(2026, 3, 27))  # fmt: skip
    v["lines"] = [
        {"line_no": i, "material": mat, "material_name": None, "quantity": Decimal(qty), "unit": "u",
         "unit_price": Decimal(price) if price else None, "amount": None, "tax_rate": None, "project": None,
         "need_by": None, "description": f"{mat} for {no}"}
        for i, (mat, qty, price) in enumerate(lines or [("MAT-STEEL-10", "10.0000", "45.500000")], start=1)
    ]  # fmt: skip
    return _meta(v, "purchase_order", no, version, op, status)


def records(*values: dict[str, Any]) -> list[SinkRecord]:
    return [SinkRecord("bizbus.test.tryton.v1", 0, i, None, v, b"", [], None) for i, v in enumerate(values)]


def eid(value: dict[str, Any]) -> str:
    return str(value["meta"]["event_id"])


def make_writer(server: TrytonServer, **changes: Any) -> TrytonWriter:
    cfg = TrytonSinkConfig(url=server.url, user=server.user, password_env=server.password_env, **changes)
    writer = TrytonWriter("tryton-test", cfg)
    writer.setup()
    return writer


def counts(result: WriteResult) -> tuple[int, int, int]:
    return result.applied, result.duplicates, len(result.failed)


def flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tryton answers a dotted field ``a.b`` as ``{"a.": {"b": ...}}``; make it ``{"a.b": ...}``."""
    out = []
    for row in rows:
        row = dict(row)
        for key in [k for k in row if k.endswith(".")]:
            nested = row.pop(key)
            for sub, value in (flat([nested])[0] if nested else {}).items():
                row[key + sub] = value
        out.append(row)
    return out


def moves(server: TrytonServer, *refs: str) -> dict[str, dict[str, Any]]:
    rows = server.rpc.call(MOVE, "search_read", [("bizbus_ref", "in", list(refs))], 0, None, None,
                           ["bizbus_ref", "state", "description", "number", "period.name", "lines"])  # fmt: skip
    return {r["bizbus_ref"]: r for r in flat(rows)}


def analytic(server: TrytonServer, *refs: str) -> dict[str, dict[str, Any]]:
    rows = server.rpc.call(ANALYTIC, "search_read", [("bizbus_ref", "in", list(refs))], 0, None, None,
                           ["bizbus_ref", "code", "name", "state", "type", "parent.code", "bizbus_version"],
                           context={"active_test": False})  # fmt: skip
    return {r["bizbus_ref"]: r for r in flat(rows)}


def purchases(server: TrytonServer, *refs: str) -> dict[str, dict[str, Any]]:
    rows = server.rpc.call(PURCHASE, "search_read", [("bizbus_ref", "in", list(refs))], 0, None, None,
                           ["bizbus_ref", "state", "party.code", "purchase_date", "total_amount", "lines",
                            "bizbus_version", "description"])  # fmt: skip
    return {r["bizbus_ref"]: r for r in flat(rows)}


# -- cost centers ---------------------------------------------------------------------------------------


def test_cost_centers_are_created_updated_and_closed(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    parent, child = cost_center("CC-PROJ"), cost_center("CC-ZJ", parent="CC-PROJ", name="张江项目部")
    assert counts(w.write(records(child, parent))) == (2, 0, 0)  # the parent first, whatever the order
    got = analytic(tryton, "CC-PROJ", "CC-ZJ")
    assert got["CC-ZJ"]["parent.code"] == "CC-PROJ" and got["CC-PROJ"]["parent.code"] == "CC"
    assert (got["CC-ZJ"]["name"], got["CC-ZJ"]["state"], got["CC-ZJ"]["type"]) == (
        "张江项目部",
        "opened",
        "normal",
    )

    renamed = cost_center("CC-ZJ", version=2, parent="CC-PROJ", name="张江办公楼项目部")
    closed = cost_center("CC-PROJ", version=2, active=False)
    assert counts(w.write(records(renamed, closed))) == (2, 0, 0)
    got = analytic(tryton, "CC-PROJ", "CC-ZJ")
    assert (got["CC-ZJ"]["name"], got["CC-ZJ"]["bizbus_version"]) == ("张江办公楼项目部", 2)
    assert got["CC-PROJ"]["state"] == "closed"

    # a stale re-delivery (version 1) changes nothing; a child whose parent is unknown must wait
    orphan = cost_center("CC-X", parent="CC-NOT-YET")
    with pytest.raises(Retryable) as info:
        w.write(records(parent, child, orphan))
    assert info.value.reason == "missing_reference" and "CC-NOT-YET" in str(info.value)
    assert analytic(tryton, "CC-PROJ")["CC-PROJ"]["state"] == "closed"
    assert "CC-X" not in analytic(tryton, "CC-X")
    assert counts(w.write(records(parent, child))) == (0, 2, 0)

    # an analytic account keyed in by hand with the same code is taken over, not doubled
    root = tryton.rpc.call(ANALYTIC, "search", [("code", "=", "CC"), ("type", "=", "root")])[0]
    tryton.rpc.call(ANALYTIC, "create", [{"name": "by hand", "code": "CC-HAND", "type": "normal", "root": root,
                                          "parent": root, "state": "opened"}])  # fmt: skip
    assert counts(w.write(records(cost_center("CC-HAND", name="Site office")))) == (1, 0, 0)
    hand = tryton.rpc.call(
        ANALYTIC, "search_read", [("code", "=", "CC-HAND")], 0, None, None, ["name", "bizbus_ref"]
    )
    assert [(h["name"], h["bizbus_ref"]) for h in hand] == [("Site office", "CC-HAND")]
    w.close()


# -- vouchers -------------------------------------------------------------------------------------------


def test_vouchers_post_once_with_exact_amounts_and_analytic_lines(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    w.write(records(cost_center("CC-ZJ")))
    v1 = labor("V-001", "1398.75")
    v2 = voucher("V-002", [("6601", "CC-ZJ", "100.10", "0.00"), ("1403", None, "0.20", "0.00"),
                           ("2211", None, "0.00", "100.30")])  # fmt: skip
    rev = labor("V-003", "1398.75", reversal_of="V-001")
    rev["lines"][0].update(debit=Decimal("0.00"), credit=Decimal("1398.75"))  # lines swapped by the processor
    rev["lines"][1].update(debit=Decimal("1398.75"), credit=Decimal("0.00"))
    batch = records(v1, v2, rev)
    assert counts(w.write(batch)) == (3, 0, 0)

    got = moves(tryton, "V-001", "V-002", "V-003")
    assert {k: r["state"] for k, r in got.items()} == {
        "V-001": "posted",
        "V-002": "posted",
        "V-003": "posted",
    }
    assert got["V-001"]["period.name"] == "2026-03" and got["V-001"]["number"]
    assert "reversal of V-001" in got["V-003"]["description"]
    lines = tryton.rpc.call("model.account.move.line", "search_read", [("move", "=", got["V-002"]["id"])], 0,
                            None, None, ["account.code", "debit", "credit", "analytic_lines"])  # fmt: skip
    assert sorted((x["account.code"], x["debit"], x["credit"]) for x in flat(lines)) == [
        ("1403", Decimal("0.20"), Decimal("0")), ("2211", Decimal("0"), Decimal("100.30")),
        ("6601", Decimal("100.10"), Decimal("0")),
    ]  # fmt: skip
    alines = tryton.rpc.call("model.analytic_account.line", "search_read",
                             [("move_line.move", "in", [r["id"] for r in got.values()])], 0, None, None,
                             ["account.code", "debit", "credit", "move_line.move.bizbus_ref", "date"])  # fmt: skip
    alines = flat(alines)
    assert sorted((a["move_line.move.bizbus_ref"], a["account.code"], a["debit"], a["credit"]) for a in alines) == [
        ("V-001", "CC-ZJ", Decimal("1398.75"), Decimal("0")), ("V-002", "CC-ZJ", Decimal("100.10"), Decimal("0")),
        ("V-003", "CC-ZJ", Decimal("0"), Decimal("1398.75")),
    ]  # fmt: skip
    assert all(a["date"] == MARCH for a in alines)

    # the same batch again (lost offset commit): nothing new, every record a duplicate
    assert counts(w.write(batch)) == (0, 3, 0)
    assert len(tryton.rpc.call(MOVE, "search", [("bizbus_ref", "in", ["V-001", "V-002", "V-003"])])) == 3
    w.close()


def test_a_draft_left_by_a_crash_is_posted_not_duplicated(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    w.write(records(cost_center("CC-ZJ")))
    v = labor("V-CRASH", "88.00")
    # what a crash between "create" and "post" leaves behind: the draft move with our reference
    journal = tryton.rpc.call("model.account.journal", "search", [("code", "=", "MISC")])[0]
    accounts = {a["code"]: a["id"] for a in tryton.rpc.call("model.account.account", "search_read",
                [("code", "in", ["6601", "2211"])], 0, None, None, ["code"])}  # fmt: skip
    analytic_ids = {"CC-ZJ": analytic(tryton, "CC-ZJ")["CC-ZJ"]["id"]}
    from bizbus.connectors.sinks.tryton.mapping import move_values

    tryton.rpc.call(MOVE, "create", [move_values(v, journal, accounts, analytic_ids)])
    assert moves(tryton, "V-CRASH")["V-CRASH"]["state"] == "draft"

    assert counts(w.write(records(v))) == (1, 0, 0)
    assert tryton.rpc.call(MOVE, "search_count", [("bizbus_ref", "=", "V-CRASH")]) == 1
    assert moves(tryton, "V-CRASH")["V-CRASH"]["state"] == "posted"
    assert counts(w.write(records(v))) == (0, 1, 0)
    w.close()


def test_refused_vouchers_fail_alone_with_a_reason_and_tryton_s_message(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    w.write(records(cost_center("CC-ZJ"), cost_center("CC-OLD", active=False)))
    february = tryton.rpc.call("model.account.period", "search", [("name", "=", "2026-02")])
    tryton.rpc.call("model.account.period", "close", february)  # closed through Tryton itself

    good = labor("V-OK", "10.00")
    unbalanced = voucher("V-UNBAL", [("6601", "CC-ZJ", "100.00", "0.00"), ("2211", None, "0.00", "90.00")])
    on_closed_cc = labor("V-CLOSEDCC", "10.00", cc="CC-OLD")
    in_closed_period = labor("V-FEB", "10.00", posting_date=date(2026, 2, 10))
    unknown_account = voucher("V-ACC", [("9999", None, "1.00", "0.00"), ("2211", None, "0.00", "1.00")])
    good2 = labor("V-OK2", "20.00")
    result = w.write(records(good, unbalanced, on_closed_cc, in_closed_period, unknown_account, good2))

    assert (result.applied, result.duplicates) == (2, 0)
    failed = {k: (e.error_class, e.reason, str(e)) for k, e in result.failed.items()}
    assert set(failed) == {eid(unbalanced), eid(on_closed_cc), eid(in_closed_period), eid(unknown_account)}
    assert failed[eid(unbalanced)][:2] == ("permanent", "unbalanced")
    assert "debit 100.00 != credit 90.00" in failed[eid(unbalanced)][2]
    assert failed[eid(on_closed_cc)][:2] == ("permanent", "cost_center_closed")
    assert "CC-OLD" in failed[eid(on_closed_cc)][2]
    # Tryton's own words: the period of that date is closed
    assert failed[eid(in_closed_period)][:2] == ("permanent", "erp_rejected")
    assert 'reopen the period "2026-02"' in failed[eid(in_closed_period)][2]
    assert failed[eid(unknown_account)][:2] == ("permanent", "unknown_master_data")
    assert "9999" in failed[eid(unknown_account)][2]
    assert set(moves(tryton, "V-OK", "V-OK2", "V-UNBAL", "V-CLOSEDCC", "V-FEB", "V-ACC")) == {"V-OK", "V-OK2"}

    # a cost center that does not exist yet: retry (it may arrive on the other topic a moment later)
    with pytest.raises(Retryable) as info:
        w.write(records(labor("V-LATE", "5.00", cc="CC-LATER")))
    assert info.value.reason == "missing_reference" and "CC-LATER" in str(info.value)
    w.write(records(cost_center("CC-LATER")))
    assert counts(w.write(records(labor("V-LATE", "5.00", cc="CC-LATER")))) == (1, 0, 0)
    w.close()


# -- purchase orders --------------------------------------------------------------------------------------


def test_purchase_orders_are_created_updated_and_cancelled_once(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    po = purchase(
        "PO-1", lines=[("MAT-STEEL-10", "10.0000", "45.500000"), ("SVC-INSTALL", "2.0000", "300.00")]
    )
    po2 = purchase("PO-2", supplier="SUP-002")
    unknown = purchase("PO-3", supplier="SUP-404", lines=[("MAT-NOPE", "1.0000", "1.00")])
    result = w.write(records(po, po2, unknown))
    assert (result.applied, result.duplicates) == (2, 0)
    assert result.failed[eid(unknown)].reason == "unknown_master_data"
    assert "supplier SUP-404" in str(result.failed[eid(unknown)])
    assert "material MAT-NOPE" in str(result.failed[eid(unknown)])
    got = purchases(tryton, "PO-1", "PO-2", "PO-3")
    assert set(got) == {"PO-1", "PO-2"}
    assert (got["PO-1"]["state"], got["PO-1"]["party.code"], got["PO-1"]["purchase_date"]) == (
        "draft",
        "SUP-001",
        MARCH,
    )
    assert got["PO-1"]["total_amount"] == Decimal("1055.00")  # 10 x 45.50 + 2 x 300.00, exact
    assert got["PO-2"]["party.code"] == "SUP-002"

    updated = purchase("PO-1", op="UPDATED", version=2, lines=[("MAT-STEEL-10", "12.0000", "45.500000")])
    assert counts(w.write(records(po, updated))) == (1, 1, 0)  # v1 again is a duplicate, v2 updates
    got = purchases(tryton, "PO-1")["PO-1"]
    assert (got["total_amount"], len(got["lines"]), got["bizbus_version"]) == (Decimal("546.00"), 1, 2)

    cancel = purchase("PO-1", op="UPDATED", status="CANCELLED", version=3)
    deleted = purchase("PO-2", op="DELETED", version=2)
    assert counts(w.write(records(cancel, deleted))) == (2, 0, 0)
    assert {k: r["state"] for k, r in purchases(tryton, "PO-1", "PO-2").items()} == {
        "PO-1": "cancelled", "PO-2": "cancelled"}  # fmt: skip
    # re-delivery of the whole history: nothing changes, all duplicates
    assert counts(w.write(records(po, updated, cancel, po2, deleted))) == (0, 5, 0)
    assert tryton.rpc.call(PURCHASE, "search_count", [("bizbus_ref", "in", ["PO-1", "PO-2"])]) == 2

    with pytest.raises(Retryable) as info:  # cancelling an order Tryton has not seen yet
        w.write(records(purchase("PO-9", op="DELETED", version=2)))
    assert info.value.reason == "missing_reference" and "PO-9" in str(info.value)
    w.close()


# -- plan, sessions, credentials, reachability --------------------------------------------------------------


def test_plan_tells_what_would_be_written_and_writes_nothing(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    w.write(records(cost_center("CC-ZJ"), labor("V-DONE", "1.00")))
    batch = [cost_center("CC-NEW"), cost_center("CC-ZJ", version=2, active=False), labor("V-DONE", "1.00"),
             labor("V-NEW", "2.00"), purchase("PO-NEW"), purchase("PO-GONE", op="DELETED", version=2),
             voucher("V-BAD", [("6601", None, "1.00", "0.00")])]  # fmt: skip
    plan = w.plan(records(*batch))
    assert [(p.effect_id, p.action) for p in plan] == [
        (eid(batch[0]), "create"), (eid(batch[1]), "create"), (eid(batch[2]), "skip"), (eid(batch[3]), "create"),
        (eid(batch[4]), "create"), (eid(batch[5]), "skip"), (eid(batch[6]), "skip"),
    ]  # fmt: skip
    assert plan[0].detail.startswith("create analytic account CC-NEW")
    assert plan[1].detail.startswith("close analytic account CC-ZJ")
    assert "already posted" in plan[2].detail
    assert plan[3].detail.startswith("create and post move V-NEW")
    assert plan[4].detail.startswith("create draft purchase PO-NEW")
    assert plan[5].detail.startswith("would wait and retry") and "PO-GONE" in plan[5].detail
    assert plan[6].detail.startswith("error: ") and "unbalanced" in plan[6].detail
    assert (
        analytic(tryton, "CC-NEW", "CC-ZJ")["CC-ZJ"]["state"] == "opened"
        and len(analytic(tryton, "CC-NEW")) == 0
    )
    assert set(moves(tryton, "V-DONE", "V-NEW")) == {"V-DONE"} and purchases(tryton, "PO-NEW") == {}
    w.close()


def test_an_expired_session_is_renewed_and_a_restart_survived(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    assert counts(w.write(records(cost_center("CC-A")))) == (1, 0, 0)
    assert w.rpc is not None and w.rpc.logins == 1
    w.rpc.logout()  # the server forgets the session, as after 5 idle minutes
    assert counts(w.write(records(cost_center("CC-B")))) == (1, 0, 0)
    assert w.rpc.logins == 2  # Tryton answered 401, the client logged in again and repeated the call
    tryton.restart()  # sessions live in the database: a restart keeps data, the client simply carries on
    assert counts(w.write(records(cost_center("CC-C"), cost_center("CC-A")))) == (1, 1, 0)
    w.close()


def test_a_wrong_password_is_fatal_and_never_shown(
    tryton: TrytonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tryton.password_env, "wrong-pw-5d1e9b")
    w = make_writer(tryton)
    with pytest.raises(Fatal) as info:
        w.write(records(cost_center("CC-A")))
    assert info.value.reason == "auth" and "wrong-pw-5d1e9b" not in str(info.value)
    w.close()
    monkeypatch.delenv(tryton.password_env)
    with pytest.raises(Fatal, match=tryton.password_env):
        make_writer(tryton)


def test_an_unreachable_server_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIZBUS_TEST_TRYTON_NOWHERE", "pw")
    cfg = TrytonSinkConfig(url=f"http://127.0.0.1:{free_port()}/bizbus/", password_env="BIZBUS_TEST_TRYTON_NOWHERE",
                           timeout_seconds=2)  # fmt: skip
    w = TrytonWriter("tryton-test", cfg)
    w.setup()
    with pytest.raises(Retryable) as info:
        w.write(records(cost_center("CC-A")))
    assert info.value.error_class == "retryable" and info.value.reason == "connection"
    w.close()


# -- the connector end to end through the embedded broker ---------------------------------------------------


def test_the_connector_runs_through_the_broker(tryton: TrytonServer, embedded_broker, registry) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from bizbus.catalogue import Catalogue, TopicSpec
    from bizbus.host.components import COMPONENT_TYPES, RuntimeContext
    from bizbus.serde import AvroSerde
    from bizbus.settings import load_settings

    sfx = uuid.uuid4().hex[:8]
    schemas = {"cost-center": "bizbus.md.CostCenter", "voucher": "bizbus.finance.Voucher",
               "order": "bizbus.purchase.PurchaseOrder"}  # fmt: skip
    topics = {k: f"bizbus.t{sfx}.{k}.v1" for k in schemas}
    admin = AdminClient({"bootstrap.servers": embedded_broker.bootstrap_servers})
    for t in topics.values():
        admin.create_topics([NewTopic(t, 1, 1)])[t].result(20)
    cat = Catalogue(topics=tuple(TopicSpec(name=topics[k], description="tryton sink test topic", owner="t", key="k",
                                           value_schema=s, partitions=1) for k, s in schemas.items()))  # fmt: skip
    settings = load_settings(kafka_bootstrap_servers=embedded_broker.bootstrap_servers,
                             schema_registry_url=registry.url)  # fmt: skip
    ctx = RuntimeContext(settings, cat, AvroSerde(settings.registry_config()))
    producer = Producer(settings.kafka_config())

    def produce(kind: str, *vs: dict[str, Any]) -> None:
        encode = ctx.serde.encoder(cat.get(topics[kind]).subject, catalog.load(schemas[kind]))
        for v in vs:
            producer.produce(topics[kind], key=b"k", value=encode(v), headers=lineage.headers(v["meta"]))
        assert producer.flush(20) == 0

    def wait_for(done: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            assert thread.is_alive(), "the connector stopped"
            time.sleep(0.2)
        assert done(), f"{what} within {timeout} s"

    ctype = COMPONENT_TYPES["tryton"]
    config = ctype.config_model().model_validate({
        "topics": list(topics.values()), "url": tryton.url, "password_env": tryton.password_env,
        "batch_timeout_seconds": 0.2, "retry": RetryPolicy(max_attempts=20, initial_delay=0.2, max_delay=0.5)})  # fmt: skip
    connector = ctype.load()(f"tryton-{sfx}", config, ctx)
    connector.setup()
    stop = threading.Event()
    thread = threading.Thread(target=connector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        produce("cost-center", cost_center("CC-ZJ"))  # master data first, as the flows publish it
        wait_for(lambda: analytic(tryton, "CC-ZJ"), "cost center CC-ZJ in Tryton")
        produce("voucher", labor("V-K1", "12.34"), labor("V-K2", "56.78"))
        produce("order", purchase("PO-K1"))
        wait_for(lambda: {r["state"] for r in moves(tryton, "V-K1", "V-K2").values()} == {"posted"}
                 and len(moves(tryton, "V-K1", "V-K2")) == 2 and purchases(tryton, "PO-K1"), "vouchers and order")  # fmt: skip
    finally:
        stop.set()
        thread.join(30)
        connector.close()
    assert purchases(tryton, "PO-K1")["PO-K1"]["state"] == "draft"
    assert analytic(tryton, "CC-ZJ")["CC-ZJ"]["state"] == "opened"
    stats = connector.runtimes[0].task.stats  # type: ignore[attr-defined]
    assert (stats.consumed, stats.dead_lettered) == (4, 0) and stats.applied + stats.duplicates == 4
