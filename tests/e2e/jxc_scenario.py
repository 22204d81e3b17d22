"""The issue-20 business scenario end to end (进销存 → Tryton), shared by the plain e2e test and its chaos variant.

A private PostgreSQL with ``wal_level=logical`` holds the 进销存 schema (tests/fixtures/jxc/postgres.sql, in the
schema ``jxc``); the pipeline is deploy/examples/jxc-to-tryton.yaml itself, with this run's addresses and
names. Three bizbus processes run it on a private broker: the source worker (postgres-cdc), the flows worker
(F1, F3, F5, F6, F7) and the sink worker (tryton, the write-back pg-table, reporting-db). A real Tryton is the
ERP and the sales system; the test reads Tryton, the 进销存 database, the reporting schema and the
payment-freeze topic itself.

    snapshot: materials, warehouse WH, stock levels (MAT-STEEL-10: 100 on hand, safety 10)
    project P-ZJ01 (budget 2,000.00) on the project topic  ─► F1: cost center CC-P-ZJ01 (Tryton analytic account)
    receipt RC-1: 100 @ 40.00 + 50 @ 46.00                 ─► F6: moving average 42.00
    issue MV-1: 30 to P-ZJ01                               ─► F6: cost entry 1,260.00 ─► Tryton move 5401.01 / 1403
    need N-1: 120 for P-ZJ01 (free stock 90)               ─► F3: requisition 30 @ 45.50 ─► Tryton purchase request 30
                                                              F7: 1,260 + 1,365 = 2,625 > 2,200 ─► OVER, FREEZE
    need N-1 changed to 150                                ─► requisition v2: request 60 (still over: nothing new)
    order SO-1: 50 (ATP 90)                                ─► F5 ACCEPTED ─► Tryton sale confirmed, write-back
    order SO-2: 60 (ATP 40)                                ─► F5 REFUSED (reason) ─► Tryton sale cancelled, write-back
    need N-1 deleted                                       ─► requisition cancelled ─► request cancelled
                                                              F7: 1,260 ≤ 2,160 ─► BACK_UNDER, UNFREEZE
    stock level MAT-STEEL-10: 55 on hand (50 reserved)    ─► F5: replenishment alert BELOW (5 < safety 10)
    stock level back to 100                                ─► F5: RECOVERED
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import yaml
from bizbus.schemas import catalog
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from bizbus import lineage
from bizbus.catalogue import apply, load_catalogue
from bizbus.devstack.stack import register_schemas
from bizbus.kafka import read_topic
from bizbus.serde import AvroSerde
from tests.chaos.harness import Stack, Worker
from tests.integration.test_tryton_sink import flat
from tests.pg_private import PrivatePostgres

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "jxc-to-tryton.yaml"
SCHEMA_SQL = ROOT / "tests" / "fixtures" / "jxc" / "postgres.sql"
STATE_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CATALOGUE = load_catalogue(ROOT / "deploy" / "topics.yaml")
PROJECT, BUDGET = "P-ZJ01", Decimal("2000.00")
FREEZE_TOPIC, DEAD_TOPIC = "bizbus.oa.payment-freeze.v1", "bizbus.ops.dead-letter.v1"
ALERT_TOPIC = "bizbus.inventory.replenishment-alert.v1"

# the write-back table of the example, and an audit of every write into it (proves "exactly once")
WRITEBACK_DDL = """
CREATE TABLE jxc.sales_order_atp (order_no text PRIMARY KEY, order_version bigint NOT NULL,
  atp_status text NOT NULL, atp_reason text, decided_at timestamptz NOT NULL, effect_id text NOT NULL);
CREATE TABLE jxc.sales_order_atp_writes (order_no text, atp_status text, atp_reason text, op text);
CREATE FUNCTION jxc.audit_atp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO jxc.sales_order_atp_writes VALUES (NEW.order_no, NEW.atp_status, NEW.atp_reason, TG_OP);
  RETURN NEW;
