"""Model extensions of the ``bizbus_ref`` module (loaded by trytond only)."""

from trytond.model import Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction

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
        default.setdefault("bizbus_ref", None)
        if "bizbus_version" in cls._fields:
            default.setdefault("bizbus_version", None)
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


class Work(RefMixin, metaclass=PoolMeta):
    __name__ = "project.work"
