"""Topic pages for the teams that read bizbus topics.

``describe(spec)`` renders one catalogue topic as text (``bizbus topics describe TOPIC``, works offline);
``render_page(catalogue)`` renders every topic as Markdown (``docs/topics.md``, written by ``bizbus docs``).
Both are built from the same parts: the catalogue entry (deploy/topics.yaml), the topic's Avro schema with
its field docs and nested records expanded (``meta.event_id``, ``lines[].debit``), the schema's sample
record as JSON, and how to consume the topic. So the text and the page say the same, and neither can drift
from the contract.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bizbus.catalogue import Catalogue, TopicSpec
from bizbus.lineage import HEADER_KEYS
from bizbus.serde import named_types
from bizbus.settings import PROJECT_ROOT

TOPICS_PAGE = PROJECT_ROOT / "docs" / "topics.md"
EXAMPLE_CONSUMER = "deploy/examples/other-team-consumer.py"
_WIDTH = 110

_COMPAT_MEANING = {
    "BACKWARD": "every new schema version can read records written with the previous one",
    "BACKWARD_TRANSITIVE": "every new schema version can read records written with any earlier one",
    "FORWARD": "records written with a new schema version can be read with the previous one",
    "FORWARD_TRANSITIVE": "records written with a new schema version can be read with any earlier one",
    "FULL": "new and previous schema versions can read each other's records",
    "FULL_TRANSITIVE": "all schema versions can read each other's records",
    "NONE": "not checked: any change may break readers",
}


@dataclass(frozen=True)
class FieldRow:
    """One field of a topic's value schema; nested fields have dotted paths (``meta.event_id``)."""

    path: str
    type: str
    doc: str


@dataclass(frozen=True)
class TopicPage:
    """Everything a page about one topic says, before it is rendered as text or Markdown."""

    spec: TopicSpec
    schema_doc: str
    properties: list[tuple[str, str]]
    fields: list[FieldRow]
    example: dict[str, Any]
    consume: list[tuple[str, str]]

    @property
    def example_json(self) -> str:
        return json.dumps(self.example, indent=2, ensure_ascii=False)


# ------------------------------------------------------------------------------------------ schema


def _resolve(t: Any, named: dict[str, Any]) -> Any:
    return named.get(t, t) if isinstance(t, str) else t


def type_name(t: Any, named: dict[str, Any]) -> str:
    """An Avro type as people read it: ``decimal(18,2)``, ``date``, ``null | string``, ``array<record X>``."""
    t = _resolve(t, named)
    if isinstance(t, str):
        return t
    if isinstance(t, list):
        return " | ".join(type_name(branch, named) for branch in t)
    kind, logical = t.get("type"), t.get("logicalType")
    if logical == "decimal":
        return f"decimal({t.get('precision')},{t.get('scale', 0)})"
    if logical:
        return str(logical)
    if kind in ("record", "error"):
        return f"record {t['name']}"
    if kind == "enum":
        return f"enum {t['name']} {{{', '.join(t['symbols'])}}}"
    if kind == "fixed":
        return f"fixed {t['name']} ({t['size']} bytes)"
    if kind == "array":
        return f"array<{type_name(t['items'], named)}>"
    if kind == "map":
        return f"map<string, {type_name(t['values'], named)}>"
    return type_name(kind, named)


