"""The ``bizbus`` command line.

Every expected failure (bad config, port in use, unreachable broker, breaking schema) prints one clear
message to stderr and exits non-zero; tracebacks are for bugs only (set BIZBUS_DEBUG=1 to see them).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bizbus.errors import BizbusError, ConfigError

app = typer.Typer(
    help="bizbus — Kafka-based enterprise service bus. `bizbus up` runs it; the other commands manage "
    "topics and schemas. Settings come from BIZBUS_* variables, KAFKA_BOOTSTRAP_SERVERS and SCHEMA_REGISTRY_URL.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(
    help="The topic catalogue (deploy/topics.yaml) and the cluster's live state.", no_args_is_help=True
)
schemas_app = typer.Typer(
    help="Canonical Avro schemas (schemas/avro) and the schema registry.", no_args_is_help=True
)
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
dlq_app = typer.Typer(
    help="Dead letters (bizbus.ops.dead-letter.v1): list them, show one, and replay them through their sink "
    "once the cause is fixed (the sink's ledger makes a replay apply each record at most once).",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")
flows_app = typer.Typer(
    help="The Faust stream processors (F1/F8 cost-centers, F2 labor-cost, F4 approvals-to-erp) of the pipeline.",
    no_args_is_help=True,
)
app.add_typer(flows_app, name="flows")
tryton_app = typer.Typer(help="A demo Tryton ERP to try the flows by hand, and what bizbus wrote into it.",
                         no_args_is_help=True)  # fmt: skip
app.add_typer(tryton_app, name="tryton")

PipelineOpt = Annotated[
    Path | None,
    typer.Option(
        "--pipeline", "-p", help="pipeline YAML (default: BIZBUS_PIPELINE_FILE, else deploy/pipeline.yaml of "
        "a source checkout, else the one the package ships)"
    ),
]
TopicsOpt = Annotated[
    Path | None,
    typer.Option("--topics", help="topic catalogue YAML (default: BIZBUS_TOPICS_FILE, else deploy/topics.yaml "
                 "of a source checkout, else the one the package ships)"),
]


def _settings(pipeline: Path | None = None, topics: Path | None = None):
    from bizbus.settings import load_settings

    over = {}
    if pipeline is not None:
        over["pipeline_file"] = pipeline
    if topics is not None:
        over["topics_file"] = topics
    return load_settings(**over)


def _catalogue(settings):
    from bizbus.catalogue import load_catalogue

    return load_catalogue(settings.topics_file)


def _admin(settings):
    from confluent_kafka.admin import AdminClient

    from bizbus.kafka import wait_for_metadata

    wait_for_metadata(settings.kafka_config(), timeout=10)
    return AdminClient(settings.kafka_config())


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"bizbus {version('bizbus')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("bizbus (not installed: no version)")
        raise typer.Exit()


@app.callback()
def _main(
    _show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """bizbus — Kafka-based enterprise service bus."""


@app.command()
def up(pipeline: PipelineOpt = None, topics: TopicsOpt = None) -> None:
    """Run the bus in the foreground until Ctrl-C.

    Starts the embedded Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and the embedded schema
    registry (unless SCHEMA_REGISTRY_URL is set), creates the catalogue's topics, registers the schemas,
    runs the pipeline's connectors and flows, and serves the webhooks and /healthz on BIZBUS_HTTP_PORT,
    /readyz, /metrics and /connectors on the admin listener (BIZBUS_ADMIN_HOST:BIZBUS_ADMIN_PORT,
    127.0.0.1:8089). Without BIZBUS_ADMIN_TOKEN it writes a token into .bizbus/admin.token. Ctrl-C stops
    every child process.
    """
    from bizbus.devstack.up import up as run_up
    from bizbus.host.pipeline import load_pipeline

    s = _settings(pipeline, topics)
    _logging(s.log_level, s.log_format)
    pl = load_pipeline(s.pipeline_file)
    cat = _catalogue(s)
    raise typer.Exit(run_up(s, pl, cat, echo=lambda m: typer.echo(m, err=False)))


@app.command()
def worker(
    pipeline: PipelineOpt = None,
    topics: TopicsOpt = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="run just this component (repeatable)")
    ] = None,
) -> None:
    """Run the pipeline's connectors against a running broker and registry, without starting them.

    Start several workers with the same pipeline to spread the work: sink tasks share a consumer group,
    source shards are leased (a standby takes over when a worker dies). Pause, resume or restart a
    connector with POST /connectors/NAME/pause, /resume or /restart on the admin listener
    (BIZBUS_ADMIN_PORT; 0 = any) with ``Authorization: Bearer`` BIZBUS_ADMIN_TOKEN; a pause is stored in
    PostgreSQL (BIZBUS_STATE_DSN) and applies to every worker of the connector.
    """
    from bizbus.host.pipeline import load_pipeline
    from bizbus.host.runner import worker as run_worker

    s = _settings(pipeline, topics)
    _logging(s.log_level, s.log_format)
    raise typer.Exit(
        run_worker(s, load_pipeline(s.pipeline_file), _catalogue(s), tuple(only or ()), echo=typer.echo)
    )


@flows_app.command("run")
def flows_run(
    pipeline: PipelineOpt = None,
    topics: TopicsOpt = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="run just this flow (repeatable; default: every enabled flow)")
    ] = None,
) -> None:
    """Run ONE Faust worker in the foreground with the agents of the pipeline's flows, until Ctrl-C.

    Needs a running broker and registry (KAFKA_BOOTSTRAP_SERVERS, SCHEMA_REGISTRY_URL) with the catalogue's
    topics. Start the same command on more machines to share the partitions. /metrics and /readyz are
    served on the admin listener, BIZBUS_ADMIN_PORT (0: any free port).
    """
    from bizbus.host.pipeline import load_pipeline
    from bizbus.streams.runtime.worker import run_worker

    s = _settings(pipeline, topics)
    _logging(s.log_level, s.log_format)
    raise typer.Exit(run_worker(s, load_pipeline(s.pipeline_file), _catalogue(s), tuple(only or ()), echo=typer.echo))


@tryton_app.command("demo")
def tryton_demo(
    port: Annotated[int, typer.Option("--port", help="listen port of trytond")] = 8000,
    folder: Annotated[Path | None, typer.Option("--folder", help="database folder (default <data dir>/tryton)")] = None,
) -> None:
    """Serve a seeded demo Tryton (company, chart, fiscal year, accounts 6601/2211, suppliers, products, the
    bizbus_ref module) until Ctrl-C. Built once (about a minute); the admin password is generated then and
    kept in <folder>/admin.pass, never printed."""
    import time

    from bizbus.devstack.tryton_demo import run_demo, trytond_missing

    reason = trytond_missing()
    if reason:
        raise BizbusError(f"cannot run the demo Tryton: {reason}")
    s = _settings()
    where = (folder or s.data_dir / "tryton").resolve()
    server = run_demo(where, port, log=typer.echo)
    typer.echo(f"demo Tryton: {server.url} (user admin); for the tryton sink and `bizbus tryton show`:\n"
               f"  export BIZBUS_TRYTON_PASSWORD=\"$(cat {where / 'admin.pass'})\"\nCtrl-C stops it.")  # fmt: skip
    try:
        while server.proc is not None and server.proc.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@tryton_app.command("show")
def tryton_show(
    project: Annotated[str, typer.Argument(help="project key, e.g. DEMO")],
    url: Annotated[str, typer.Option("--url", help="Tryton database URL")] = "http://127.0.0.1:8000/bizbus/",
    user: Annotated[str, typer.Option("--user")] = "admin",
    password_env: Annotated[str, typer.Option("--password-env", help="env var holding the password")] = "BIZBUS_TRYTON_PASSWORD",
) -> None:
    """Print the analytic account of a project and the moves posted on it, as Tryton has them."""
    import os

    from bizbus.connectors.sinks.tryton.api import TrytonRpc
    from bizbus.devstack.tryton_demo import show_project

    password = os.environ.get(password_env)
    if not password:
        raise BizbusError(f"set {password_env} to the Tryton password (demo: the file admin.pass)")
    rpc = TrytonRpc(url, user, password)
    rpc.login()
    for line in show_project(rpc, project):
        typer.echo(line)


@app.command()
def check(
    pipeline: PipelineOpt = None,
    topics: TopicsOpt = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="fail (exit 2) on a cross-check problem instead of warning")
    ] = False,
) -> None:
    """Validate settings, the pipeline file and the topic catalogue without connecting to anything.

    Also cross-checks each enabled component: every topic it reads or writes is in the catalogue, and every
    environment variable holding one of its secrets is set (or its NAME_FILE variant). Problems are
    warnings; with --strict they are an error.
    """
    from bizbus.host.crosscheck import cross_check
    from bizbus.host.pipeline import load_pipeline

    s = _settings(pipeline, topics)
    pl = load_pipeline(s.pipeline_file)
    cat = _catalogue(s)
    problems = cross_check(pl, cat)
    if problems and strict:
        raise ConfigError("\n  ".join([f"pipeline {s.pipeline_file} against {s.topics_file} and the environment:",
                                        *problems]))  # fmt: skip
    for p in problems:
        typer.echo(f"warning: {p}", err=True)
    typer.echo(
        f"ok: pipeline '{pl.name}' ({len(pl.components)} components) and {len(cat.topics)} catalogue topics are valid"
        + (f" ({len(problems)} warning{'s' if len(problems) != 1 else ''}; --strict fails on them)" if problems else "")
    )


@app.command()
def components() -> None:
    """List the connector and flow types a pipeline can use, with their config fields."""
    from bizbus.docgen.refdocs import field_docs
    from bizbus.host.components import COMPONENT_TYPES

    for t in COMPONENT_TYPES.values():
        typer.echo(f"{t.name}  [{t.kind}]  {t.summary}")
        for d in field_docs(t.config_model()):
            shown = d.default.replace("`", "")
            default = shown if shown == "required" or shown.startswith("see ") else f"default {shown}"
            typer.echo(f"    {d.name}: {d.description} ({default})")


@app.command()
def docs(
    check_only: Annotated[bool, typer.Option("--check", help="fail when a generated file is stale")] = False,
    out: Annotated[
        Path, typer.Option("--out", help="folder the files are written into (their paths are relative to it)")
    ] = Path("."),
) -> None:
    """Generate the files derived from code: docs/reference.md (settings, component configs, topics) and
    the others listed by ``bizbus.docgen.refdocs.generated`` (dashboards, alert rules, topic catalogue page,
    the packaged defaults, the README's component table). Writes below --out only (default: the current
    folder, normally the repository root)."""
    from bizbus.docgen.refdocs import generated
    from bizbus.settings import PROJECT_ROOT

    stale = []
    for path, text in generated(_catalogue(_settings())).items():
        rel = path.relative_to(PROJECT_ROOT)
        target = out / rel
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current == text:
            typer.echo(f"{target} is current")
        elif check_only:
            stale.append(str(target))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            typer.echo(f"wrote {target}")
    if stale:
        raise BizbusError(f"stale generated file(s): {', '.join(stale)}; run `bizbus docs` and commit the result")


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="catalogue topic, e.g. bizbus.pm.timesheet.v1")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="start at the oldest record")
    ] = False,
    max_records: Annotated[int, typer.Option("--max", help="stop after N records (0: run until Ctrl-C)")] = 0,
    timeout: Annotated[float, typer.Option(help="stop after this many idle seconds (0: never)")] = 0.0,
) -> None:
    """Print a topic's records decoded (JSON), with their lineage headers."""
    import json
    import uuid

    from confluent_kafka import Consumer

    from bizbus.kafka import read_until_quiet
    from bizbus.lineage import read_headers
    from bizbus.serde import AvroSerde, SerdeError

    s = _settings()
    _catalogue(s).get(topic)
    serde = AvroSerde(s.registry_config())
    consumer = Consumer({**s.kafka_config(), "group.id": f"bizbus-tail-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest" if from_beginning else "latest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000})  # fmt: skip
    consumer.subscribe([topic])
    try:
        for msg in read_until_quiet(consumer, timeout, limit=max_records, batch=1):  # one at a time: printed at once
            try:
                value = serde.decode(msg.value())
            except SerdeError as exc:
                value = {"undecodable": str(exc)}
            out = {"partition": msg.partition(), "offset": msg.offset(), "key": (msg.key() or b"").decode("utf-8", "replace"),
                   "headers": read_headers(msg.headers()), "value": value}  # fmt: skip
            typer.echo(json.dumps(out, default=str, ensure_ascii=False))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


@app.command()
def produce(
    topic: Annotated[str, typer.Argument(help="catalogue topic, e.g. bizbus.pm.timesheet.v1")],
    file: Annotated[Path, typer.Argument(help="JSON lines, one record per line ('-' for stdin)")],
) -> None:
    """Validate records written as JSON against the topic's schema, then produce them (all or none).

    Decimals are written as strings ("12.50"), timestamps as RFC 3339, dates as 2026-11-23. The key is
    the record's meta.correlation_id and the lineage headers are set from meta.
    """
    import json

    from confluent_kafka import Producer

    from bizbus import lineage
    from bizbus.jsonavro import from_json
    from bizbus.schemas import catalog
    from bizbus.serde import AvroSerde

    s = _settings()
    spec = _catalogue(s).get(topic)
    schema = catalog.load(spec.value_schema)
    text = sys.stdin.read() if str(file) == "-" else _read_text(file)
    serde = AvroSerde(s.registry_config())
    schema_id = serde.register(spec.subject, schema)
    encoded: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = from_json(schema, json.loads(line))
            value = serde.encode(schema_id, record)
        except json.JSONDecodeError as exc:
            raise BizbusError(f"{file}:{n}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        except (ValueError, BizbusError) as exc:
            raise BizbusError(f"{file}:{n}: does not match {spec.value_schema}: {exc}") from None
        meta = record["meta"]
        encoded.append((meta["correlation_id"].encode(), value, lineage.headers(meta)))
    producer = Producer({**s.kafka_config(), "enable.idempotence": True, "acks": "all"})
    for key, value, headers in encoded:
        producer.produce(topic, key=key, value=value, headers=headers)
    left = producer.flush(30)
    if left:
        raise BizbusError(f"{left} of {len(encoded)} records were not acknowledged by the broker within 30 s")
    typer.echo(f"{len(encoded)} records produced to {topic} (schema id {schema_id})")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BizbusError(f"{path}: cannot read: {exc.strerror}") from None


@topics_app.command("list")
def topics_list(
    topics: TopicsOpt = None,
    offline: Annotated[bool, typer.Option(help="catalogue only, no cluster")] = False,
) -> None:
    """Print the catalogue with each topic's live state (missing / ok / drift)."""
    from bizbus import catalogue as c

    s = _settings(topics=topics)
    cat = _catalogue(s)
    states = (
        [c.TopicState(t, False, action="-") for t in cat.topics] if offline else c.live_state(_admin(s), cat)
    )
    typer.echo(f"{'topic':<36} {'part':>4} {'policy':<8} {'retention':<9} {'owner':<20} {'schema':<34} live")
    for st in states:
        t = st.spec
        typer.echo(
            f"{t.name:<36} {t.partitions:>4} {t.cleanup_policy:<8} {t.retention:<9} {t.owner:<20} {t.value_schema:<34} {st.status}"
        )
        for d in st.drift:
            typer.echo(f"    drift: {d}")


@topics_app.command("apply")
def topics_apply(
    topics: TopicsOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show, change nothing")] = False,
) -> None:
    """Create the catalogue's missing topics; report drift on existing ones (never changes them)."""
    from bizbus import catalogue as c

    s = _settings(topics=topics)
    states = c.apply(_admin(s), _catalogue(s), dry_run=dry_run)
    for st in states:
        typer.echo(f"{st.spec.name:<36} {st.status}")
        for d in st.drift:
            typer.echo(f"    drift: {d}")
    failed = [st for st in states if st.action.startswith("FAILED")]
    drift = [st for st in states if st.drift]
    typer.echo(
        f"{sum(st.action.startswith('created') for st in states)} created, {len(drift)} with drift, {len(failed)} failed"
    )
    if failed:
        raise typer.Exit(1)


@topics_app.command("describe")
def topics_describe(
    topic: Annotated[str, typer.Argument(help="catalogue topic, e.g. bizbus.pm.timesheet.v1")],
    topics: TopicsOpt = None,
) -> None:
    """Print one topic's page for the teams that read it (offline).

    The catalogue entry, every field with its type and doc, an example record and how to consume the
    topic; docs/topics.md has the same for every topic.
    """
    from bizbus.docgen.topicdocs import describe

    typer.echo(describe(_catalogue(_settings(topics=topics)).get(topic)), nl=False)


@topics_app.command("acls")
def topics_acls(
    fmt: Annotated[
        str, typer.Option("--format", help="kafka-cli (kafka-acls.sh commands) or strimzi (KafkaUser YAML)")
    ] = "kafka-cli",
    auth: Annotated[str, typer.Option("--auth", help="strimzi: tls or scram-sha-512")] = "tls",
    cluster: Annotated[str, typer.Option("--cluster", help="strimzi: name of the Kafka resource")] = "bizbus",
    apply: Annotated[
        bool, typer.Option("--apply", help="create the ACLs on the broker (when it has an authorizer)")
    ] = False,
    topics: TopicsOpt = None,
) -> None:
    """Print the ACLs the catalogue's readers ask for, or create them with --apply.

    Each reading team may read its topics and use the groups <team>-*; bizbus writes every topic. On a
    broker without ACL support (the embedded Tansu) --apply says so and exits 0.
    """
    from bizbus.docgen import acls

    s = _settings(topics=topics)
    cat = _catalogue(s)
    if not apply:
        if fmt not in ("kafka-cli", "strimzi") or auth not in ("tls", "scram-sha-512"):
            raise BizbusError(f"--format must be kafka-cli or strimzi (not {fmt!r}), "
                              f"--auth tls or scram-sha-512 (not {auth!r})")  # fmt: skip
        if fmt == "kafka-cli":
            typer.echo(acls.render_kafka_cli(cat), nl=False)
        else:
            typer.echo(acls.render_strimzi(cat, auth, cluster), nl=False)  # type: ignore[arg-type]
        return
    support = acls.probe(s.kafka_config())
    if not support.supported:
        typer.echo(f"skipped: the broker at {s.bootstrap_servers} does not support ACLs ({support.reason}); "
                   "apply deploy/acls/kafka-acls.sh or deploy/acls/strimzi-kafka-users.yaml on a cluster "
                   "with an authorizer")  # fmt: skip
        return
    results = acls.apply(s.kafka_config(), cat)
    for rule, error in results:
        typer.echo(f"{'FAILED' if error else 'ok':<7}{rule.describe()}" + (f": {error}" if error else ""))
    failed = sum(1 for _, error in results if error)
    typer.echo(f"{len(results) - failed} ACL rules in place, {failed} failed ({support.reason})")
    if failed:
        raise typer.Exit(1)


@schemas_app.command("list")
def schemas_list() -> None:
    """List the canonical schemas and the topics that carry them."""
    from bizbus.schemas import catalog

    s = _settings()
    cat = _catalogue(s)
    for name in catalog.top_level_names():
        topics = ", ".join(t.name for t in cat.for_schema(name)) or "(no topic)"
        typer.echo(f"{name:<36} {topics}")


@schemas_app.command("show")
def schemas_show(name: Annotated[str, typer.Argument(help="full name, e.g. bizbus.finance.Voucher")]) -> None:
    """Print one schema, fully expanded (what gets registered)."""
    from bizbus.schemas.check import schema_json

    typer.echo(schema_json(name))


@schemas_app.command("register")
def schemas_register(topics: TopicsOpt = None) -> None:
    """Register every catalogue topic's value schema under <topic>-value."""
    from bizbus.devstack.stack import register_schemas
    from bizbus.serde import AvroSerde

    s = _settings(topics=topics)
    ids = register_schemas(AvroSerde(s.registry_config()), _catalogue(s))
    for subject, sid in ids.items():
        typer.echo(f"{subject:<44} id {sid}")


@schemas_app.command("check")
def schemas_check(
    against: Annotated[
        str, typer.Option(help="registry, git, or auto (registry when reachable, else git)")
    ] = "auto",
    topics: TopicsOpt = None,
) -> None:
    """Fail when a working-tree schema is incompatible with what readers already have.

    Against the registry: its compatibility endpoint decides under the subject's level. Against git:
    every earlier committed version of schemas/avro, under the catalogue's compatibility level.
    """
    import httpx

    from bizbus.schemas import check as chk

    if against not in ("auto", "registry", "git"):
        raise BizbusError(f"--against must be registry, git or auto, not {against!r}")
    s = _settings(topics=topics)
    cat = _catalogue(s)
    if against == "auto":
        try:
            httpx.get(f"{s.registry_url}/subjects", timeout=2).raise_for_status()
            against = "registry"
        except httpx.HTTPError:
            typer.echo(f"no registry at {s.registry_url}: checking against git history instead")
            against = "git"
    findings = (
        chk.against_registry(cat, s.registry_config()) if against == "registry" else chk.against_git(cat)
    )
    typer.echo(chk.render(findings))
    if any(not f.ok for f in findings):
        raise typer.Exit(1)


DlqConnectorOpt = Annotated[
    str | None, typer.Option("--connector", "-c", help="only this connector's dead letters")
]
DlqFilterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        "-f",
        help="key=value, repeatable, all must hold; keys: error_class, error_type, topic, id (prefix), "
        "since (ISO date or datetime of failed_at), contains (substring of the error message)",
    ),
]
DlqTopicOpt = Annotated[str, typer.Option("--topic", help="the dead-letter topic")]
DlqIdleOpt = Annotated[
    float, typer.Option("--idle", min=0.1, help="stop reading after this many seconds bring nothing new")
]


def _dead_letters(s, serde, topic: str, idle: float):
    """All dead letters on ``topic``, with progress on stderr while a long read goes on."""
    from bizbus.connectors.runtime.replay import read_dead_letters

    def progress(n: int) -> None:
        typer.echo(f"reading dead letters from {topic} ({n} so far)", err=True)

    return read_dead_letters(s.kafka_config(), serde, topic=topic, idle=idle, progress=progress)


@dlq_app.command("list")
def dlq_list(
    connector: DlqConnectorOpt = None,
    filters: DlqFilterOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="show at most N, oldest first (0: all)")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per dead letter and line")] = False,
    topic: DlqTopicOpt = "bizbus.ops.dead-letter.v1",
    idle: DlqIdleOpt = 2.0,
) -> None:
    """List dead letters, oldest first, de-duplicated by id, with a count per connector and error class."""
    import json

    from bizbus.connectors.runtime import replay as rp
    from bizbus.serde import AvroSerde

    flt = rp.DeadLetterFilter.parse(connector, filters or ())
    s = _settings()
    views = flt.apply(_dead_letters(s, AvroSerde(s.registry_config()), topic, idle))
    if not views:
        typer.echo("no dead letters" + (f" match {flt.describe()}" if flt.describe() else f" on {topic}"))
        return
    shown = views[:limit] if limit else views
    if as_json:
        for v in shown:
            typer.echo(json.dumps(rp.to_json(v), ensure_ascii=False))
        return
    for line in rp.table(shown):
        typer.echo(line)
    more = f" ({len(shown)} shown; --limit 0 shows all)" if len(shown) < len(views) else ""
    typer.echo(rp.summary(views) + more)