END $$;
CREATE TRIGGER sales_order_atp_audit AFTER INSERT OR UPDATE ON jxc.sales_order_atp
  FOR EACH ROW EXECUTE FUNCTION jxc.audit_atp();
"""

MASTER_DATA = """
INSERT INTO warehouses (code, name) VALUES ('WH', '上海中心仓');
INSERT INTO materials (code, name, unit, category, standard_cost, safety_stock) VALUES
  ('MAT-STEEL-10', '螺纹钢 HRB400 Φ10', 'PCS', 'steel', 45.50, 10),
  ('MAT-CABLE-4', '电缆 YJV 4mm²', 'PCS', 'cable', 8.00, 0);
INSERT INTO stock_levels (warehouse, material, unit, on_hand, reserved, safety_stock) VALUES
  ('WH', 'MAT-STEEL-10', 'PCS', 100, 0, 10),
  ('WH', 'MAT-CABLE-4', 'PCS', 40, 0, 0);
"""

# the story: (step name, SQL statements committed in one transaction each)
STEPS: list[tuple[str, list[str]]] = [
    ("receipt and issue", [
        "INSERT INTO purchase_receipts (receipt_no, warehouse, supplier) VALUES ('RC-1', 'WH', 'SUP-001');"
        "INSERT INTO purchase_receipt_lines VALUES ('RC-1', 1, 'MAT-STEEL-10', 100, 'PCS', 40, 4000.00),"
        " ('RC-1', 2, 'MAT-STEEL-10', 50, 'PCS', 46, 2300.00)",
        "INSERT INTO stock_moves (move_no, kind, warehouse, material, quantity, unit, project)"
        " VALUES ('MV-1', 'issue', 'WH', 'MAT-STEEL-10', 30, 'PCS', 'P-ZJ01')"]),
    ("need", ["INSERT INTO project_material_needs VALUES ('N-1', 'P-ZJ01', NULL, 'MAT-STEEL-10', 120, 'PCS',"
              " DATE '2026-12-20', 'WH')"]),
    ("need changed", ["UPDATE project_material_needs SET quantity = 150 WHERE need_id = 'N-1'"]),
    ("order 1", ["INSERT INTO sales_orders (order_no, customer, warehouse, total_amount)"
                 " VALUES ('SO-1', 'CUST-001', 'WH', 3000.00);"
                 "INSERT INTO sales_order_lines VALUES ('SO-1', 1, 'MAT-STEEL-10', 50, 'PCS', 60, 3000.00)"]),
    ("order 2", ["INSERT INTO sales_orders (order_no, customer, warehouse, total_amount)"
                 " VALUES ('SO-2', 'CUST-001', 'WH', 3600.00);"
                 "INSERT INTO sales_order_lines VALUES ('SO-2', 1, 'MAT-STEEL-10', 60, 'PCS', 60, 3600.00)"]),
    ("need deleted", ["DELETE FROM project_material_needs WHERE need_id = 'N-1'"]),
    ("stock drops", ["UPDATE stock_levels SET on_hand = 55, updated_at = now() WHERE material = 'MAT-STEEL-10'"]),
    ("restocked", ["UPDATE stock_levels SET on_hand = 100, updated_at = now() WHERE material = 'MAT-STEEL-10'"]),
]  # fmt: skip


def dec(value: Any) -> Decimal:
    """A number from Tryton's JSON-RPC or PostgreSQL, exact."""
    if isinstance(value, dict):
        return Decimal(value["decimal"])
    return Decimal(str(value))


