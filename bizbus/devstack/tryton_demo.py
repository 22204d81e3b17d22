"""A seeded Tryton 8.2 database and its server: the ERP of the tests and of ``bizbus tryton demo``.

``build_template(folder)`` creates ``<folder>/<name>.sqlite`` with the modules bizbus writes to (including our
own ``bizbus_ref``) and seeds it in a child process through trytond's API (``python -m
bizbus.devstack.tryton_demo seed DB``, so trytond's global configuration stays out of the caller):
company "Bizbus Demo Co" in CNY, a chart of accounts, fiscal year 2026 by month, accounts 6601 / 2211 / 1403 /
5401.01, the analytic root ``CC``, suppliers SUP-001 / SUP-002, customer CUST-001 and products MAT-STEEL-10 /
MAT-CABLE-4 / SVC-INSTALL.
``TrytonServer`` runs ``trytond`` for one database; ``run_demo`` and ``show_project`` back the CLI.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from bizbus.devstack.procs import ChildProcess, free_port

REPO = Path.cwd()
BIN = Path(sys.executable).parent
TEMPLATE_DB = "bizbus_tpl"
MODULES = ("account_invoice", "analytic_account", "purchase", "purchase_request", "sale", "stock", "project",
           "timesheet", "bizbus_ref")
ADMIN_USER = "admin"
ADMIN_PASSWORD = "bizbus-test-admin-4f1c9a"  # a throw-away test database's password, never a real one
PASSWORD_ENV = "BIZBUS_TEST_TRYTON_PASSWORD"
TEMPLATE_ENV = "BIZBUS_TRYTON_TEMPLATE"  # path of a template built earlier (build_template): skips the build
COMPANY = "Bizbus Demo Co"
FISCAL_YEAR = 2026
SUPPLIERS = {"SUP-001": "Shanghai Steel Co", "SUP-002": "Beijing Cable Ltd"}
CUSTOMERS = {"CUST-001": "Pudong Construction Group"}
ACCOUNTS = {  # code -> (name, parent code in the universal chart, account type template)
    "6601": ("Labor cost", "5.0.0", "account_type_template_expenses_en"),
    "1403": ("Purchased services", "5.0.0", "account_type_template_expenses_en"),
    "2211": ("Accrued payroll", "2.0.0", "account_type_template_current_liabilities_en"),
    "5401.01": ("Material cost (contract performance)", "5.0.0", "account_type_template_expenses_en"),
}


def trytond_missing() -> str | None:
    """Why a real Tryton cannot run here, or None when it can."""
    if importlib.util.find_spec("trytond") is None:
        return "trytond is not installed: install the extra tryton (pip install 'bizbus[tryton]'; `make install` does)"
    for exe in ("trytond", "trytond-admin"):
        if not (BIN / exe).exists():
            return f"{BIN / exe} is missing (trytond's console scripts are not installed in this environment)"
    return None


def tryton_env(folder: Path, **extra: str) -> dict[str, str]:
    """Environment of a trytond process using the SQLite databases in ``folder``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYTOND_")}
    env.update(TRYTOND_DATABASE__URI="sqlite://", TRYTOND_DATABASE__PATH=str(folder), **extra)
    return env


# -- template build ---------------------------------------------------------------------------------------


