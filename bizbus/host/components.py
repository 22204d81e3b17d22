"""Component types a pipeline can name, and the small interface every component implements.

Types are listed explicitly in ``COMPONENT_TYPES`` (no registration by import side effects); the
implementing class is imported only when a pipeline uses it. A component follows the
``__init__`` stores settings / ``setup()`` opens connections / ``run(stop)`` loops / ``close()`` rule.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from threading import Event
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from bizbus.catalogue import Catalogue
    from bizbus.serde import AvroSerde
    from bizbus.settings import Settings

Kind = Literal["source", "sink", "flow", "monitor"]


@dataclass(frozen=True)
class RuntimeContext:
    """What the runtime hands every component."""

    settings: Settings
    catalogue: Catalogue
    serde: AvroSerde


class Component(ABC):
    """A connector or flow instance: typed config in, a loop that runs until ``stop`` is set."""

    Config: ClassVar[type[BaseModel]]

    def __init__(self, name: str, config: BaseModel, ctx: RuntimeContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx

    def setup(self) -> None:
        """Open connections; raise a ``BizbusError`` with a clear message when that fails."""

    @abstractmethod
    def run(self, stop: Event) -> None:
        """Do the work until ``stop`` is set; return promptly after that."""

    def close(self) -> None:
        """Release what ``setup`` opened (flush producers first)."""

    def probe(self) -> str | None:
        """Is the system this component reads or writes reachable now? None: yes; else what is wrong
        (shown by ``/readyz`` as ``target:<name>``; see :mod:`bizbus.connectors.runtime.probes`)."""
        return None


def _nothing(_config: BaseModel) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class ComponentSpec:
    """Everything the host needs to know about a component type, declared in the component's own folder
    (``<folder>/spec.py: SPEC``): its name, kind and one-line summary, where its class lives, and, given a
    validated config, the catalogue topics it reads and writes and the environment variables that must hold
    its secrets (``bizbus check`` cross-checks both). The class is imported only when a pipeline uses it."""

    name: str
    kind: Kind
    target: str  # "module:Class"
    summary: str
    reads: Callable[[BaseModel], tuple[str, ...]] = _nothing
    writes: Callable[[BaseModel], tuple[str, ...]] = _nothing
    secrets: Callable[[BaseModel], tuple[str, ...]] = _nothing
    docs: str = ""  # the page that explains how to connect the real system, relative to the repository root
    guarantee: str = ""  # the delivery promise in one line (README table), e.g. "exactly once (ledger)"
    example: str = ""  # a file holding a pipeline that uses the type: a pipeline YAML, or a page with a yaml block

    def load(self) -> type[Component]:
        module, _, attr = self.target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, Component)):
            raise TypeError(f"{self.target} is not a Component")
        return cls

    def config_model(self) -> type[BaseModel]:
        return self.load().Config


ComponentType = ComponentSpec  # the name the pipeline and the docs use

ENTRY_POINT_GROUP = "bizbus.components"
"""Third-party packages add component types through this entry-point group; each entry point names a
``ComponentSpec`` (``mypkg.spec:SPEC``)."""


def load_spec(location: str) -> ComponentSpec:
    module, _, attr = location.partition(":")
    spec = getattr(importlib.import_module(module), attr or "SPEC")
    if not isinstance(spec, ComponentSpec):
        raise TypeError(f"{location} is not a ComponentSpec")
    return spec


class _Registry(Mapping[str, ComponentSpec]):
    """The component types: the built-in ones (``BUILTIN``: where each spec lives) and those of installed
    plugins (entry-point group ``bizbus.components``), read on first use."""

    def __init__(self, builtin: tuple[str | ComponentSpec, ...]) -> None:
        self._builtin = builtin
        self._specs: dict[str, ComponentSpec] | None = None

    def _load(self) -> dict[str, ComponentSpec]:
        if self._specs is None:
            specs: dict[str, ComponentSpec] = {}
            for item in self._builtin:
                spec = load_spec(item) if isinstance(item, str) else item
                specs[spec.name] = spec
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                spec = ep.load()
                if not isinstance(spec, ComponentSpec):
                    raise TypeError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) is not a ComponentSpec")
                if spec.name in specs:
                    raise TypeError(f"entry point {ep.value} declares component type {spec.name!r}, "
                                    "which exists already")  # fmt: skip
                specs[spec.name] = spec
            self._specs = specs
        return self._specs

    def __getitem__(self, name: str) -> ComponentSpec:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def reload(self) -> None:
        """Forget what was read (a test that installs a plugin)."""
        self._specs = None


BUILTIN: tuple[str | ComponentSpec, ...] = (
    "bizbus.connectors.sources.sample.spec:SPEC",
    "bizbus.connectors.monitors.pg_slots.spec:SPEC",
    "bizbus.connectors.sources.pg_outbox.spec:SPEC",
    "bizbus.connectors.sources.jira.spec:SPEC",
    "bizbus.connectors.sources.redmine.spec:SPEC",
    "bizbus.connectors.sources.dingtalk.spec:SPEC",
    "bizbus.connectors.sources.feishu.spec:SPEC",
    "bizbus.connectors.sources.postgres_cdc.spec:SPEC",
    "bizbus.connectors.sources.mariadb_cdc.spec:SPEC",
    "bizbus.connectors.sinks.postgres.spec:SPEC",
    "bizbus.connectors.sinks.http_api.spec:SPEC",
    "bizbus.connectors.sinks.tryton.spec:SPEC",
    "bizbus.connectors.sinks.reporting.spec:SPEC",
    "bizbus.streams.cost_centers.spec:SPEC",
    "bizbus.streams.labor_cost.spec:SPEC",
    "bizbus.streams.approvals.spec:SPEC",
    "bizbus.streams.material_cost.spec:SPEC",
    "bizbus.streams.budget_control.spec:SPEC",
    "bizbus.streams.material_need.spec:SPEC",
    "bizbus.streams.stock_atp.spec:SPEC",
)

COMPONENT_TYPES = _Registry(BUILTIN)
