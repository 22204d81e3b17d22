"""Configuration of the ``tryton`` sink (the password only as the name of an environment variable)."""

from __future__ import annotations

from bizbus.connectors.runtime.sinkconfig import SinkRuntimeConfig
from bizbus.connectors.sinks.tryton.api import rpc_endpoint
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bizbus.failures import RetryPolicy
from bizbus.secrets import EnvSecret

DEFAULT_TOPICS = ("bizbus.md.cost-center.v1", "bizbus.finance.voucher.v1", "bizbus.purchase.order.v1")
# what else the sink can write (opt in by listing the topic): requisitions -> purchase requests, material cost
# entries -> analytic account moves, F5 decisions -> Tryton sales (only where Tryton is the sales system)
OPTIONAL_TOPICS = (
    "bizbus.purchase.requisition.v1",
    "bizbus.finance.cost-entry.v1",
    "bizbus.sales.order-decision.v1",
)


class CostAccounts(BaseModel):
    """The two accounts a cost entry of one cost type is posted on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    debit_account: str = Field(min_length=1, description="Code of the expense account debited (carries the "
                               "analytic line of the project's analytic account).", examples=["5401.01"])  # fmt: skip
    credit_account: str = Field(min_length=1, description="Code of the account credited (inventory, payable ...).",
                                examples=["1403"])  # fmt: skip


class TrytonSinkConfig(SinkRuntimeConfig):
    """Settings of one Tryton sink connector; the password is referenced by an environment variable name."""

    topics: tuple[str, ...] = Field(
        DEFAULT_TOPICS,
        min_length=1,
        description="Topics with CostCenter, Voucher and PurchaseOrder records (recognized by their fields); add "
        "bizbus.purchase.requisition.v1 (-> purchase requests), bizbus.finance.cost-entry.v1 (-> analytic "
        "moves, see cost_accounts) and bizbus.sales.order-decision.v1 (-> confirm/cancel Tryton sales) to "
        "write those too.",
    )
    url: str = Field(
        description="Tryton server URL ending with the database name; JSON-RPC is served at <url>rpc/.",
        examples=["http://127.0.0.1:8000/bizbus/"],
    )
    user: str = Field("admin", min_length=1, description="Tryton login the sink writes as.")
    password_env: EnvSecret = Field(
        description="NAME of the environment variable holding that user's password (never the password; or "
        "<NAME>_FILE naming a file holding it).",
        examples=["TRYTON_PASSWORD"],
    )
    company: str | None = Field(
        None, description="Name of the Tryton company to write into; None = the user's current company."
    )
    journal_code: str = Field(
        "MISC",
        min_length=1,
        description="Code of the account journal vouchers are posted in (MISC, EXP ...).",
    )
    analytic_root: str = Field(
        "CC",
        min_length=1,
        description="Code of the analytic root account cost centers without parent go under.",
    )
    warehouse: str = Field(
        "WH",
        min_length=1,
        description="Code of the Tryton warehouse (stock.location) purchase requests from requisitions are for.",
    )
    requisition_statuses: tuple[str, ...] = Field(
        ("SUBMITTED", "APPROVED"),
        min_length=1,
        description="Requisition statuses that create or update purchase requests (F3 publishes SUBMITTED); "
        "CANCELLED, REJECTED and DELETED cancel the open requests; any other status (DRAFT, CLOSED) is skipped.",
    )
    cost_accounts: dict[str, CostAccounts] = Field(
        default_factory=lambda: {"MATERIAL": CostAccounts(debit_account="5401.01", credit_account="1403")},
        description="Cost entries posted as account moves, by cost type (LABOR, MATERIAL ...; the default: the "
        "accounts of F6's own vouchers, f6_material_cost.yaml); entries of other "
        "types are skipped (labor is posted from F2's vouchers). Do not also consume the vouchers that the "
        "same flow makes of these entries (F6), or the cost is booked twice.",
    )
    cost_entry_analytic: str = Field(
        "{cost_center}",
        min_length=1,
        description="Code of the analytic account (bizbus_ref of a cost center) a cost entry's expense line is "
        "booked on; {cost_center}, {project} and {company} are replaced from the entry.",
        examples=["{cost_center}", "CC-{project}"],
    )
    timeout_seconds: float = Field(30, gt=0, le=600, description="Timeout of each JSON-RPC call, in seconds.")
    batch_size: int = Field(default=200, ge=1, le=10_000, description="records per batch at most")
    batch_timeout_seconds: float = Field(
        default=0.5, gt=0, le=60, description="wait at most this long to fill a batch"
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="backoff for retryable errors (unreachable Tryton, 5xx, a cost center not there yet)",
    )

    @field_validator("cost_entry_analytic")
    @classmethod
    def _check_pattern(cls, v: str) -> str:
        try:
            v.format(cost_center="x", project="x", company="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"cost_entry_analytic may use {{cost_center}}, {{project}}, {{company}} only: {exc}") from None
        return v

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        rpc_endpoint(v)  # ValueError with the reason
        return v
