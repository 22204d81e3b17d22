"""``bizbus schemas check``: would the working tree's schemas break a reader?

Against a registry: each catalogue topic's value schema is tested with the registry's own
compatibility endpoint (``POST /compatibility/subjects/<topic>-value/versions?verbose=true``), under the
level configured for the subject there.

Against git (no registry running, e.g. in CI): every distinct earlier committed version of the schema
folder is loaded, and each topic's current schema is checked locally against its history under the
catalogue's ``compatibility`` level (BACKWARD checks the newest earlier version, *_TRANSITIVE all).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from bizbus.schemas import catalog, compat

from bizbus.catalogue import Catalogue
from bizbus.errors import RegistryError, SchemaError


@dataclass
class Finding:
    """The verdict for one topic's value schema."""

    topic: str
    schema: str
    level: str
    compared_with: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def against_registry(cat: Catalogue, registry_conf: dict[str, Any]) -> list[Finding]:
    """Ask the registry whether each working-tree schema may be registered next."""
    url = registry_conf["url"].split(",")[0].rstrip("/")
    auth = None
    if "basic.auth.user.info" in registry_conf:
        user, _, pw = registry_conf["basic.auth.user.info"].partition(":")
        auth = (user, pw)
    out: list[Finding] = []
    with httpx.Client(base_url=url, auth=auth, timeout=10) as client:
        for t in cat.topics:
            body = {"schema": catalog.schema_text(t.value_schema), "schemaType": "AVRO"}
            subj = quote(t.subject, safe="")
            try:
                level_r = client.get(f"/config/{subj}", params={"defaultToGlobal": "true"})
                level = level_r.json().get("compatibilityLevel", "?") if level_r.status_code == 200 else "?"
                r = client.post(f"/compatibility/subjects/{subj}/versions", params={"verbose": "true"}, json=body)
            except httpx.HTTPError as exc:
                raise RegistryError(f"schema registry {url} unreachable: {exc}") from None
            finding = Finding(t.name, t.value_schema, level, f"registry subject {t.subject}")
            if r.status_code == 404 and r.json().get("error_code") == 40401:
                finding.compared_with = f"registry: {t.subject} not registered yet (new subject)"
            elif r.status_code == 200:
                data = r.json()
                if not data.get("is_compatible", False):
                    finding.problems = list(data.get("messages") or ["incompatible (registry gave no details)"])
            else:
                finding.problems = [f"registry answered HTTP {r.status_code}: {r.text[:300]}"]
            out.append(finding)
    return out


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _schemas_at(repo: Path, rev: str, rel_dir: str, workdir: Path) -> dict[str, Any]:
    """All named types of the schema folder at ``rev``, loaded and expanded, by full name."""
    target = workdir / rev
    target.mkdir()
    for name in _git(repo, "ls-tree", "--name-only", f"{rev}:{rel_dir}").split():
        if name.endswith(".avsc"):
            (target / name).write_text(_git(repo, "show", f"{rev}:{rel_dir}/{name}"), encoding="utf-8")
    return load_folder(target, skip_invalid=True)  # an old revision that did not parse is no baseline


def load_folder(folder: Path, skip_invalid: bool = False) -> dict[str, Any]:
    """Every named type in a folder of ``.avsc`` files, expanded, by full name."""
    out: dict[str, Any] = {}
    for path in sorted(folder.glob("*.avsc")):
        try:
            out[path.name.removesuffix(".avsc")] = catalog.load_file(path)
        except SchemaError:
            if not skip_invalid:
                raise
    return out


def against_git(cat: Catalogue, avro_dir: Path | None = None) -> list[Finding]:
    """Check the working tree against every distinct committed version of each topic's schema."""
    avro_dir = avro_dir or catalog.AVRO_DIR
    current_all = load_folder(avro_dir)
    try:
        repo = Path(_git(avro_dir, "rev-parse", "--show-toplevel").strip())
    except (subprocess.CalledProcessError, OSError):
        raise SchemaError(f"{avro_dir} is not inside a git work tree: nothing to compare with") from None
    rel_dir = str(avro_dir.resolve().relative_to(repo.resolve()))
    revs = list(reversed(_git(repo, "log", "--format=%H", "--", rel_dir).split()))  # oldest first
    history: dict[str, list[tuple[str, Any]]] = {t.value_schema: [] for t in cat.topics}
    with tempfile.TemporaryDirectory() as tmp:
        for rev in revs:
            at_rev = _schemas_at(repo, rev, rel_dir, Path(tmp))
            for name, versions in history.items():
                schema = at_rev.get(name)
                if schema is None:
                    continue
                canon = compat.canonical_form(schema)
                if not versions or compat.canonical_form(versions[-1][1]) != canon:
                    versions.append((rev[:10], schema))
    out: list[Finding] = []
    for t in cat.topics:
        current = current_all[t.value_schema]
        versions = history[t.value_schema]
        # the newest committed version may equal the working tree: that is not a change to check
        if versions and compat.canonical_form(versions[-1][1]) == compat.canonical_form(current):
            versions = versions[:-1]
        if not versions:
            out.append(Finding(t.name, t.value_schema, t.compatibility, "git: no earlier version"))
            continue
        problems = compat.check_compatibility(current, [s for _, s in versions], t.compatibility)
        shown = f"git: {len(versions)} earlier version(s), newest {versions[-1][0]}"
        out.append(Finding(t.name, t.value_schema, t.compatibility, shown, problems))
    return out


def render(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        mark = "ok  " if f.ok else "FAIL"
        lines.append(f"{mark} {f.topic:<38} {f.schema:<36} {f.level:<20} {f.compared_with}")
        lines += [f"       - {p}" for p in f.problems]
    bad = sum(1 for f in findings if not f.ok)
    lines.append(f"{len(findings)} schemas checked, {bad} incompatible")
    return "\n".join(lines)


def schema_json(full_name: str) -> str:
    """Pretty JSON of a canonical schema (for `bizbus schemas show`)."""
    return json.dumps(catalog.load(full_name), indent=2, ensure_ascii=False)
