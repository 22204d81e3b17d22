"""What a flow declares, so that the flows runtime can run it without importing it by name.

A flow's folder (``streams/<flow>/spec.py``) holds a :class:`FlowSpec` (the tables it owns, the agents it
declares, the topics it writes, its config model, the flows whose tables it reads) and the
:class:`~bizbus.host.components.ComponentSpec` that puts it in the component registry
(:func:`flow_component_spec`). The worker finds a pipeline's flows through that registry
(``ComponentSpec.load()`` answers a :class:`FlowEntry` class that carries the flow spec) and declares their
tables and agents (:mod:`bizbus.streams.runtime.register`).

The names declared here are live state: a table's name is part of its changelog topic
(``<app id>-<table>-changelog``), an agent's source topic names the agent (``bizbus-<short>``) and its
progress table (``progress-<short>``). Renaming one orphans what a running deployment has stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from threading import Event
from typing import TYPE_CHECKING, Any, ClassVar

from bizbus.streams.runtime.config import FlowConfig
from bizbus.streams.runtime.results import Result, Verdict

from bizbus.host.components import Component, ComponentSpec

if TYPE_CHECKING:
    from bizbus.streams.runtime.tables import StateTable

MASTER_DATA = "master-data"  # flow label of agents that only keep master-data tables

Decide = Callable[[dict[str, Any]], Verdict]
Store = Callable[[dict[str, Any], dict[str, Any]], None]


@dataclass(frozen=True)
class TableSpec:
    """A state table a flow owns. ``source``: the topic whose partitions it has (a partitioned table is
    co-partitioned with it); ``global_``: a GlobalTable, read by agents of other topics; ``load``: the
    typed model :meth:`StateTable.get` answers (None: the state dict); ``by_key``: its keys are written by
    events of several partitions or topics, so each key's changelog partition is fixed by the key
    (:class:`StateTable` ``key_partitions``): such a table is exact in one worker only; flows that must scale
    re-key their inputs onto a step topic instead (F5, F6, F7: one writer per key)."""

    name: str
    source: str
    global_: bool = False
    load: Callable[[dict[str, Any]], Any] | None = None
    by_key: bool = False


@dataclass(frozen=True)
class Handler:
    """An agent's work per record: ``decide`` (the pure function over the tables), ``store`` (write the
    new state) and the names of the tables ``store`` writes (its batches flush exactly those)."""

    decide: Decide
    store: Store
    writes: tuple[str, ...]


@dataclass(frozen=True)
class FlowContext:
    """What a flow's handlers are built from, once per worker: the component ``name`` (the label of its
    metrics and dead letters; ``master-data`` when the flow is only kept for another one), its config and
    loaded mapping, ``emit`` (False: kept for the tables only, nothing is sent), every state table of the
    worker by name and the decoder of Avro bytes."""

    name: str
    config: FlowConfig
    emit: bool
    tables: Mapping[str, StateTable[Any]]
    decode: Callable[[bytes], Any]

    @property
    def mapping(self) -> Any:
        return self.config.loaded_mapping()

    def table(self, name: str) -> StateTable[Any]:
        return self.tables[name]


@dataclass(frozen=True)
class AgentDecl:
    """One agent: the topic it reads and how to build its :class:`Handler`. ``master_data``: it only keeps
    a master-data table, counted under the ``master-data`` label whatever the flow's name."""

    source: str
    handler: Callable[[FlowContext], Handler]
    master_data: bool = False
    name: str | None = None  # the short name when the topic's own would clash (purchase.order / sales.order)

    @property
    def short(self) -> str:
        """``bizbus.pm.timesheet.v1`` → ``timesheet`` (or ``name``): the agent is ``bizbus-<short>``, its
        progress table ``progress-<short>``."""
        return self.name or self.source.split(".")[2]


@dataclass(frozen=True)
class FlowSpec:
    """A flow type: its name (the pipeline's ``type``), config model, the tables it owns, its agents, the
    topics it writes and the flows whose tables it reads (``needs``: kept, without outputs, in a worker
    that does not run them)."""

    name: str
    config: type[FlowConfig]
    tables: tuple[TableSpec, ...]
    agents: tuple[AgentDecl, ...]
    outputs: tuple[str, ...] = ()
    needs: tuple[FlowSpec, ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        """The topics its agents read."""
        return tuple(a.source for a in self.agents)

    @property
    def reads(self) -> tuple[str, ...]:
        """The topics a worker running it reads: its agents' and those of the flows it needs."""
        needed = tuple(t for n in self.needs for t in n.reads if t not in self.sources)
        return tuple(dict.fromkeys(needed + self.sources))

    @cached_property
    def component(self) -> type[FlowEntry]:
        """The pipeline entry class of this flow (what its ComponentSpec's target names)."""
        return type(f"FlowEntry[{self.name}]", (FlowEntry,), {"Config": self.config, "flow": self, "__module__": __name__})


class FlowEntry(Component):
    """A flow's entry in the pipeline: its typed config (validated by ``bizbus check`` and at start) and its
    :class:`FlowSpec`. Flows do not run as component threads: ``bizbus flows run`` runs them in a Faust
    worker process (``bizbus up`` starts one), and ``start_components`` skips them."""

    Config: ClassVar[type[FlowConfig]] = FlowConfig
    flow: ClassVar[FlowSpec]

    def run(self, stop: Event) -> None:
        raise RuntimeError(f"flow {self.name} runs in `bizbus flows run` (a Faust worker), not as a component")


FLOW_GUARANTEE = ("at least once (Faust at_least_once), outputs keep ids derived from their inputs: "
                  "the sinks apply each effect once")


def flow_component_spec(flow: FlowSpec, module: str, summary: str, docs: str = "", example: str = "",
                        guarantee: str = FLOW_GUARANTEE) -> ComponentSpec:  # fmt: skip
    """The ComponentSpec of ``flow``; ``module`` must hold ``Flow = <flow>.component`` (the target)."""
    return ComponentSpec(
        flow.name, "flow", f"{module}:Flow", summary,
        reads=lambda _config: flow.reads, writes=lambda _config: flow.outputs, docs=docs,
        guarantee=guarantee, example=example,
    )  # fmt: skip


def stored_or_stale(new_state: dict[str, Any] | None) -> Result:
    """Verdict of a master-data merge: stored (nothing to send) or older than what is known."""
    return Result("skipped_stale") if new_state is None else Result("ignored", (), new_state)