def build_template(folder: Path, name: str = TEMPLATE_DB, log: Any = print, password: str = ADMIN_PASSWORD) -> Path:
    """Create and seed ``<folder>/<name>.sqlite``; returns its path. Takes ~20 s on 2 cores."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / f"{name}.sqlite"
    db.unlink(missing_ok=True)
    db.touch()
    passfile = folder / "admin.pass"
    passfile.write_text(password + "\n")
    passfile.chmod(0o600)
    env = tryton_env(folder, TRYTONPASSFILE=str(passfile))
    started = time.monotonic()
    log(f"[tryton] creating template database {db} with {', '.join(MODULES)} ...")
    _run([str(BIN / "trytond-admin"), "-d", name, "--email", "admin@example.com", "--activate-dependencies",
          "-u", *MODULES], env, folder / "admin.log")  # fmt: skip
    log(f"[tryton] modules activated in {time.monotonic() - started:.1f} s; seeding ...")
    _run([sys.executable, "-m", "bizbus.devstack.tryton_demo", "seed", name], env, folder / "seed.log")
    log(f"[tryton] template ready in {time.monotonic() - started:.1f} s")
    return db


def _run(cmd: list[str], env: dict[str, str], logfile: Path) -> None:
    with logfile.open("w") as out:
        proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}); log {logfile}:\n{tail}")


def seed(name: str) -> None:
    """Seed the company, accounting, master data (runs inside a child process, through trytond's API)."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction, TransactionError

    Pool.start()
    pool = Pool(name)
    with Transaction().start(name, 0, readonly=True):
        pool.init()
    extras: dict[str, Any] = {}
    while True:  # as trytond's dispatcher does: a table lock restarts the transaction holding that lock
        with Transaction().start(name, 0, **extras) as transaction:
            try:
                company, employee = _seed_company(pool)
                with transaction.set_context(company=company.id, employee=employee.id):
                    _seed_chart(pool, company)
                    _seed_fiscal_year(pool, company)
                    _seed_master_data(pool, company)
            except TransactionError as exc:
                transaction.rollback()
                exc.fix(extras)
                continue
            transaction.commit()
            return


def _seed_company(pool: Any) -> tuple[Any, Any]:
    Currency, Party = pool.get("currency.currency"), pool.get("party.party")
    Company, Employee, User = pool.get("company.company"), pool.get("company.employee"), pool.get("res.user")
    cny, = Currency.create([{"name": "Chinese Yuan Renminbi", "code": "CNY", "symbol": "¥",
                             "rounding": Decimal("0.01"), "digits": 2}])  # fmt: skip
    (party,) = Party.create([{"name": COMPANY, "addresses": [("create", [{}])]}])
    (company,) = Company.create([{"party": party.id, "currency": cny.id}])
    (person,) = Party.create([{"name": "Li Wei", "addresses": [("create", [{}])]}])
    (employee,) = Employee.create([{"party": person.id, "company": company.id}])
    (admin,) = User.search([("login", "=", ADMIN_USER)])
    User.write([admin], {"companies": [("add", [company.id])], "company": company.id,
                         "employees": [("add", [employee.id])], "employee": employee.id})  # fmt: skip
    return company, employee


def _seed_chart(pool: Any, company: Any) -> None:
    """The universal chart through the create-chart wizard, default receivable/payable, our own accounts."""
    ModelData, Account = pool.get("ir.model.data"), pool.get("account.account")
    AccountTemplate, AccountType = pool.get("account.account.template"), pool.get("account.account.type")
    CreateChart = pool.get("account.create_chart", type="wizard")
    session_id, _, _ = CreateChart.create()
    wizard = CreateChart(session_id)
    wizard.account.account_template = AccountTemplate(ModelData.get_id("account", "account_template_root_en"))
    wizard.account.company = company
    wizard.transition_create_account()
    defaults = wizard.states["properties"].get_defaults(wizard, "properties", list(wizard.properties._fields))
    for fname, value in defaults.items():
        if fname in wizard.properties._fields:
            setattr(wizard.properties, fname, value)
    for kind in ("receivable", "payable"):
        if not getattr(wizard.properties, f"account_{kind}"):
            account, = Account.search([(f"type.{kind}", "=", True), ("party_required", "=", True),
                                       ("company", "=", company.id)], limit=1)  # fmt: skip
            setattr(wizard.properties, f"account_{kind}", account)
    wizard.transition_create_properties()

    rows = []
    for code, (label, parent_code, type_xml_id) in ACCOUNTS.items():
        (parent,) = Account.search([("code", "=", parent_code), ("company", "=", company.id)])
        template_type = ModelData.get_id("account", type_xml_id)
        (type_,) = AccountType.search([("template", "=", template_type), ("company", "=", company.id)])
        rows.append(
            {"code": code, "name": label, "parent": parent.id, "type": type_.id, "company": company.id}
        )
    Account.create(rows)


def _seed_fiscal_year(pool: Any, company: Any) -> None:
    ModelData, Sequence = pool.get("ir.model.data"), pool.get("ir.sequence.strict")
    FiscalYear = pool.get("account.fiscalyear")
    move_type = ModelData.get_id("account", "sequence_type_account_move")
    invoice_type = ModelData.get_id("account_invoice", "sequence_type_account_invoice")
    move_seq, *invoice_seqs = Sequence.create(
        [{"name": f"Moves {FISCAL_YEAR}", "sequence_type": move_type, "company": company.id}]
        + [{"name": f"{kind} {FISCAL_YEAR}", "sequence_type": invoice_type, "company": company.id}
           for kind in ("Supplier invoices", "Supplier credit notes", "Customer invoices", "Customer credit notes")]
    )  # fmt: skip
    fiscal_year, = FiscalYear.create([{
        "name": str(FISCAL_YEAR), "company": company.id, "move_sequence": move_seq.id,
        "start_date": date(FISCAL_YEAR, 1, 1), "end_date": date(FISCAL_YEAR, 12, 31),
        "invoice_sequences": [("create", [{
            "company": company.id, "in_invoice_sequence": invoice_seqs[0].id,
            "in_credit_note_sequence": invoice_seqs[1].id, "out_invoice_sequence": invoice_seqs[2].id,
            "out_credit_note_sequence": invoice_seqs[3].id}])],
    }])  # fmt: skip
    FiscalYear.create_period([fiscal_year], interval=1)


def _seed_master_data(pool: Any, company: Any) -> None:
    ModelData, Account, Party = (
        pool.get("ir.model.data"),
        pool.get("account.account"),
        pool.get("party.party"),
    )
    Analytic, Category = pool.get("analytic_account.account"), pool.get("product.category")
    Template = pool.get("product.template")
    Analytic.create([{"name": "Cost centers", "code": "CC", "type": "root", "state": "opened",
                      "company": company.id}])  # fmt: skip
    Party.create([{"name": label, "code": code, "addresses": [("create", [{}])]}
                  for code, label in {**SUPPLIERS, **CUSTOMERS}.items()])  # fmt: skip
    (services,) = Account.search([("code", "=", "1403"), ("company", "=", company.id)])
    (category,) = Category.create([{"name": "Purchased", "accounting": True, "account_expense": services.id}])
    unit = ModelData.get_id("product", "uom_unit")
    common = {"default_uom": unit, "purchasable": True, "purchase_uom": unit, "account_category": category.id}
    Template.create([
        {"name": "Steel rebar 10 mm", "code": "MAT-STEEL-10", "type": "goods", "list_price": Decimal("60"),
         "products": [("create", [{"cost_price": Decimal("45.50")}])], "salable": True, "sale_uom": unit,
         **common},
        {"name": "Copper cable 4 mm2", "code": "MAT-CABLE-4", "type": "goods", "list_price": Decimal("12"),
         "products": [("create", [{"cost_price": Decimal("8.25")}])], "salable": True, "sale_uom": unit,
         **common},
        {"name": "Installation service", "code": "SVC-INSTALL", "type": "service", "list_price": Decimal("0"),
         "products": [("create", [{}])], **common},
    ])  # fmt: skip


# -- server -----------------------------------------------------------------------------------------------


@dataclass
class TrytonServer:
    """A running ``trytond`` serving one SQLite database in ``folder``."""

    folder: Path
    database: str
    port: int
    user: str = ADMIN_USER
    password_env: str = PASSWORD_ENV
    password: str = field(default=ADMIN_PASSWORD, repr=False)
    proc: ChildProcess | None = None
    _rpc: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The URL the sink is configured with (``rpc/`` is appended by the client)."""
        return f"http://127.0.0.1:{self.port}/{self.database}/"

    @property
    def rpc(self) -> Any:
        """A logged-in JSON-RPC client (the sink's own) for assertions, with the user's context."""
        if self._rpc is None:
            from bizbus.connectors.sinks.tryton.api import TrytonRpc

            self._rpc = TrytonRpc(self.url, self.user, self.password, timeout=30)
            self._rpc.login()
        return self._rpc

    def start(self, timeout: float = 60) -> None:
        env = tryton_env(self.folder, TRYTOND_WEB__LISTEN=f"127.0.0.1:{self.port}")
        self.proc = ChildProcess("trytond", [str(BIN / "trytond"), "-d", self.database],
                                 self.folder / "trytond.log", env=env)  # fmt: skip
        self.proc.start()
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        body = {"id": 0, "method": "common.db.login",
                "params": [self.user, {"password": self.password}, "en"]}  # fmt: skip
        while time.monotonic() < deadline:
            if self.proc is not None and not self.proc.alive():
                raise RuntimeError(f"trytond exited early:\n{self.proc.log_tail(40)}")
            try:
                if httpx.post(self.url + "rpc/", json=body, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"trytond did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        if self._rpc is not None:
            self._rpc.close()
            self._rpc = None
        if self.proc is not None:
            self.proc.stop()
        self.proc = None

    def restart(self) -> None:
        """Stop and start the same database on the same port (sessions are lost, data kept)."""
        self.stop()
        self.start()


def start_tryton_server(db_folder: Path, db_name: str, port: int | None = None) -> TrytonServer:
    """Start ``trytond`` for ``<db_folder>/<db_name>.sqlite`` on 127.0.0.1 and wait until JSON-RPC answers."""
    server = TrytonServer(Path(db_folder), db_name, port or free_port())
    server.start()
    return server




# -- the demo ERP of ``bizbus tryton demo`` / ``bizbus tryton show`` ----------------------------------------


def run_demo(folder: Path, port: int, log: Any = print) -> TrytonServer:
    """Build (once) and serve the demo database ``bizbus`` from ``folder``; the admin password is generated on
    the first build and kept in ``folder/admin.pass`` (mode 600), never printed."""
    import secrets

    db = folder / "bizbus.sqlite"
    passfile = folder / "admin.pass"
    if not db.exists() or not passfile.exists():
        log(f"building the demo Tryton database in {folder} (once; about a minute) ...")
        build_template(folder, "bizbus", log=log, password=secrets.token_urlsafe(18))
    server = TrytonServer(folder, "bizbus", port, password=passfile.read_text().strip())
    server.start()
    return server


def show_project(rpc: Any, project: str, cost_center_pattern: str = "CC-{project}") -> list[str]:
    """What bizbus wrote into Tryton for one project: its analytic account, the moves on it, the purchases
    made from approvals that name it (by bizbus_ref). Lines of text for a terminal."""
    code = cost_center_pattern.format(project=project)
    out: list[str] = []
    accounts = rpc.call("model.analytic_account.account", "search_read", [("bizbus_ref", "=", code)], 0, None, None,
                        ["name", "state"])  # fmt: skip
    if not accounts:
        return [f"no analytic account with bizbus_ref {code} (yet): is the tryton sink running?"]
    acc = accounts[0]
    out.append(f"analytic account {code}: {acc['name']} [{acc['state']}]")
    lines = rpc.call("model.analytic_account.line", "search_read", [("account", "=", acc["id"])], 0, None, None,
                     ["move_line", "debit", "credit"])  # fmt: skip
    move_lines = rpc.call("model.account.move.line", "read", sorted({ln["move_line"] for ln in lines}), ["move"])
    move_of = {ml["id"]: ml["move"] for ml in move_lines}
    moves = {m["id"]: m for m in rpc.call("model.account.move", "read", sorted(set(move_of.values())),
                                          ["bizbus_ref", "date", "state"])}  # fmt: skip
    for ln in sorted(lines, key=lambda x: str(moves[move_of[x["move_line"]]]["bizbus_ref"])):
        m = moves[move_of[ln["move_line"]]]
        out.append(f"  move {m['bizbus_ref']} {_num(m['date'])} [{m['state']}] "
                   f"debit {_num(ln['debit'])} credit {_num(ln['credit'])}")  # fmt: skip
    return out


def _num(value: Any) -> str:
    """Tryton's JSON for decimals ({"decimal": "1.50"}) and dates ({"year": .., "month": .., "day": ..})."""
    if isinstance(value, dict) and "decimal" in value:
        return str(value["decimal"])
    if isinstance(value, dict) and "year" in value:
        return f"{value['year']:04d}-{value['month']:02d}-{value['day']:02d}"
    return str(value)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "seed":
        seed(sys.argv[2])
    else:
        sys.exit("usage: python -m bizbus.devstack.tryton_demo seed DBNAME")
