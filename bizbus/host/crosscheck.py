"""``bizbus check``'s cross-checks of a pipeline against the catalogue and the environment (offline).

Each enabled component's spec says, given its config, which catalogue topics it reads and writes and which
environment variables hold its secrets (``ComponentSpec.reads`` / ``writes`` / ``secrets``). A topic missing
from the catalogue, or a secret variable that is not set (neither ``NAME`` nor ``NAME_FILE``), is a problem:
``bizbus check`` prints it as a warning, and fails with ``--strict``.
"""

from __future__ import annotations

from collections.abc import Mapping

from bizbus.catalogue import Catalogue
from bizbus.host.pipeline import Pipeline
from bizbus.secrets import offline_problem


def topic_problems(pipeline: Pipeline, catalogue: Catalogue) -> list[str]:
    known = set(catalogue.names())
    out = []
    for c in pipeline.enabled():
        for verb, topics in (("reads", c.type.reads(c.config)), ("writes", c.type.writes(c.config))):
            out += [f"{c.name} ({c.type.name}) {verb} topic {t!r}, which is not in the catalogue"
                    for t in topics if t not in known]  # fmt: skip
    return out


def secret_problems(pipeline: Pipeline, environ: Mapping[str, str] | None = None) -> list[str]:
    out = []
    for c in pipeline.enabled():
        for var in c.type.secrets(c.config):
            problem = offline_problem(var, environ)
            if problem is not None:
                sep = " " if problem.startswith("needs") else ": "
                out.append(f"{c.name} ({c.type.name}){sep}{problem}")
    return out


def cross_check(pipeline: Pipeline, catalogue: Catalogue, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every problem found, topics first; empty when the pipeline fits the catalogue and the environment."""
    return topic_problems(pipeline, catalogue) + secret_problems(pipeline, environ)
