"""Model extensions of the ``bizbus_ref`` module (loaded by trytond only)."""

from trytond.exceptions import UserError
from trytond.model import Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.rpc import RPC
from trytond.transaction import Transaction, without_check_access

REF_HELP = (
    "Effect reference of the bizbus event that created this record (unique; used for exactly-once writes)."
)
VERSION_HELP = "Source version of the last bizbus change applied to this record."


class RefMixin:
    """A unique, writable ``bizbus_ref``; a copy never carries it (it would violate the constraint)."""

    __slots__ = ()
    bizbus_ref = fields.Char("bizbus Reference", readonly=False, help=REF_HELP)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ("bizbus_ref_unique", Unique(t, t.bizbus_ref), "bizbus_ref.msg_bizbus_ref_unique"),
        ]

    @classmethod
    def copy(cls, records, default=None):
        default = dict(default or {})
        for name in cls._fields:  # a copy is a new record: nothing bizbus applied to the original
            if name.startswith("bizbus_"):
                default.setdefault(name, False if name == "bizbus_cancelled" else None)
        return super().copy(records, default=default)


class AnalyticAccount(RefMixin, metaclass=PoolMeta):
    __name__ = "analytic_account.account"
    bizbus_version = fields.Integer("bizbus Version", help=VERSION_HELP)


class Move(RefMixin, metaclass=PoolMeta):
    __name__ = "account.move"

    @classmethod
    def create(cls, vlist):
        """A bizbus move without a period gets the open period of its date, chosen by Tryton itself.

        ``Period.find`` raises Tryton's own error when the period of that date is closed or missing.
        """
        Period = Pool().get("account.period")
        context = Transaction().context
        vlist = [dict(v) for v in vlist]
        for values in vlist:
            if values.get("bizbus_ref") and not values.get("period") and values.get("date"):
                company = values.get("company") or context.get("company")
                values["period"] = Period.find(company, date=values["date"]).id
        return super().create(vlist)


class Purchase(RefMixin, metaclass=PoolMeta):
    __name__ = "purchase.purchase"
    bizbus_version = fields.Integer("bizbus Version", help=VERSION_HELP)


class PurchaseRequest(RefMixin, metaclass=PoolMeta):
    """Purchase requests of bizbus (one per requisition line).

    Tryton refuses ``create`` of ``purchase.request`` from outside the server (``check_modification`` with
    ``external``: requests are meant to come from Tryton's own stock supply). ``bizbus_create`` is the RPC
    door for bizbus: a caller allowed to *write* requests (group "Purchase Request") may create requests that
    carry a ``bizbus_ref``; everything else about them stays Tryton's. ``bizbus_cancel`` marks open requests
    as cancelled (Tryton has no cancel for a request that is not purchased yet), keeping the record -- and
    its ``bizbus_ref`` -- so a re-delivery of the requisition never creates it again.
    """

    __name__ = "purchase.request"
    bizbus_version = fields.Integer("bizbus Version", help=VERSION_HELP)
    bizbus_cancelled = fields.Boolean(
        "Cancelled by bizbus", readonly=True, help="The requisition behind this request was cancelled."
    )

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__rpc__.update({
            "bizbus_create": RPC(readonly=False, result=lambda ids: [int(i) for i in ids]),
            "bizbus_cancel": RPC(readonly=False, instantiate=0),
        })

    @classmethod
    def default_bizbus_cancelled(cls):
        return False

    def get_state(self):
        state = super().get_state()
        if state == "draft" and self.bizbus_cancelled:
            return "cancelled"
        return state

    @classmethod
    def bizbus_create(cls, vlist):
        """Create requests for bizbus (each must carry a ``bizbus_ref``); answers their ids."""
        Pool().get("ir.model.access").check(cls.__name__, "write")
        for values in vlist:
            if not values.get("bizbus_ref"):
                raise UserError("bizbus_create makes requests that carry a bizbus_ref only.")
            if values.get("purchase_line") or values.get("state") not in (None, "draft"):
                raise UserError("bizbus_create makes open (draft) requests only.")
        with without_check_access():
            return [r.id for r in cls.create(vlist)]

    @classmethod
    def bizbus_cancel(cls, requests, version=None):
        """Cancel open bizbus requests and record the requisition ``version`` on them, in one transaction; a
        request already purchased is refused with Tryton's UserError."""
        Pool().get("ir.model.access").check(cls.__name__, "write")
        for request in requests:
            if request.purchase_line:
                raise UserError(
                    f"Purchase request {request.bizbus_ref or request.id} is already on a purchase "
                    f"({request.purchase_line.purchase.rec_name}); cancel that purchase instead."
                )
        with without_check_access():
            values = {"bizbus_cancelled": True, "state": "cancelled"}
            if version is not None:
                values["bizbus_version"] = int(version)
            cls.write(list(requests), values)


class Sale(RefMixin, metaclass=PoolMeta):
    """Sales orders decided by bizbus (F5): ``bizbus_ref`` = the order number (set on the first decision, so one
    sale answers to one order), the decision applied last, its order version and reason."""

    __name__ = "sale.sale"
    bizbus_version = fields.Integer("bizbus Order Version", help="Order version of the last bizbus decision applied.")
    bizbus_decision = fields.Char("bizbus Decision", help="ACCEPTED, REFUSED or RELEASED (the last one applied).")
    bizbus_reason = fields.Text("bizbus Reason", help="Why bizbus refused the order (e.g. which material lacks stock).")


class Work(RefMixin, metaclass=PoolMeta):
    __name__ = "project.work"
