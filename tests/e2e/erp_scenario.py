"""The issue-5 business scenario end to end, shared by the plain e2e test and its chaos variant.

Jira (signed webhooks) and DingTalk (encrypted callbacks) push at bizbus's HTTP endpoints; the connectors,
the Faust flows and the Tryton sink run as separate processes on a private broker and registry; a real
Tryton server is the ERP. The test reads Tryton through a JSON-RPC client of its own (below), not the sink's.

    project created ─► cost center CC-<KEY> (analytic account, opened)
    3 worklogs      ─► 3 labor-cost moves (debit 6601 on the cost center, credit 2211)
    1 edit          ─► reversal of the old move + a new one        1 delete ─► reversal
    approval A      ─► purchase OA-<A> (draft)                     approval B approved + revoked ─► cancelled
    project archived (= completed) ─► cost center closed
"""

from __future__ import annotations

import base64
import os
import random
import string
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import yaml
from bizbus.schemas import catalog
from confluent_kafka import Producer

from bizbus import lineage
from bizbus.catalogue import apply, load_catalogue
from bizbus.devstack.procs import free_port
from bizbus.devstack.stack import register_schemas
from bizbus.serde import AvroSerde
from tests.chaos.harness import Stack, Worker, wait_for
from tests.fakes.dingtalk_api import DingTalkApi, DingTalkCallbackSender
from tests.fakes.jira_api import JiraCloudFake, JiraWebhookSender

ROOT = Path(__file__).resolve().parents[2]
JIRA_SECRET = "e2e-jira-webhook-secret"
DT_TOKEN = "e2e-dingtalk-token"
DT_AES_KEY = "".join(random.Random(7).choices(string.ascii_letters + string.digits, k=43))
DT_CORP = "dingcorpe2e0001"
AUTHOR = "5b10ac8d82e05b22cc7d4ef5"  # the Jira accountId of the person booking hours
EMPLOYEE = "E-1001"
RATE = Decimal("120.00")
PROCESS = "PROC-PURCHASE-01"

SECRETS = {"E2E_JIRA_SECRET": JIRA_SECRET, "E2E_JIRA_TOKEN": "api-token", "E2E_DT_TOKEN": DT_TOKEN,
           "E2E_DT_AES_KEY": DT_AES_KEY, "E2E_DT_APP_SECRET": "fake-app-secret"}  # fmt: skip


