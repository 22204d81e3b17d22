"""Settings: environment names, secrets, clear errors."""

from __future__ import annotations

import pytest

from bizbus.errors import ConfigError
from bizbus.settings import Settings, load_settings


def test_defaults_start_embedded_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    s = Settings(_env_file=None)
    assert s.embedded_broker and s.embedded_registry
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.registry_url == "http://127.0.0.1:8081"
    assert s.kafka_config() == {"bootstrap.servers": "127.0.0.1:9092", "log.connection.close": False}


def test_standard_kafka_variables_select_external_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://sr.example:8081")
    monkeypatch.setenv("BIZBUS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BIZBUS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("BIZBUS_KAFKA_SASL_USERNAME", "bizbus")
    monkeypatch.setenv("BIZBUS_KAFKA_SASL_PASSWORD", "s3cret-pw")
    s = Settings(_env_file=None)
    assert not s.embedded_broker and not s.embedded_registry
    conf = s.kafka_config()
    assert conf["bootstrap.servers"] == "k1:9093,k2:9093"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "s3cret-pw"
    # the secret never shows in the settings' text form
    assert "s3cret-pw" not in repr(s) and "s3cret-pw" not in str(s.model_dump())


def test_secret_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    monkeypatch.setenv("BIZBUS_KAFKA_SASL_PASSWORD_FILE", str(secret))
    assert Settings(_env_file=None).kafka_config()["sasl.password"] == "from-file"


def test_missing_secret_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("BIZBUS_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="cannot read the SASL password"):
        load_settings()


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIZBUS_BROKER_PORT", "ninety")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "BIZBUS_BROKER_PORT" in str(err.value)


def test_client_properties_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("# comment\nssl.endpoint.identification.algorithm = none\nclient.id=bizbus-a\n")
    monkeypatch.setenv("BIZBUS_KAFKA_CLIENT_CONFIG_FILE", str(props))
    conf = Settings(_env_file=None).kafka_config()
    assert conf["client.id"] == "bizbus-a"
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    props.write_text("not a property line\n")
    with pytest.raises(ConfigError, match=r"client.properties:1: expected key=value"):
        Settings(_env_file=None).kafka_config()
