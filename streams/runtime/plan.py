"""Which flows one worker runs: the pipeline's enabled flows (or ``--only`` ones), found through their
component specs, and the flows kept for their tables only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bizbus.streams.runtime.config import FlowConfig
from bizbus.streams.runtime.spec import MASTER_DATA, FlowSpec

from bizbus.errors import ConfigError

if TYPE_CHECKING:
    from bizbus.host.pipeline import Pipeline


@dataclass(frozen=True)
class PlannedFlow:
    """A flow in a worker: its component name (the metrics label; ``master-data`` when only kept), its spec,
    its config, and whether it runs (``emit``) or is only kept for the tables another flow reads."""

    name: str
    spec: FlowSpec
    config: FlowConfig
    emit: bool = True


@dataclass(frozen=True)
class FlowPlan:
    """The flows one worker runs (component name, spec, config), at most one per flow type."""

    pipeline: str
    flows: tuple[PlannedFlow, ...] = ()

    @property
    def names(self) -> list[str]:
        return sorted(f.name for f in self.flows)

    @property
    def app_id(self) -> str:
        """The Faust app id: also the consumer group and the prefix of every changelog topic."""
        return f"bizbus-flows-{self.pipeline}-{'-'.join(self.names)}"

    def of_type(self, type_name: str) -> PlannedFlow | None:
        """The planned flow of type ``type_name`` (None: not run by this worker)."""
        return next((f for f in self.flows if f.spec.name == type_name), None)

    def with_kept(self) -> list[PlannedFlow]:
        """The flows this worker declares, each after the flows it needs: the planned ones, and the flows
        they need that are not planned, kept with their default config under ``master-data`` and sending
        nothing (a worker of F2 alone still keeps F1's ``projects`` table)."""
        out: list[PlannedFlow] = []
        seen: set[str] = set()

        def add(flow: PlannedFlow) -> None:
            if flow.spec.name in seen:
                return
            seen.add(flow.spec.name)
            for need in flow.spec.needs:
                add(self.of_type(need.name) or PlannedFlow(MASTER_DATA, need, need.config(), emit=False))
            out.append(flow)

        for flow in self.flows:
            add(flow)
        return out

    @property
    def input_topics(self) -> set[str]:
        """Every topic an agent of this worker reads."""
        return {t for f in self.with_kept() for t in f.spec.sources}


def plan_flows(pipeline: Pipeline, only: tuple[str, ...] = ()) -> FlowPlan:
    """The flows to run: the pipeline's enabled flows, or the ``only`` ones (enabled or not)."""
    flows = [c for c in pipeline.components if c.type.kind == "flow"]
    known = {c.name for c in flows}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ConfigError(f"no flow named {', '.join(unknown)} in {pipeline.path}; flows there: "
                          f"{', '.join(sorted(known)) or 'none'}")  # fmt: skip
    chosen = [c for c in flows if (c.name in only if only else c.enabled)]
    if not chosen:
        raise ConfigError(f"nothing to run: no enabled flow in {pipeline.path} (add one under `flows:`; "
                          "see `bizbus components`)")  # fmt: skip
    planned: dict[str, PlannedFlow] = {}
    for c in chosen:
        spec = getattr(c.type.load(), "flow", None)
        if not isinstance(spec, FlowSpec):
            raise ConfigError(f"flow {c.name}: type {c.type.name} is not a Faust flow")
        if spec.name in planned:
            raise ConfigError(f"flows {planned[spec.name].name} and {c.name} are both of type {c.type.name}; one "
                              "worker runs at most one flow of each type (run them with --only in separate workers)")  # fmt: skip
        planned[spec.name] = PlannedFlow(c.name, spec, c.config)
    return FlowPlan(pipeline.name, tuple(planned.values()))