def _nested(t: Any, named: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The record a field holds (directly, optionally, or as array items / map values) and the path suffix."""
    t = _resolve(t, named)
    if isinstance(t, list):
        records = [r for r in (_nested(b, named) for b in t if b != "null") if r[0] is not None]
        return records[0] if len(records) == 1 else (None, "")
    if not isinstance(t, dict):
        return None, ""
    if t.get("type") in ("record", "error"):
        return t, ""
    if t.get("type") == "array":
        inner, suffix = _nested(t["items"], named)
        return inner, "[]" + suffix
    if t.get("type") == "map":
        inner, suffix = _nested(t["values"], named)
        return inner, "{}" + suffix
    return None, ""


def field_rows(schema: dict[str, Any]) -> list[FieldRow]:
    """Every field of ``schema`` (an expanded record), nested records expanded after their field."""
    named = named_types(schema)
    rows: list[FieldRow] = []

    def walk(record: dict[str, Any], prefix: str, seen: tuple[str, ...]) -> None:
        for f in record["fields"]:
            path = prefix + f["name"]
            rows.append(FieldRow(path, type_name(f["type"], named), " ".join(str(f.get("doc", "")).split())))
            inner, suffix = _nested(f["type"], named)
            if inner is not None and inner["name"] not in seen:  # a recursive type is expanded once
                walk(inner, f"{path}{suffix}.", (*seen, inner["name"]))

    walk(schema, "", (schema["name"],))
    return rows


def json_value(value: Any) -> Any:
    """A record as plain JSON, the way ``bizbus produce`` reads it: decimals and dates as strings."""
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):  # Avro's JSON encoding: one code point 0-255 per byte
        return value.decode("latin-1")
    return value


# ------------------------------------------------------------------------------------------ content


def _retention(spec: TopicSpec) -> str:
    if spec.cleanup_policy == "compact":
        return f"{spec.retention} (compacted: the latest record per key is kept)"
    return f"{spec.retention} (records older than that are deleted)"


def _group_example(spec: TopicSpec) -> str:
    team = spec.readers[0] if spec.readers else "<team>"
    event = spec.name.split(".")[2]
    return f"{team}-{event}-reader"


def page(spec: TopicSpec) -> TopicPage:
    """The content of one topic's page (``KeyError`` when its schema has no sample)."""
    from bizbus.schemas import catalog

    schema = catalog.load(spec.value_schema)
    readers = ", ".join(spec.readers) if spec.readers else "(none yet)"
    properties = [
        ("owner", spec.owner),
        ("value schema", spec.value_schema),
        ("subject", f"{spec.subject} (Confluent TopicNameStrategy)"),
        ("compatibility", f"{spec.compatibility}: {_COMPAT_MEANING[spec.compatibility]}"),
        ("key", f"{spec.key}; a UTF-8 string"),
        ("partitions", str(spec.partitions)),
        ("replication", f"{spec.replication_factor} (production; capped at the broker count)"),
        ("cleanup policy", spec.cleanup_policy),
        ("retention", _retention(spec)),
        ("readers", readers),
    ]
    if spec.config:
        properties.append(("topic config", ", ".join(f"{k}={v}" for k, v in sorted(spec.config.items()))))
    start = (
        "read from the beginning (`auto.offset.reset=earliest`) to build the current state of every key"
        if spec.cleanup_policy == "compact"
        else f"a new group starts at the latest record, or at the oldest kept one ({spec.retention}) "
        "with `auto.offset.reset=earliest`"
    )
    consume = [
        ("value", f"Confluent wire format (magic byte 0, 4-byte schema id, Avro binary); decode with the "
                  f"writer schema from the registry, subject `{spec.subject}`: confluent-kafka's "
                  "`AvroDeserializer`, Java's `KafkaAvroDeserializer` and others do"),
        ("group id", f"`<team>-<purpose>`, e.g. `{_group_example(spec)}`; a reader team's ACLs allow the "
                     "group ids that start with `<team>-`"),
        ("headers", ", ".join(f"`{h}`" for h in HEADER_KEYS) + " (UTF-8, the same values as `meta`)"),
        ("ordering", f"per key within a partition (key: {spec.key})"),
        ("duplicates", "delivery is at least once: de-duplicate by `meta.event_id` (deterministic: the same "
                       "change always has the same id)"),
        ("start", start),
        ("changes", f"the registry refuses a schema version that breaks {spec.compatibility}; a change that "
                    "would break it gets a new topic (`.v<major+1>`); ignore fields you do not know"),
        ("access", f"teams in `readers` of deploy/topics.yaml ({readers}); to be added, propose your team "
                   f"there (owner: {spec.owner}); the ACLs in deploy/acls/ are generated from it"),
        ("try it", f"`python {EXAMPLE_CONSUMER} {spec.name} --team <team> --purpose explore "
                   "--from-beginning --max-records 5`"),
    ]  # fmt: skip
    return TopicPage(
        spec=spec,
        schema_doc=" ".join(str(schema.get("doc", "")).split()),
        properties=properties,
        fields=field_rows(schema),
        example=json_value(catalog.sample(spec.value_schema)),
        consume=consume,
    )


# ------------------------------------------------------------------------------------------ text


def _wrap(text: str, width: int, **kw: Any) -> list[str]:
    """Wrap at spaces only: words with hyphens (de-duplicate) and long names stay whole."""
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False, **kw)


