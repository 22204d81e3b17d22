"""The registry's rules (register, look up, delete, compatibility, config), independent of HTTP.

Every method returns plain JSON-ready data or raises :class:`~bizbus.schemas.registry.errors.ApiError`
with Confluent's error code. Avro parsing and compatibility come from :mod:`bizbus.schemas.compat`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from bizbus.schemas.compat import COMPATIBILITY_LEVELS, InvalidSchema, check_compatibility, parse_schema
from bizbus.schemas.registry import errors
from bizbus.schemas.registry.references import inline_references
from bizbus.schemas.registry.store import RegistryStore, StoredSchema, SubjectVersion

SCHEMA_TYPES = ["AVRO"]
_MAX_VERSION = 2**31 - 1
LATEST = -1
_VERSION_REF = re.compile(r"^(reader new vs writer version |reader version )(\d+)")


@dataclass(frozen=True)
class Candidate:
    """A schema from a request body, validated: original text, resolved text, parsed form, identity."""

    text: str
    resolved: str
    references: list[dict[str, Any]]
    parsed: Any
    identity: str


def parse_version(raw: str) -> int:
    """``latest``/``-1`` -> :data:`LATEST`, ``1..2^31-1`` -> int, anything else -> 42202."""
    if raw == "latest":
        return LATEST
    try:
        version = int(raw)
    except ValueError:
        raise errors.invalid_version(raw) from None
    if version == LATEST or 1 <= version <= _MAX_VERSION:
        return version
    raise errors.invalid_version(raw)


def _subject_version_numbers(reason: str, numbers: list[int]) -> str:
    """compat numbers the previous schemas 1..n by position; name the subject version instead."""

    def renumber(match: re.Match[str]) -> str:
        position = int(match[2])
        return match[1] + str(numbers[position - 1]) if 1 <= position <= len(numbers) else match[0]

    return _VERSION_REF.sub(renumber, reason, count=1)


def normalize_level(level: object) -> str:
    """Upper-cased compatibility level, or 42203 when it is not one."""
    if isinstance(level, str) and level.upper() in COMPATIBILITY_LEVELS:
        return level.upper()
    raise errors.invalid_compatibility_level(level)


def schema_body(stored: StoredSchema) -> dict[str, Any]:
    """The schema fields of a response: schema, schemaType, references, id, guid."""
    return {
        "id": stored.id,
        "guid": stored.guid,
        "schema": stored.text,
        "schemaType": stored.schema_type,
        "references": stored.references,
    }


class Registry:
    """Schema registry operations over a :class:`RegistryStore`."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    # -- reading -------------------------------------------------------------------------------------

    def schema(self, schema_id: int) -> StoredSchema:
        """A schema by id; 40403 unless some subject version (live or soft-deleted) uses it."""
        stored = self.store.schema_by_id(schema_id)
        if stored is None or not self.store.versions_of_schema(schema_id):
            raise errors.schema_not_found(f"Schema {schema_id} not found")
        return stored

    def schema_by_guid(self, guid: str) -> StoredSchema:
        """A schema by guid; 40403 unless some subject version uses it."""
        stored = self.store.schema_by_guid(guid)
        if stored is None or not self.store.versions_of_schema(stored.id):
            raise errors.schema_not_found(f"Schema {guid} not found")
        return stored

    def schema_versions(self, schema_id: int, deleted: bool) -> list[SubjectVersion]:
        """Subject versions using schema ``schema_id``."""
        self.schema(schema_id)
        return [v for v in self.store.versions_of_schema(schema_id) if deleted or not v.deleted]

    def subjects(self, *, deleted: bool, deleted_only: bool, prefix: str) -> list[str]:
        """Subject names; soft-deleted subjects only with ``deleted`` (or only them with ``deleted_only``)."""
        names = []
        for subject, live in self.store.subjects().items():
            if not subject.startswith(prefix):
                continue
            if (deleted_only and not live) or (not deleted_only and (live or deleted)):
                names.append(subject)
        return names

    def versions(self, subject: str, *, deleted: bool = False, deleted_only: bool = False) -> list[int]:
        """Version numbers of ``subject``; 40401 when none is visible."""
        every = self.store.versions(subject)
        if deleted_only:
            chosen = [v.version for v in every if v.deleted]
        else:
            chosen = [v.version for v in every if deleted or not v.deleted]
        if not chosen and not (deleted_only and every):
            raise errors.subject_not_found(subject)
        return chosen

    def version(self, subject: str, version: int, *, deleted: bool = False) -> SubjectVersion:
        """One version (``LATEST`` allowed); 40401 for an unknown subject, 40402 for an unknown version."""
        visible = [v for v in self.store.versions(subject) if deleted or not v.deleted]
        if not visible:
            raise errors.subject_not_found(subject)
        if version == LATEST:
            return visible[-1]
        for candidate in visible:
            if candidate.version == version:
                return candidate
        raise errors.version_not_found(subject, version)

    def version_body(self, subject: str, version: int, *, deleted: bool = False) -> dict[str, Any]:
        """The response of GET /subjects/{s}/versions/{v}."""
        found = self.version(subject, version, deleted=deleted)
        stored = self.store.schema_by_id(found.schema_id)
        assert stored is not None
        return {"subject": subject, "version": found.version, **schema_body(stored)}

    def referenced_by(self, subject: str, version: int) -> list[int]:
        """Ids of live schemas that reference ``subject`` ``version``."""
        found = self.version(subject, version)
        return self.store.referenced_by(subject, found.version, include_deleted=False)

    # -- schemas from requests -----------------------------------------------------------------------

    def candidate(self, body: Any) -> Candidate:
        """Validate a request body {schema, schemaType?, references?}; 42201 when it is not usable."""
        if not isinstance(body, dict):
            raise errors.invalid_schema("the request body must be a JSON object with a 'schema' field")
        schema_type = body.get("schemaType") or "AVRO"
        if schema_type not in SCHEMA_TYPES:
            raise errors.invalid_schema(
                f"schemaType {schema_type!r} is not supported: the embedded registry supports AVRO only"
            )
        for unsupported in ("metadata", "ruleSet"):
            if body.get(unsupported):
                raise errors.invalid_schema(
                    f"'{unsupported}' (data contracts) is not supported by the embedded registry"
                )
        text = body.get("schema")
        if not isinstance(text, str) or not text.strip():
            raise errors.invalid_schema("the 'schema' field is missing or empty")
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise errors.invalid_schema(f"the schema is not valid JSON: {exc}") from None
        references = self._references(body.get("references"))
        resolved = text
        if references:
            resolved = inline_references(raw, [(r["name"], r["resolved"]) for r in references])
            references = [{k: r[k] for k in ("name", "subject", "version")} for r in references]
        try:
            parsed = parse_schema(resolved)
        except InvalidSchema as exc:
            raise errors.invalid_schema(str(exc)) from None
        normal = json.dumps(parsed, sort_keys=True, separators=(",", ":"), default=str)
        key = json.dumps([schema_type, normal, references], sort_keys=True)
        return Candidate(text, resolved, references, parsed, hashlib.sha256(key.encode()).hexdigest())

    def _references(self, refs: Any) -> list[dict[str, Any]]:
        if refs is None:
            return []
        if not isinstance(refs, list):
            raise errors.invalid_schema("'references' must be a list")
        out = []
        for ref in refs:
            if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
                raise errors.invalid_schema(f"invalid reference {ref!r}: needs name, subject and version")
            subject, version = ref.get("subject"), ref.get("version")
            if not isinstance(subject, str) or not isinstance(version, int):
                raise errors.invalid_schema(f"invalid reference {ref!r}: needs name, subject and version")
            try:
                found = self.version(subject, version)
            except errors.ApiError:
                raise errors.invalid_schema(
                    f"reference {ref['name']!r} points at subject '{subject}' version {version}, "
                    "which is not registered"
                ) from None
            stored = self.store.schema_by_id(found.schema_id)
            assert stored is not None
            out.append(
                {
                    "name": ref["name"],
                    "subject": subject,
                    "version": found.version,
                    "resolved": stored.resolved,
                }
            )
        return out

    def _incompatibilities(self, subject: str, new: Candidate, against: list[SubjectVersion]) -> list[str]:
        level = self.effective_compatibility(subject)
        if level == "NONE" or not against:
            return []
        previous = []
        for v in against:
            stored = self.store.schema_by_id(v.schema_id)
            assert stored is not None
            previous.append(stored.resolved)
        reasons = check_compatibility(new.resolved, previous, level)
        return [_subject_version_numbers(r, [v.version for v in against]) for r in reasons]

    # -- writing -------------------------------------------------------------------------------------

    def register(self, subject: str, body: Any) -> dict[str, Any]:
        """POST /subjects/{s}/versions: the existing registration, or a new version if compatible."""
        if not subject:
            raise errors.invalid_schema("the subject name must not be empty")
        new = self.candidate(body)
        live = [v for v in self.store.versions(subject) if not v.deleted]
        existing = self.store.schema_by_identity(new.identity)
        if existing is not None:
            for v in reversed(live):
                if v.schema_id == existing.id:
                    return {"subject": subject, "version": v.version, **schema_body(existing)}
        reasons = self._incompatibilities(subject, new, live)
        if reasons:
            raise errors.incompatible(subject, reasons)
        stored, version = self.store.add_version(
            subject,
            schema_type="AVRO",
            text=new.text,
            resolved=new.resolved,
            references=new.references,
            identity=new.identity,
        )
        return {"subject": subject, "version": version, **schema_body(stored)}

    def lookup(self, subject: str, body: Any, *, deleted: bool) -> dict[str, Any]:
        """POST /subjects/{s}: where ``subject`` registered this schema; 40401 or 40403 otherwise."""
        visible = [v for v in self.store.versions(subject) if deleted or not v.deleted]
        if not visible:
            raise errors.subject_not_found(subject)
        new = self.candidate(body)
        stored = self.store.schema_by_identity(new.identity)
        if stored is not None:
            for v in reversed(visible):
                if v.schema_id == stored.id:
                    return {"subject": subject, "version": v.version, **schema_body(stored)}
        raise errors.schema_not_found("Schema not found")

    def test_compatibility(
        self, subject: str, version: int | None, body: Any, *, verbose: bool
    ) -> dict[str, Any]:
        """POST /compatibility/...: against one version, or (``version`` None/latest) per the level."""
        new = self.candidate(body)
        live = [v for v in self.store.versions(subject) if not v.deleted]
        if version is None:
            against = live
        elif version == LATEST:
            if not live:
                raise errors.subject_not_found(subject)
            against = live
        else:
            against = [self.version(subject, version)]
        reasons = self._incompatibilities(subject, new, against)
        result: dict[str, Any] = {"is_compatible": not reasons}
        if verbose:
            result["messages"] = reasons
        return result

    def _guard_references(self, subject: str, versions: list[int], *, permanent: bool) -> None:
        for version in versions:
            if self.store.referenced_by(subject, version, include_deleted=permanent):
                raise errors.reference_exists(subject, version)

    def delete_subject(self, subject: str, *, permanent: bool) -> list[int]:
        """DELETE /subjects/{s}: soft delete, or (after one) permanent delete; returns the versions."""
        every = self.store.versions(subject)
        if not every:
            raise errors.subject_not_found(subject)
        live = [v.version for v in every if not v.deleted]
        if permanent:
            if live:
                raise errors.subject_not_soft_deleted(subject)
            numbers = [v.version for v in every]
            self._guard_references(subject, numbers, permanent=True)
            self.store.hard_delete(subject, numbers)
            self.store.delete_compatibility(subject)
            return numbers
        if not live:
            raise errors.subject_soft_deleted(subject)
        self._guard_references(subject, live, permanent=False)
        self.store.soft_delete(subject, live)
        return live

    def delete_version(self, subject: str, version: int, *, permanent: bool) -> int:
        """DELETE /subjects/{s}/versions/{v}: soft delete, or (after one) permanent delete."""
        every = self.store.versions(subject)
        if not every:
            raise errors.subject_not_found(subject)
        if version == LATEST:
            found = self.version(subject, LATEST, deleted=permanent)
        else:
            match = [v for v in every if v.version == version]
            if not match:
                raise errors.version_not_found(subject, version)
            found = match[0]
            if found.deleted and not permanent:
                raise errors.version_soft_deleted(subject, found.version)
        if permanent:
            if not found.deleted:
                raise errors.version_not_soft_deleted(subject, found.version)
            self._guard_references(subject, [found.version], permanent=True)
            self.store.hard_delete(subject, [found.version])
        else:
            self._guard_references(subject, [found.version], permanent=False)
            self.store.soft_delete(subject, [found.version])
        return found.version

    # -- config --------------------------------------------------------------------------------------

    def effective_compatibility(self, subject: str | None) -> str:
        """The subject's level when set, else the global one."""
        if subject:
            level = self.store.compatibility(subject)
            if level:
                return level
        return self.store.global_compatibility()

    def get_config(self, subject: str | None, *, default_to_global: bool) -> dict[str, Any]:
        """GET /config[/{s}]; 40408 for a subject without its own level unless ``default_to_global``."""
        if subject is None:
            return {"compatibilityLevel": self.store.global_compatibility()}
        level = self.store.compatibility(subject)
        if level is None:
            if not default_to_global:
                raise errors.compatibility_not_configured(subject)
            level = self.store.global_compatibility()
        return {"compatibilityLevel": level}

    def set_config(self, subject: str | None, body: Any) -> dict[str, Any]:
        """PUT /config[/{s}] with {"compatibility": LEVEL} (or ``compatibilityLevel``)."""
        if not isinstance(body, dict):
            raise errors.invalid_compatibility_level(body)
        unsupported = sorted(
            k for k, v in body.items() if v is not None and k not in ("compatibility", "compatibilityLevel")
        )
        if unsupported:
            raise errors.ApiError(
                422,
                errors.INVALID_COMPATIBILITY_LEVEL,
                f"config fields {unsupported} are not supported by the embedded registry "
                "(only 'compatibility')",
            )
        level = normalize_level(body.get("compatibility") or body.get("compatibilityLevel"))
        self.store.set_compatibility(subject, level)
        return {"compatibility": level}

    def delete_config(self, subject: str | None) -> dict[str, Any]:
        """DELETE /config[/{s}]: drop the level, answer the one that was in force."""
        if subject is None:
            old = self.store.global_compatibility()
        else:
            level = self.store.compatibility(subject)
            if level is None:
                raise errors.compatibility_not_configured(subject)
            old = level
        self.store.delete_compatibility(subject)
        return {"compatibilityLevel": old}
