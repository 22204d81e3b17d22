"""A third-party component, added without forking: a tiny out-of-tree package whose entry point in the group
``bizbus.components`` names its ``ComponentSpec``, installed with pip into a folder of its own, then named in a
pipeline file, seen by ``bizbus check`` / ``bizbus components`` and run by the host against a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus.catalogue import Catalogue, TopicSpec, load_catalogue
from bizbus.host.components import COMPONENT_TYPES, RuntimeContext
from bizbus.host.pipeline import load_pipeline
from bizbus.host.runner import start_components, stop_components
from bizbus.serde import AvroSerde
from bizbus.settings import PROJECT_ROOT, load_settings

BIN = Path(sys.executable).parent
PLUGIN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "bizbus-plugin-hello"
        version = "0.0.1"

        [tool.setuptools]
        packages = ["bizbus_hello"]

        [project.entry-points."bizbus.components"]
        hello-timesheets = "bizbus_hello.spec:SPEC"
        """,
    "bizbus_hello/__init__.py": "",
    "bizbus_hello/spec.py": """
        from bizbus.host.components import ComponentSpec

        SPEC = ComponentSpec(
            "hello-timesheets", "source", "bizbus_hello.source:HelloSource",
            "Writes COUNT timesheet entries with worklog ids hello-0, hello-1, ... (a plugin test).",
            writes=lambda config: (config.topic,),
        )
        """,
    "bizbus_hello/source.py": """
        import copy

        from confluent_kafka import Producer
        from pydantic import BaseModel, ConfigDict

        from bizbus import lineage
        from bizbus.host.components import Component
        from bizbus.schemas import catalog


        class HelloConfig(BaseModel):
            model_config = ConfigDict(frozen=True, extra="forbid")
            topic: str
            count: int = 3


        class HelloSource(Component):
            Config = HelloConfig

            def setup(self):
                spec = self.ctx.catalogue.get(self.config.topic)
                self._encode = self.ctx.serde.encoder(spec.subject, catalog.load(spec.value_schema))
                self._producer = Producer({**self.ctx.settings.kafka_config(), "acks": "all"})

            def run(self, stop):
                for i in range(self.config.count):
                    rec = copy.deepcopy(catalog.sample("bizbus.pm.TimesheetEntry"))
                    rec["worklog_id"] = f"hello-{i}"
                    rec["meta"] = lineage.meta(event_id=lineage.event_id("hello", i), correlation_id=f"hello-{i}",
                                               source_system="hello")
                    self._producer.produce(self.config.topic, key=f"hello-{i}".encode(), value=self._encode(rec))
                self._producer.flush(10)
                stop.wait()
        """,
}


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin built and installed with pip into a folder of its own (nothing lands in the test's venv)."""
    src, site = tmp_path_factory.mktemp("plugin-src"), tmp_path_factory.mktemp("plugin-site")
    for rel, text in PLUGIN.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    _pip("install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(src))
    assert list(site.glob("bizbus_plugin_hello-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture
def with_plugin(plugin_site: Path, monkeypatch: pytest.MonkeyPatch):
    """The plugin's folder on sys.path and the registry read again; both undone afterwards."""
    monkeypatch.syspath_prepend(str(plugin_site))
    COMPONENT_TYPES.reload()
    assert "hello-timesheets" in COMPONENT_TYPES
    yield plugin_site
    monkeypatch.undo()
    for name in [m for m in sys.modules if m == "bizbus_hello" or m.startswith("bizbus_hello.")]:
        del sys.modules[name]
    COMPONENT_TYPES.reload()
    assert "hello-timesheets" not in COMPONENT_TYPES


def _pipeline(tmp_path: Path, topic: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"version: 1\nname: plugin\nconnectors:\n  - name: hello\n    type: hello-timesheets\n"
                    f"    config: {{topic: {topic}, count: 3}}\n", encoding="utf-8")  # fmt: skip
    return path


def test_the_cli_sees_the_plugin(plugin_site: Path, tmp_path: Path) -> None:
    """`bizbus components` lists it and `bizbus check --strict` validates a pipeline naming it; without the
    plugin installed the same pipeline is refused with the known types."""
    pipeline = _pipeline(tmp_path, "bizbus.pm.timesheet.v1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_site), os.environ.get("PYTHONPATH")]))}

    def bizbus(*args: str, environ: dict[str, str] = env) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "bizbus"), *args], capture_output=True, text=True, env=environ, timeout=60,
                              cwd=tmp_path)  # fmt: skip

    listed = bizbus("components")
    assert listed.returncode == 0 and "hello-timesheets  [source]  Writes COUNT timesheet entries" in listed.stdout
    assert "    count:  (default 3)" in listed.stdout and "    topic:  (required)" in listed.stdout
    checked = bizbus("check", "--strict", "--pipeline", str(pipeline))
    assert checked.returncode == 0, checked.stderr
    assert "ok: pipeline 'plugin' (1 components)" in checked.stdout
    plain = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    refused = bizbus("check", "--pipeline", str(pipeline), environ=plain)
    assert refused.returncode != 0 and "unknown connector type 'hello-timesheets'" in refused.stderr


def test_a_pipeline_runs_the_plugin(with_plugin, tmp_path: Path, embedded_broker, registry) -> None:
    topic = f"bizbus.plugin{uuid.uuid4().hex[:8]}.timesheet.v1"
    admin = AdminClient({"bootstrap.servers": embedded_broker.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(20)
    base = load_catalogue(PROJECT_ROOT / "deploy" / "topics.yaml").get("bizbus.pm.timesheet.v1")
    cat = Catalogue(topics=(base.model_copy(update={"name": topic, "partitions": 1}),))
    assert isinstance(cat.topics[0], TopicSpec)
    pipeline = load_pipeline(_pipeline(tmp_path, topic))
    assert pipeline.components[0].type.target == "bizbus_hello.source:HelloSource"
    settings = load_settings(kafka_bootstrap_servers=embedded_broker.bootstrap_servers,
                             schema_registry_url=registry.url)  # fmt: skip
    serde = AvroSerde(settings.registry_config())
    stop = threading.Event()
    threads = start_components(pipeline, RuntimeContext(settings, cat, serde), stop)
    try:
        for t in threads:
            t.thread.start()
        consumer = Consumer({"bootstrap.servers": embedded_broker.bootstrap_servers, "group.id": f"g-{topic}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])  # no group to join: faster
        got: list[str] = []
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got.append(serde.decode(msg.value())["worklog_id"])
        consumer.close()
    finally:
        stop_components(threads, stop)
    assert sorted(got) == ["hello-0", "hello-1", "hello-2"]
    assert [t.error for t in threads] == [None]