class TrytonReader:
    """A minimal JSON-RPC client of the test's own: login, then search_read."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip("/") + "/"
        r = httpx.post(self.url, json={"id": 1, "method": "common.db.login",
                                       "params": [user, {"password": password}, "en"]}, timeout=30)  # fmt: skip
        uid, session = r.json()["result"][:2]
        token = base64.b64encode(f"{user}:{uid}:{session}".encode()).decode()
        self.headers = {"Authorization": f"Session {token}"}
        self.context: dict[str, Any] = {}

    def call(self, method: str, *params: Any) -> Any:
        r = httpx.post(self.url, json={"id": 1, "method": method, "params": [*params, self.context]},
                       headers=self.headers, timeout=30)  # fmt: skip
        body = r.json()
        if body.get("error"):
            raise AssertionError(f"Tryton {method}: {body['error']}")
        return body["result"]

    def read(self, model: str, domain: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        return self.call(f"model.{model}.search_read", domain, 0, None, None, fields)


@dataclass
class Scenario:
    """Everything one run needs: the stack, fakes, workers, the names it used."""

    stack: Stack
    tryton: Any
    jira: JiraCloudFake
    dingtalk: DingTalkApi
    key: str = field(default_factory=lambda: "E" + "".join(random.choices(string.ascii_uppercase, k=5)))
    workers: dict[str, Worker] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    admin_ports: dict[str, int] = field(default_factory=dict)

    def name(self, role: str) -> str:
        """Connector names are unique per run: inboxes, cursors and leases live in the shared PostgreSQL."""
        return f"{role}-{self.key.lower()}"

    # -- set up -----------------------------------------------------------------------------------

    def pipeline(self) -> Path:
        """The pipeline file of this run: two webhook sources, the three flows, the Tryton sink."""
        f2_path = f2_mapping(self.stack.workdir)
        doc = {
            "version": 1, "name": "e2e",
            "connectors": [
                {"name": self.name("jira"), "type": "jira", "config": {
                    "base_url": self.jira.url, "email": self.jira.email, "token_env": "E2E_JIRA_TOKEN",
                    "secret_env": "E2E_JIRA_SECRET", "company": "Bizbus Demo Co", "backfill": False}},
                {"name": self.name("dingtalk"), "type": "dingtalk", "config": {
                    "token_env": "E2E_DT_TOKEN", "aes_key_env": "E2E_DT_AES_KEY", "corp_id": DT_CORP,
                    "app_key": self.dingtalk.app_key, "app_secret_env": "E2E_DT_APP_SECRET",
                    "api_base_url": self.dingtalk.url, "project_field": "项目编号", "amount_field": "金额"}},
                {"name": self.name("erp"), "type": "tryton", "config": {
                    "url": self.tryton.url, "user": self.tryton.user, "password_env": self.tryton.password_env,
                    "batch_timeout_seconds": 0.5, "retry": {"max_attempts": 30, "max_elapsed": 120}}},
            ],
            "flows": [
                {"name": "cost-centers", "type": "cost-centers", "config": {}},
                {"name": "labor-cost", "type": "labor-cost",
                 "config": {"mapping": str(f2_path), "master_data_grace_seconds": 20}},
                {"name": "approvals", "type": "approvals-to-erp", "config": {"master_data_grace_seconds": 20}},
            ],
        }  # fmt: skip
        path = self.stack.workdir / "pipeline.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
        return path

    def bootstrap(self) -> None:
        """Topics and schemas of the catalogue, then the master data the flows join with."""
        from confluent_kafka.admin import AdminClient

        conf = {"bootstrap.servers": self.stack.bootstrap}
        cat = load_catalogue(ROOT / "deploy" / "topics.yaml")
        apply(AdminClient(conf), cat)
        serde = AvroSerde({"url": self.stack.registry_url})
        register_schemas(serde, cat)
        producer = Producer(conf)
        supplier = catalog.sample("bizbus.md.Supplier")
        supplier.update(code="SUP-001", name="Shanghai Steel Co", active=True, valid_from=date(2026, 1, 1),
                        valid_to=None, version=1)  # fmt: skip
        supplier["meta"] = lineage.meta(lineage.event_id("mdm", "supplier", "SUP-001", 1), "SUP-001", "mdm")
        enc = serde.encoder("bizbus.md.supplier.v1-value", catalog.load("bizbus.md.Supplier"))
        producer.produce("bizbus.md.supplier.v1", key=b"SUP-001", value=enc(supplier),
                         headers=lineage.headers(supplier["meta"]))  # fmt: skip
        assert producer.flush(20) == 0

    def start(self, pipeline: Path) -> None:
        env = {**os.environ, **SECRETS}
        for name in ("jira", "dingtalk", "erp"):
            self.ports[name], self.admin_ports[name] = free_port(), free_port()
            self.workers[name] = Worker(self.name(name), self.stack, pipeline,
                                        env={**env, "BIZBUS_HTTP_PORT": str(self.ports[name]),
                                             "BIZBUS_ADMIN_PORT": str(self.admin_ports[name])})  # fmt: skip
        self.workers["flows"] = Worker("flows", self.stack, pipeline, env=env,
                                       command=["flows", "run", "--pipeline", str(pipeline)])  # fmt: skip
        for w in self.workers.values():
            w.start()
        for name in ("jira", "dingtalk"):
            url = f"http://127.0.0.1:{self.admin_ports[name]}/readyz"
            wait_for(lambda url=url: _answers(url), 60, f"{name} worker HTTP server", list(self.workers.values()))

    def stop(self) -> None:
        import psycopg

        for w in self.workers.values():
            w.stop()
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            for role in ("jira", "dingtalk"):
                name = self.name(role)
                conn.execute(f'DROP TABLE IF EXISTS bizbus_state."inbox_{name.replace("-", "_")}"')
                conn.execute(f'DROP TABLE IF EXISTS bizbus_state."jira_issues_{name.replace("-", "_")}"')
                conn.execute(f'DROP TABLE IF EXISTS bizbus_state."jira_worklogs_{name.replace("-", "_")}"')
                conn.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (name,))

    # -- the business story -----------------------------------------------------------------------

    def run_story(self, between: Callable[[str], None] = lambda _step: None) -> dict[str, Any]:
        """Send the webhooks; ``between(step)`` runs between steps (the chaos variant kills there)."""
        jira = JiraWebhookSender(f"http://127.0.0.1:{self.ports['jira']}/webhooks/{self.name('jira')}", JIRA_SECRET)
        ding = DingTalkCallbackSender(f"http://127.0.0.1:{self.ports['dingtalk']}/webhooks/{self.name('dingtalk')}", DT_TOKEN,
                                      DT_AES_KEY, DT_CORP, api=self.dingtalk)  # fmt: skip
        project = self.jira.add_project(self.key, "Pudong warehouse fit-out", lead=AUTHOR)
        t0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
        ok(jira.project_created(project, timestamp=_ms(t0)))
        issue = self.jira.add_issue(self.key, "Install racks", at=t0)
        ok(jira.issue_created(issue, timestamp=_ms(t0) + 1000))
        between("project")
        w1 = self.jira.add_worklog(issue["id"], AUTHOR, 3 * 3600, "2026-11-02T09:00:00.000+0800",
                                   at=datetime(2026, 11, 2, 10, tzinfo=UTC))  # fmt: skip
        w2 = self.jira.add_worklog(issue["id"], AUTHOR, 9000, "2026-11-03T09:00:00.000+0800",
                                   at=datetime(2026, 11, 3, 10, tzinfo=UTC))  # fmt: skip
        w3 = self.jira.add_worklog(issue["id"], AUTHOR, 5400, "2026-11-04T09:00:00.000+0800",
                                   at=datetime(2026, 11, 4, 10, tzinfo=UTC))  # fmt: skip
        for i, w in enumerate((w1, w2, w3)):
            ok(jira.worklog_created(w, timestamp=_ms(datetime(2026, 11, 2 + i, 10, tzinfo=UTC))))
        between("worklogs")
        w2b = self.jira.update_worklog(w2["id"], seconds=4 * 3600, at=datetime(2026, 11, 5, 10, tzinfo=UTC))
        ok(jira.worklog_updated(w2b, timestamp=_ms(datetime(2026, 11, 5, 10, tzinfo=UTC))))
        w3d = self.jira.delete_worklog(w3["id"], at=datetime(2026, 11, 6, 10, tzinfo=UTC))
        ok(jira.worklog_deleted(w3d, timestamp=_ms(datetime(2026, 11, 6, 10, tzinfo=UTC))))
        between("edits")

        form = {"供应商编码": "SUP-001", "物料编码": "MAT-STEEL-10", "数量": "10", "单价": "45.50",
                "金额": "455.00", "项目编号": self.key, "用途": "racks for the warehouse"}  # fmt: skip
        a, b = f"pi-{uuid.uuid4().hex[:12]}", f"pi-{uuid.uuid4().hex[:12]}"
        for inst in (a, b):
            self.dingtalk.add_instance(inst, process_code=PROCESS, form=form)
            ok(ding.instance_started(inst, PROCESS), ding)
            ok(ding.instance_finished(inst, PROCESS, "agree"), ding)
        between("approvals")
        ok(ding.instance_terminated(b, PROCESS), ding)
        between("revoked")
        return {"project": project, "worklogs": (w1, w2b, w3d), "approved": a, "revoked": b, "sender": jira}

    def complete_project(self, story: dict[str, Any]) -> None:
        """Archive (= complete) the project once its hours are in the books: the cost center closes."""
        ok(story["sender"].project_archived(story["project"], timestamp=_ms(datetime(2026, 11, 20, 9, tzinfo=UTC))))

    # -- what the ERP must show -------------------------------------------------------------------

    def erp(self) -> TrytonReader:
        return TrytonReader(self.tryton.url + "rpc/" if not self.tryton.url.endswith("rpc/") else self.tryton.url,
                            self.tryton.user, os.environ[self.tryton.password_env])  # fmt: skip

    def labor_moves(self, erp: TrytonReader) -> list[dict[str, Any]]:
        return labor_moves(erp, self.key)

    def cost_center(self, erp: TrytonReader) -> dict[str, Any] | None:
        return cost_center(erp, self.key)

    def wait_books(self, story: dict[str, Any], timeout: float = 240) -> None:
        erp = self.erp()
        wait_for(lambda: len(self.labor_moves(erp)) >= 6, timeout, "six labor-cost moves in Tryton",
                 list(self.workers.values()))  # fmt: skip

    def wait_final(self, story: dict[str, Any], timeout: float = 240) -> None:
        erp = self.erp()

        def done() -> bool:
            cc = self.cost_center(erp)
            purchases = erp.read("purchase.purchase", [("bizbus_ref", "in", [f"OA-{story['approved']}",
                                                                             f"OA-{story['revoked']}"])], ["state"])  # fmt: skip
            return bool(cc and cc["state"] == "closed" and len(purchases) == 2
                        and sorted(p["state"] for p in purchases)[0] == "cancelled")  # fmt: skip

        wait_for(done, timeout, "closed cost center and both purchases in Tryton", list(self.workers.values()))

    def assert_books(self, story: dict[str, Any]) -> None:
        """The exact final state: one cost center (closed), six balanced moves with exact amounts, two purchases."""
        erp = self.erp()
        cc = self.cost_center(erp)
        assert cc is not None and cc["state"] == "closed", cc
        assert len(erp.read("analytic_account.account", [("bizbus_ref", "=", f"CC-{self.key}")], ["id"])) == 1

        moves = self.labor_moves(erp)
        assert all(m["state"] == "posted" for m in moves), moves
        refs = [m["bizbus_ref"] for m in moves]
        assert len(refs) == len(set(refs)) == 6, refs  # nothing twice
        lines = erp.read("account.move.line", [("move", "in", [m["id"] for m in moves])],
                         ["move", "debit", "credit", "account.code"])  # fmt: skip
        by_move: dict[int, list[dict[str, Any]]] = {}
        for ln in lines:
            by_move.setdefault(ln["move"], []).append(ln)
        labor: list[Decimal] = []  # signed amount on 6601 per move: + cost, - reversal
        for m in moves:
            ls = by_move[m["id"]]
            debit = sum(dec(x["debit"]) for x in ls)
            credit = sum(dec(x["credit"]) for x in ls)
            assert debit == credit, (m, ls)  # balanced
            codes = {x["account."]["code"] for x in ls}
            assert codes == {"6601", "2211"}, codes
            labor.append(sum(dec(x["debit"]) - dec(x["credit"]) for x in ls
                             if x["account."]["code"] == "6601"))  # fmt: skip
        # W1 3 h, W2 2.5 h then 4 h, W3 1.5 h then deleted; 120.00 an hour
        assert sorted(labor) == sorted([Decimal("360.00"), Decimal("300.00"), Decimal("-300.00"),
                                        Decimal("480.00"), Decimal("180.00"), Decimal("-180.00")])  # fmt: skip
        assert sum(labor) == Decimal("840.00")

        purchases = erp.read("purchase.purchase", [("bizbus_ref", "in", [f"OA-{story['approved']}",
                                                                         f"OA-{story['revoked']}"])],
                             ["bizbus_ref", "state", "party.code", "lines"])  # fmt: skip
        assert len(purchases) == 2
        states = {p["bizbus_ref"]: p["state"] for p in purchases}
        assert states[f"OA-{story['revoked']}"] == "cancelled"
        assert states[f"OA-{story['approved']}"] in ("draft", "quotation")
        assert {p["party."]["code"] for p in purchases} == {"SUP-001"}
        approved = next(p for p in purchases if p["bizbus_ref"] == f"OA-{story['approved']}")
        pl = erp.read("purchase.line", [("purchase", "=", approved["id"])], ["quantity", "unit_price", "product.code"])
        assert [(dec(x["quantity"]), dec(x["unit_price"]), x["product."]["code"]) for x in pl] == [
            (Decimal("10"), Decimal("45.50"), "MAT-STEEL-10")]


def f2_mapping(workdir: Path) -> Path:
    """F2's mapping with the scenario's employee (the Jira author) and hourly rate, written into ``workdir``."""
    f2 = yaml.safe_load((ROOT / "streams" / "labor_cost" / "f2_labor_cost.yaml").read_text())
    f2["employee_aliases"] = {f"jira:{AUTHOR}": EMPLOYEE}
    f2["rates"] = [{"employee": EMPLOYEE, "rate": str(RATE), "valid_from": "2026-01-01"}]
    path = workdir / "f2.yaml"
    path.write_text(yaml.safe_dump(f2, allow_unicode=True))
    return path


def cost_center(erp: TrytonReader, key: str) -> dict[str, Any] | None:
    """The analytic account F1 opened for project ``key``."""
    found = erp.read("analytic_account.account", [("bizbus_ref", "=", f"CC-{key}")],
                     ["bizbus_ref", "name", "state", "code"])  # fmt: skip
    return found[0] if found else None


def labor_moves(erp: TrytonReader, key: str) -> list[dict[str, Any]]:
    """The account moves posted on project ``key``'s cost center."""
    cc = cost_center(erp, key)
    if cc is None:
        return []
    lines = erp.read("analytic_account.line", [("account", "=", cc["id"])], ["move_line"])
    ml_ids = sorted({ln["move_line"] for ln in lines if ln.get("move_line")})
    mls = erp.read("account.move.line", [("id", "in", ml_ids)], ["move"]) if ml_ids else []
    move_ids = sorted({m["move"] for m in mls})
    return erp.read("account.move", [("id", "in", move_ids)], ["bizbus_ref", "state", "date", "lines"]) if move_ids else []