@dataclass
class JxcScenario:
    stack: Stack
    tryton: Any
    pg: PrivatePostgres
    key: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    workers: dict[str, Worker] = field(default_factory=dict)
    pipeline: Path | None = None

    # -- names of this run ------------------------------------------------------------------------------

    def name(self, role: str) -> str:
        """Connector names are unique per run: journals, cursors and ledgers live in the shared PostgreSQL."""
        return f"{role}-{self.key}"

    @property
    def schema(self) -> str:
        return f"reporting_{self.key}"

    # -- set up -----------------------------------------------------------------------------------------

    def write_pipeline(self) -> Path:
        """deploy/examples/jxc-to-tryton.yaml with this run's databases, Tryton, names and short timeouts."""
        doc = yaml.safe_load(EXAMPLE.read_text())
        doc["name"] = f"jxc-e2e-{self.key}"
        by = {c["name"]: c for c in doc["connectors"]}
        assert set(by) == {"jxc-pg", "erp", "jxc-atp-writeback", "reporting-db"}, set(by)
        for role, c in by.items():
            c["name"] = self.name(role)
        by["jxc-pg"]["config"].update(dsn=self.pg.dsn(), state_dsn=STATE_DSN, status_interval_seconds=1,
                                      confirm_interval_seconds=0.2)  # fmt: skip
        by["erp"]["config"].update(url=self.tryton.url, user=self.tryton.user, password_env=self.tryton.password_env,
                                   batch_timeout_seconds=0.5, retry={"max_attempts": 40, "max_elapsed": 180})  # fmt: skip
        by["jxc-atp-writeback"]["config"].update(dsn=self.pg.dsn(), batch_timeout_seconds=0.5)
        by["reporting-db"]["config"].update(dsn=STATE_DSN, schema=self.schema, batch_timeout_seconds=0.5)
        for f in doc["flows"]:
            f["config"].update(master_data_grace_seconds=90)
        path = self.stack.workdir / "jxc-to-tryton.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
        self.pipeline = path
        return path

    def db(self) -> psycopg.Connection[Any]:
        """The 进销存 application's connection (search_path jxc)."""
        return self.pg.connect(options="-c search_path=jxc")

    def prepare(self) -> None:
        """The 进销存 database with its master data (captured by the snapshot), Tryton's unit PCS and the two
        sales (Tryton is the sales system F5 answers), the catalogue's topics and the project with its budget."""
        with self.pg.connect() as c:
            c.execute("CREATE SCHEMA jxc")
        with self.db() as c:
            c.execute(SCHEMA_SQL.read_text())
            c.execute(WRITEBACK_DDL)
            c.execute(MASTER_DATA)
        rpc = self.tryton.rpc
        unit = rpc.call("model.product.uom", "search_read", [("symbol", "=", "u")], 0, None, None, ["category"])[0]
        rpc.call("model.product.uom", "create", [{"name": "Piece", "symbol": "PCS", "category": unit["category"],
                                                  "rate": 1.0, "factor": 1.0, "rounding": 1.0, "digits": 0}])  # fmt: skip
        for order_no, qty in (("SO-1", 50), ("SO-2", 60)):
            make_sale(self.tryton, order_no, qty)
        conf = {"bootstrap.servers": self.stack.bootstrap}
        apply(AdminClient(conf), CATALOGUE)
        serde = AvroSerde({"url": self.stack.registry_url})
        register_schemas(serde, CATALOGUE)
        value = catalog.sample("bizbus.pm.ProjectChanged")
        value.update(op="CREATED", project=PROJECT, name="张江仓库改造", company="C100", source_status=None,
                     manager="E1", customer=None, cost_center=None, planned_start=date(2026, 1, 5), planned_end=None,
                     actual_end=None, budget_amount=BUDGET, currency="CNY", version=1)  # fmt: skip
        value["meta"] = lineage.meta(lineage.event_id("pm", "project", PROJECT, 1), PROJECT, "pm",
                                     datetime(2026, 11, 1, tzinfo=UTC))  # fmt: skip
        enc = serde.encoder("bizbus.pm.project.v1-value", catalog.load("bizbus.pm.ProjectChanged"))
        producer = Producer(conf)
        producer.produce("bizbus.pm.project.v1", key=PROJECT.encode(), value=enc(value),
                         headers=lineage.headers(value["meta"]))  # fmt: skip
        assert producer.flush(20) == 0

    def start(self) -> None:
        assert self.pipeline is not None
        p = str(self.pipeline)
        only = [a for role in ("erp", "jxc-atp-writeback", "reporting-db") for a in ("--only", self.name(role))]
        self.workers = {
            "source": Worker(self.name("jxc-pg"), self.stack, self.pipeline),
            "flows": Worker("flows", self.stack, self.pipeline, command=["flows", "run", "--pipeline", p]),
            "sinks": Worker("sinks", self.stack, self.pipeline, command=["worker", "--pipeline", p, *only]),
        }
        for w in self.workers.values():
            w.start()

    def stop(self) -> None:
        for w in self.workers.values():
            w.stop()
        name = self.name("jxc-pg").replace("-", "_")
        with psycopg.connect(STATE_DSN, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            c.execute(f"DROP TABLE IF EXISTS bizbus_state.inbox_{name}, bizbus_state.cdc_docs_{name}")
            c.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (self.name("jxc-pg"),))
            c.execute("DELETE FROM bizbus_state.cdc_columns WHERE connector = %s", (self.name("jxc-pg"),))
            sinks = [self.name("erp"), self.name("reporting-db")]
            for table in ("applied_effects", "offsets", "http_intents"):
                if c.execute("SELECT to_regclass(%s)", (f"bizbus_ledger.{table}",)).fetchone()[0]:
                    c.execute(f"DELETE FROM bizbus_ledger.{table} WHERE connector = ANY(%s)", (sinks,))

    # -- the story --------------------------------------------------------------------------------------

    def run_story(self, chaos: random.Random | None = None) -> None:
        """Each step's transactions, then wait for its effects. ``chaos``: after each commit one worker (the
        three kinds at least twice each, in a random order) is SIGKILLed at a random moment and started again."""
        victims: list[str] = []
        if chaos is not None:
            kinds = ["source", "flows", "sinks"]
            victims = chaos.sample(kinds, 3) + chaos.sample(kinds, 3) + chaos.sample(kinds, 2)
        waits: dict[str, Callable[[], bool]] = {
            "receipt and issue": lambda: len(self.cost_moves()) == 1,
            "need": lambda: self.request_summary() == [(30.0, "draft")] and len(self.freeze_commands()) == 1,
            "need changed": lambda: self.request_summary() == [(60.0, "draft")],
            "order 1": lambda: "SO-1" in self.writeback() and self.sale("SO-1")["state"] == "processing",
            "order 2": lambda: "SO-2" in self.writeback() and self.sale("SO-2")["state"] == "cancelled",
            "need deleted": lambda: self.request_summary() == [(60.0, "cancelled")] and len(self.freeze_commands()) == 2,
            "stock drops": lambda: set(self.replenishment_alerts()) == {("BELOW", 1)},
            "restocked": lambda: set(self.replenishment_alerts()) == {("BELOW", 1), ("RECOVERED", 1)},
        }  # fmt: skip
        self.wait(lambda: bool(self.analytic_account()), 180, "the project's cost center in Tryton")
        for n, (step, statements) in enumerate(STEPS):
            with self.db() as c:
                for sql in statements:
                    with c.transaction():
                        c.execute(sql)
            if chaos is not None:
                time.sleep(chaos.uniform(0.2, 2.5))
                w = self.workers[victims[n]]
                w.kill()
                w.start()
            self.wait(waits[step], 180, f"the effects of step {step!r}")

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for w in self.workers.values():
                if not w.alive():
                    w.start()  # exited (a crash point, a stall restart): restarted as an orchestrator would
            try:
                if cond():
                    return
            except (psycopg.Error, KeyError, IndexError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(w.logs() for w in self.workers.values()))

    # -- what the test reads ----------------------------------------------------------------------------

    def analytic_account(self) -> list[dict[str, Any]]:
        return self.tryton.rpc.call("model.analytic_account.account", "search_read",
                                    [("bizbus_ref", "=", f"CC-{PROJECT}")], 0, None, None, ["code", "state"])  # fmt: skip

    def cost_moves(self) -> list[dict[str, Any]]:
        """F6's material cost entries posted in Tryton (``CE/<entry id>``) on the issue MV-1."""
        return self.tryton.rpc.call("model.account.move", "search_read", [("bizbus_ref", "like", "CE/MAT-MV-1-%")],
                                    0, None, None, ["bizbus_ref", "state", "date"])  # fmt: skip

    def requests(self) -> list[dict[str, Any]]:
        return flat(self.tryton.rpc.call("model.purchase.request", "search_read", [("bizbus_ref", "like", "PR-N-1/%")],
                                         0, None, None, ["bizbus_ref", "state", "quantity", "product.code",
                                                         "unit.symbol", "warehouse.code", "party.code"]))  # fmt: skip

    def request_summary(self) -> list[tuple[float, str]]:
        return [(float(r["quantity"]), r["state"]) for r in self.requests()]

    def sale(self, reference: str) -> dict[str, Any]:
        rows = self.tryton.rpc.call("model.sale.sale", "search_read", [("reference", "=", reference)], 0, None, None,
                                    ["reference", "state", "bizbus_decision", "bizbus_reason"])  # fmt: skip
        return rows[0]

    def writeback(self) -> dict[str, tuple[str, str | None]]:
        with self.db() as c:
            rows = c.execute("SELECT order_no, atp_status, atp_reason FROM jxc.sales_order_atp").fetchall()
        return {no: (status, reason) for no, status, reason in rows}

    def writeback_writes(self) -> list[tuple[str, str, str]]:
        with self.db() as c:
            return [tuple(r) for r in c.execute("SELECT order_no, atp_status, op FROM jxc.sales_order_atp_writes"
                                                " ORDER BY order_no").fetchall()]  # fmt: skip

    def topic(self, topic: str) -> list[dict[str, Any]]:
        serde = AvroSerde({"url": self.stack.registry_url})
        msgs = read_topic({"bootstrap.servers": self.stack.bootstrap}, topic, 1.0,
                          partitions=list(range(CATALOGUE.get(topic).partitions)), group_prefix=f"e2e-{self.key}")  # fmt: skip
        return [serde.decode(m.value()) for m in msgs]

    def replenishment_alerts(self) -> dict[tuple[str, int], dict[str, Any]]:
        """F5's replenishment alerts of WH/MAT-STEEL-10 by (state, crossing) (a repeat is the same alert)."""
        return {(a["state"], a["crossing"]): a for a in self.topic(ALERT_TOPIC)}

    def freeze_commands(self) -> dict[str, dict[str, Any]]:
        """What the OA side would execute: the payment-freeze commands by command_id (its idempotency key)."""
        return {c["command_id"]: c for c in self.topic(FREEZE_TOPIC)}

    def reporting(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(STATE_DSN, autocommit=True, options=f"-c search_path={self.schema}") as c:
            return [tuple(r) for r in c.execute(sql).fetchall()]

    # -- the exact final state --------------------------------------------------------------------------

    def wait_reporting(self) -> None:
        def done() -> bool:
            alerts = self.reporting("SELECT state FROM finance_budget_alert")
            reqs = self.reporting("SELECT status FROM purchase_requisition")
            decisions = self.reporting("SELECT count(*) FROM sales_order_decision")
            stock = self.reporting("SELECT state FROM inventory_replenishment_alert")
            return (alerts == [("BACK_UNDER",)] and reqs == [("CANCELLED",)] and decisions == [(2,)]
                    and stock == [("RECOVERED",)])  # fmt: skip

        self.wait(done, 120, "the reporting tables")

    def assert_final(self) -> None:
        rpc = self.tryton.rpc
        # F1 + F6: one material cost move of 30 x 42.00 on the project's analytic account, balanced, posted
        (move,) = self.cost_moves()
        assert move["state"] == "posted", move
        lines = flat(rpc.call("model.account.move.line", "search_read", [("move", "=", move["id"])], 0, None, None,
                              ["account.code", "debit", "credit"]))  # fmt: skip
        assert sorted((x["account.code"], dec(x["debit"]), dec(x["credit"])) for x in lines) == [
            ("1403", Decimal("0"), Decimal("1260.00")), ("5401.01", Decimal("1260.00"), Decimal("0"))]
        alines = flat(rpc.call("model.analytic_account.line", "search_read", [("move_line.move", "=", move["id"])], 0,
                               None, None, ["account.code", "debit", "credit"]))  # fmt: skip
        (acc,) = self.analytic_account()
        assert [(a["account.code"], dec(a["debit"])) for a in alines] == [(acc["code"], Decimal("1260.00"))], alines
        on_account = rpc.call("model.analytic_account.line", "search_read", [("account", "=", acc["id"])], 0, None, None,
                              ["debit", "credit"])  # fmt: skip
        assert [(dec(a["debit"]), dec(a["credit"])) for a in on_account] == [(Decimal("1260.00"), Decimal("0"))]
        assert len(rpc.call("model.account.move", "search", [("bizbus_ref", "like", "CE/%")])) == 1
        # F3: one purchase request of the requisition's line, adjusted to 60, then cancelled with the need
        (req,) = self.requests()
        assert (req["bizbus_ref"], req["product.code"], float(req["quantity"]), req["unit.symbol"],
                req["warehouse.code"], req["state"]) == ("PR-N-1/1", "MAT-STEEL-10", 60.0, "PCS", "WH", "cancelled"), req  # fmt: skip
        # F5: SO-1 confirmed (a shipment made), SO-2 cancelled with the reason the 进销存 database got too
        so1, so2 = self.sale("SO-1"), self.sale("SO-2")
        back = self.writeback()
        assert (so1["state"], so1["bizbus_decision"]) == ("processing", "ACCEPTED"), so1
        assert (so2["state"], so2["bizbus_decision"]) == ("cancelled", "REFUSED"), so2
        assert back["SO-1"] == ("ACCEPTED", None) and back["SO-2"][0] == "REFUSED", back
        reason = back["SO-2"][1]
        assert reason and "MAT-STEEL-10" in reason and so2["bizbus_reason"] == reason, (reason, so2)
        assert set(back) == {"SO-1", "SO-2"}
        # the write-back wrote each decision exactly once (a replay after a kill changes nothing)
        assert self.writeback_writes() == [("SO-1", "ACCEPTED", "INSERT"), ("SO-2", "REFUSED", "INSERT")]
        # F7: exactly one FREEZE and one UNFREEZE for the crossing
        cmds = self.freeze_commands()
        assert {k: (c["action"], c["project"], c["crossing"]) for k, c in cmds.items()} == {
            f"{PROJECT}/1/FREEZE": ("FREEZE", PROJECT, 1), f"{PROJECT}/1/UNFREEZE": ("UNFREEZE", PROJECT, 1)}, cmds
        # F5: the stock level fell under the safety stock once (55 on hand - 50 reserved = 5 < 10) and recovered
        alerts = self.replenishment_alerts()
        assert {k: (a["warehouse"], a["material"], dec(a["available"]), dec(a["safety_stock"]))
                for k, a in alerts.items()} == {
            ("BELOW", 1): ("WH", "MAT-STEEL-10", Decimal("5"), Decimal("10")),
            ("RECOVERED", 1): ("WH", "MAT-STEEL-10", Decimal("50"), Decimal("10"))}, alerts  # fmt: skip
        assert len({a["meta"]["event_id"] for a in alerts.values()}) == 2
        # nothing went to the dead letters
        assert self.topic(DEAD_TOPIC) == []
        self.assert_reporting(reason)

    def assert_reporting(self, reason: str) -> None:
        q = self.reporting
        assert q("SELECT code, unit, standard_cost, safety_stock FROM md_material ORDER BY code") == [
            ("MAT-CABLE-4", "PCS", Decimal("8.000000"), Decimal("0.0000")),
            ("MAT-STEEL-10", "PCS", Decimal("45.500000"), Decimal("10.0000"))]
        assert q("SELECT warehouse, material, on_hand, available FROM inventory_level ORDER BY material") == [
            ("WH", "MAT-CABLE-4", Decimal("40.0000"), Decimal("40.0000")),
            ("WH", "MAT-STEEL-10", Decimal("100.0000"), Decimal("100.0000"))]
        assert q("SELECT receipt_no, line_no, quantity, amount FROM inventory_goods_receipt_line ORDER BY line_no") == [
            ("RC-1", 1, Decimal("100.0000"), Decimal("4000.00")), ("RC-1", 2, Decimal("50.0000"), Decimal("2300.00"))]
        assert q("SELECT issue_no, project, warehouse FROM inventory_goods_issue") == [("MV-1", PROJECT, "WH")]
        assert q("SELECT cost_type, project, amount, quantity FROM finance_cost_entry") == [
            ("MATERIAL", PROJECT, Decimal("1260.00"), Decimal("30.0000"))]
        assert q("SELECT order_no, status FROM sales_order ORDER BY order_no") == [("SO-1", "SUBMITTED"),
                                                                                   ("SO-2", "SUBMITTED")]
        assert q("SELECT order_no, decision, reason FROM sales_order_decision ORDER BY order_no") == [
            ("SO-1", "ACCEPTED", None), ("SO-2", "REFUSED", reason)]
        # the requisition's history: the two versions of the need, then its cancellation
        hist = q("SELECT status, (lines->0->>'quantity')::numeric FROM purchase_requisition_history ORDER BY version")
        assert [(s, Decimal(qty).normalize()) for s, qty in hist] == [
            ("SUBMITTED", Decimal("30")), ("SUBMITTED", Decimal("60")), ("CANCELLED", Decimal("60"))], hist
        assert q("SELECT state, material_amount, committed_amount, running_amount FROM finance_budget_alert_history"
                 " ORDER BY crossing, state DESC") == [
            ("OVER", Decimal("1260.00"), Decimal("1365.00"), Decimal("2625.00")),
            ("BACK_UNDER", Decimal("1260.00"), Decimal("0.00"), Decimal("1260.00"))]
        assert q("SELECT state, crossing, available FROM inventory_replenishment_alert") == [
            ("RECOVERED", 1, Decimal("50.0000"))]
        assert q("SELECT state, crossing FROM inventory_replenishment_alert_history ORDER BY state") == [
            ("BELOW", 1), ("RECOVERED", 1)]
        assert q("SELECT command_id, action FROM oa_payment_freeze ORDER BY command_id") == [
            (f"{PROJECT}/1/FREEZE", "FREEZE"), (f"{PROJECT}/1/UNFREEZE", "UNFREEZE")]


def make_sale(server: Any, reference: str, quantity: float) -> int:
    """A draft Tryton sale of MAT-STEEL-10 whose reference is the 进销存 order number."""
    rpc = server.rpc
    party = rpc.call("model.party.party", "search_read", [("code", "=", "CUST-001")], 0, None, None, ["addresses"])[0]
    product = rpc.call("model.product.product", "search_read", [("code", "=", "MAT-STEEL-10")], 0, None, None,
                       ["default_uom"])[0]  # fmt: skip
    warehouse = rpc.call("model.stock.location", "search", [("code", "=", "WH"), ("type", "=", "warehouse")])[0]
    currency = rpc.call("model.currency.currency", "search", [("code", "=", "CNY")])[0]
    (sale_id,) = rpc.call("model.sale.sale", "create", [{
        "party": party["id"], "invoice_address": party["addresses"][0], "shipment_address": party["addresses"][0],
        "reference": reference, "warehouse": warehouse, "currency": currency, "sale_date": date(2026, 12, 1),
        "invoice_method": "manual", "shipment_method": "order",
        "lines": [("create", [{"type": "line", "product": product["id"], "quantity": quantity,
                               "unit": product["default_uom"], "unit_price": Decimal("60")}])]}])  # fmt: skip
    return int(sale_id)


__all__ = ["JxcScenario"]