@dlq_app.command("show")
def dlq_show(
    ident: Annotated[
        str, typer.Argument(metavar="ID", help="the id or a unique prefix (see `bizbus dlq list`)")
    ],
    topic: DlqTopicOpt = "bizbus.ops.dead-letter.v1",
    idle: DlqIdleOpt = 2.0,
) -> None:
    """Print every field of one dead letter; the value as JSON when it decodes, else its raw bytes."""
    from bizbus.connectors.runtime import replay as rp
    from bizbus.serde import AvroSerde

    s = _settings()
    serde = AvroSerde(s.registry_config())
    for line in rp.details(rp.find_by_id(_dead_letters(s, serde, topic, idle), ident), serde):
        typer.echo(line)


@dlq_app.command("replay")
def dlq_replay(
    connector: DlqConnectorOpt = None,
    filters: DlqFilterOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what each record would do; write nothing")
    ] = False,
    pipeline: PipelineOpt = None,
    topic: DlqTopicOpt = "bizbus.ops.dead-letter.v1",
    idle: DlqIdleOpt = 2.0,
) -> None:
    """Write dead letters to their sink again, through the same idempotent writer as live traffic.

    Fix the cause first (master data, a constraint, the mapping). Each record keeps its original
    coordinates and event id, so what the sink's ledger already has is reported "already applied" and
    replaying twice writes nothing twice. Dead letters of sources, and of connectors not in the
    pipeline, are skipped. Exits 1 when a record failed or does not decode (a dry run: when one
    could not be planned), else 0.
    """
    from bizbus.connectors.runtime import replay as rp
    from bizbus.host.components import RuntimeContext
    from bizbus.host.pipeline import load_pipeline
    from bizbus.serde import AvroSerde

    flt = rp.DeadLetterFilter.parse(connector, filters or ())
    s = _settings(pipeline)
    pl = load_pipeline(s.pipeline_file)
    serde = AvroSerde(s.registry_config())
    views = flt.apply(_dead_letters(s, serde, topic, idle))
    if not views:
        typer.echo("no dead letters" + (f" match {flt.describe()}" if flt.describe() else f" on {topic}"))
        return
    ctx = RuntimeContext(s, _catalogue(s), serde)
    outcomes = rp.replay(views, pl, ctx, dry_run, on_outcome=lambda o: typer.echo(rp.outcome_line(o)))
    typer.echo(rp.outcome_summary(outcomes, dry_run))
    if any(o.status == "failed" or (o.problem and not dry_run) for o in outcomes):
        raise typer.Exit(1)


def _logging(level: str, fmt: str | None = None) -> None:
    """Log to stderr as JSON lines or text (bizbus.logs); ``fmt`` None: BIZBUS_LOG_FORMAT, else auto."""
    from bizbus import logs

    logs.configure(level, fmt or os.environ.get("BIZBUS_LOG_FORMAT", "auto"))
    for noisy in ("httpx", "httpx2", "httpcore"):  # one line per registry request is noise, not news
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def main() -> None:
    """Entry point: run the CLI, turning expected errors into a message and an exit code."""
    try:
        app(prog_name="bizbus")  # also under `python -m bizbus` (usage lines, completion variable _BIZBUS_COMPLETE)
    except BizbusError as exc:
        if os.environ.get("BIZBUS_DEBUG"):
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