def labor_amounts(erp: TrytonReader, moves: list[dict[str, Any]]) -> dict[str, Decimal]:
    """Per move (by ``bizbus_ref``): the signed amount on labor cost 6601 (+ cost, - reversal)."""
    lines = erp.read("account.move.line", [("move", "in", [m["id"] for m in moves])],
                     ["move", "debit", "credit", "account.code"])  # fmt: skip
    ref = {m["id"]: m["bizbus_ref"] for m in moves}
    out: dict[str, Decimal] = {}
    for ln in lines:
        if ln["account."]["code"] == "6601":
            key = ref[ln["move"]]
            out[key] = out.get(key, Decimal(0)) + dec(ln["debit"]) - dec(ln["credit"])
    return out


def dec(value: Any) -> Decimal:
    """A number from Tryton's JSON-RPC (decimals come as {"__class__": "Decimal", "decimal": "1.50"})."""
    if isinstance(value, dict):
        return Decimal(value["decimal"])
    return Decimal(str(value))


def ok(response: httpx.Response, ding: DingTalkCallbackSender | None = None) -> None:
    assert response.status_code == 200, (response.status_code, response.text)
    if ding is not None:
        assert ding.reply_is_success(response), response.text


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def wait_seconds(seconds: float) -> None:
    time.sleep(seconds)


__all__ = ["Scenario", "TrytonReader", "wait_seconds"]