def _text_pairs(pairs: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    width = max(len(k) for k, _ in pairs) + 2
    out = []
    for key, value in pairs:
        wrapped = _wrap(value, _WIDTH - len(indent) - width) or [""]
        out.append(f"{indent}{key:<{width}}{wrapped[0]}")
        out += [f"{indent}{'':<{width}}{line}" for line in wrapped[1:]]
    return out


def _text_fields(rows: list[FieldRow]) -> list[str]:
    path_w = max(len(r.path) for r in rows) + 2
    type_w = min(max(len(r.type) for r in rows), 28) + 2
    doc_col = 2 + path_w + type_w
    out = [f"  {'field':<{path_w}}{'type':<{type_w}}description"]
    for r in rows:
        doc = _wrap(r.doc, max(30, _WIDTH - doc_col)) or [""]
        if len(r.type) + 2 > type_w:  # a long type gets its own line, the description starts below it
            out.append(f"  {r.path:<{path_w}}{r.type}")
            out += [f"{'':<{doc_col}}{line}" for line in doc]
        else:
            out.append(f"  {r.path:<{path_w}}{r.type:<{type_w}}{doc[0]}")
            out += [f"{'':<{doc_col}}{line}" for line in doc[1:]]
    return out


def describe(spec: TopicSpec) -> str:
    """A text page about one topic: catalogue entry, fields with docs, an example record, how to consume."""
    p = page(spec)
    out = [spec.name, "=" * len(spec.name), *_wrap(spec.description, _WIDTH), ""]
    out += _text_pairs(p.properties)
    out += ["", f"Fields of {spec.value_schema}", *_wrap(p.schema_doc, _WIDTH, initial_indent="  ",
                                                                 subsequent_indent="  "), ""]  # fmt: skip
    out += _text_fields(p.fields)
    out += ["", "Example record (JSON; decimals and dates as strings, `bizbus produce` reads this form)", ""]
    out += ["  " + line for line in p.example_json.splitlines()]
    out += ["", "How to consume", *_text_pairs(p.consume)]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ markdown


def _md(text: str) -> str:
    """Text for Markdown: ``<`` outside code spans escaped (``<warehouse>`` is no HTML tag)."""
    parts = text.split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def _cell(text: str) -> str:
    return _md(text).replace("|", "\\|")


def _anchor(name: str) -> str:
    """GitHub's anchor of a heading ``` `name` ```: lower case, dots and backticks dropped."""
    return "".join(c for c in name.lower() if c.isalnum() or c in "-_")


def _markdown_topic(p: TopicPage) -> list[str]:
    spec = p.spec
    out = [f"## `{spec.name}`", "", _md(spec.description), "", "| | |", "|---|---|"]
    out += [f"| {key} | {_cell(value)} |" for key, value in p.properties]
    out += ["", f"**Fields of `{spec.value_schema}`**: {_md(p.schema_doc)}", "",
            "| field | type | description |", "|---|---|---|"]  # fmt: skip
    code = [r.type.replace("|", "\\|") for r in p.fields]  # inside a code span only the pipe needs escaping
    out += [f"| `{r.path}` | `{t}` | {_cell(r.doc)} |" for r, t in zip(p.fields, code, strict=True)]
    out += [
        "",
        "**Example record** (JSON; decimals and dates as strings, `bizbus produce` reads this form)",
        "",
    ]
    out += ["```json", p.example_json, "```", "", "**How to consume**", ""]
    out += [f"* {key}: {_md(value)}" for key, value in p.consume]
    return [*out, ""]


def render_page(catalogue: Catalogue) -> str:
    """docs/topics.md: an index of every topic, then one section per topic (same content as ``describe``)."""
    out = [
        "# bizbus topics",
        "",
        "Generated by `bizbus docs` from deploy/topics.yaml and schemas/avro; do not edit by hand (a test fails",
        "when it is stale). One topic on the command line: `bizbus topics describe TOPIC`.",
        "",
        "Every topic carries Avro in the Confluent wire format; its value schema is registered under the",
        "subject `<topic>-value`, so a standard client with a schema-registry deserializer reads it. Consumer",
        "group ids are `<team>-<purpose>`. Read access follows the `readers` of each topic in",
        "deploy/topics.yaml: `bizbus docs` turns them into deploy/acls/kafka-acls.sh and",
        f"deploy/acls/strimzi-kafka-users.yaml. A consumer without any bizbus code: {EXAMPLE_CONSUMER}.",
        "",
        "| topic | what one record means | owner | schema | readers |",
        "|---|---|---|---|---|",
    ]
    for s in catalogue.topics:
        out.append(f"| [`{s.name}`](#{_anchor(s.name)}) | {_cell(s.description)} | {s.owner} | "
                   f"`{s.value_schema}` | {', '.join(s.readers)} |")  # fmt: skip
    out.append("")
    for s in catalogue.topics:
        out += _markdown_topic(page(s))
    return "\n".join(out).rstrip("\n") + "\n"


def generated(catalogue: Catalogue) -> dict[Path, str]:
    """The files of this module that ``bizbus docs`` writes (see ``bizbus.docgen.refdocs.generated``)."""
    return {TOPICS_PAGE: render_page(catalogue)}
