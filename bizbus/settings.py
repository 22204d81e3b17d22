"""Process settings: one object, read from the environment (and an optional .env file).

Variables are prefixed ``BIZBUS_`` (``BIZBUS_BROKER_PORT=19092``), except the two names every Kafka
tool already knows: ``KAFKA_BOOTSTRAP_SERVERS`` and ``SCHEMA_REGISTRY_URL``. When one of those is set,
bizbus uses that cluster / registry and does not start its embedded one.

Secrets (SASL password, registry credentials) are ``SecretStr``: they never print in reprs or logs.
A secret can also be given as a file (``BIZBUS_KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka``), the
usual way Kubernetes and Docker hand secrets to a process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bizbus.errors import ConfigError, format_validation_error

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
"""The default pipeline and topic catalogue shipped inside the package (copies of deploy/ that ``bizbus docs``
writes; a test fails when they differ)."""


def default_file(name: str) -> Path:
    """``deploy/<name>`` of a source checkout, else the copy the installed package ships (bizbus/defaults/)."""
    checkout = PROJECT_ROOT / "deploy" / name
    return checkout if checkout.is_file() else DEFAULTS_DIR / name


def _read_secret_file(path: str | None, what: str) -> SecretStr | None:
    if not path:
        return None
    p = Path(path)
    try:
        return SecretStr(p.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ValueError(f"cannot read {what} from file {p}: {exc.strerror}") from None


class Settings(BaseSettings):
    """Everything a bizbus process needs to know about where it runs."""

    model_config = SettingsConfigDict(
        env_prefix="BIZBUS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # -- Kafka -------------------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "BIZBUS_KAFKA_BOOTSTRAP_SERVERS"),
        description="External Kafka cluster (host:port,...). Unset: start the embedded broker.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="librdkafka security.protocol"
    )
    kafka_sasl_mechanism: str | None = Field(default=None, description="e.g. PLAIN, SCRAM-SHA-512")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: str | None = Field(default=None, description="file holding the SASL password")
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_client_config_file: str | None = Field(
        default=None,
        description="librdkafka properties file (key=value lines) merged into every client's config",
    )

    # -- embedded broker ---------------------------------------------------------------------------
    broker_host: str = Field(default="127.0.0.1", description="embedded broker listen host")
    broker_port: int = Field(default=9092, ge=1, le=65535, description="embedded broker listen port")
    broker_restarts: int = Field(
        default=3, ge=0, le=100,
        description="how often `bizbus up` restarts an embedded broker or registry that exited, within 10 minutes,"
                    " before it gives up and exits (0: never restart)",
    )  # fmt: skip
    broker_storage: str = Field(
        default="memory://tansu/", description="Tansu storage engine URL of the embedded broker"
    )

    # -- schema registry ---------------------------------------------------------------------------
    schema_registry_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SCHEMA_REGISTRY_URL", "BIZBUS_SCHEMA_REGISTRY_URL"),
        description="External registry (Confluent, Karapace, Apicurio). Unset: start the embedded one.",
    )
    schema_registry_basic_auth: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "BIZBUS_SCHEMA_REGISTRY_BASIC_AUTH"
        ),
        description="user:password for the registry",
    )
    registry_host: str = Field(default="127.0.0.1", description="embedded registry listen host")
    registry_port: int = Field(default=8081, ge=1, le=65535, description="embedded registry listen port")

    # -- this process ------------------------------------------------------------------------------
    http_host: str = Field(default="127.0.0.1", description="host of the public listener (webhooks, /healthz)")
    http_port: int = Field(default=8088, ge=0, le=65535,
                           description="port of the public listener: /webhooks/... and /healthz (0: any free port)")  # fmt: skip
    http_header_timeout: float = Field(default=10.0, gt=0, le=600,
                                       description="seconds a client has to send a whole request head (line and headers)")  # fmt: skip
    http_body_timeout: float = Field(default=30.0, gt=0, le=3600,
                                     description="seconds a client has to send a whole request body")  # fmt: skip
    http_idle_timeout: float = Field(default=75.0, gt=0, le=3600,
                                     description="seconds an idle keep-alive connection is kept open")  # fmt: skip
    http_max_connections: int = Field(default=1000, ge=1, le=1_000_000,
                                      description="open connections per listener; beyond it a new one gets 503")  # fmt: skip
    admin_host: str = Field(default="127.0.0.1",
                            description="host of the admin listener (/metrics, /readyz, /connectors, pause/resume/restart)")  # fmt: skip
    admin_port: int = Field(default=8089, ge=0, le=65535, description="port of the admin listener (0: any free port)")
    admin_token: SecretStr | None = Field(
        default=None, description="bearer token for /connectors and pause/resume/restart on the admin listener")
    admin_token_file: str | None = Field(default=None, description="file holding the admin bearer token")
    state_dsn: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="PostgreSQL for bus-wide state such as connector pauses (no password: PGPASSWORD or ~/.pgpass)",
    )
    data_dir: Path = Field(default=Path(".bizbus"), description="local state: registry store, logs, probe")
    pipeline_file: Path = Field(
        default_factory=lambda: default_file("pipeline.yaml"),
        description="which connectors and flows run (default: deploy/pipeline.yaml of a source checkout, else the "
        "copy the package ships)",
    )
    topics_file: Path = Field(
        default_factory=lambda: default_file("topics.yaml"),
        description="the topic catalogue (default: deploy/topics.yaml of a source checkout, else the copy the "
        "package ships)",
    )
    flows_standby_replicas: int = Field(
        default=0, ge=0, le=10,
        description="standby copies of each partitioned flow table kept by other flows workers (faster "
        "take-over after a rebalance, but every worker also applies the others' table changes; 0 as in Kafka "
        "Streams)",
    )  # fmt: skip
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="log lines on stderr: json (one object per line), text, or auto (json unless stderr is a "
        "terminal)",
    )

    _state_dsn = field_validator("state_dsn")(lambda v: no_password(v))

    @model_validator(mode="after")
    def _secret_files(self) -> Settings:
        if self.kafka_sasl_password_file and self.kafka_sasl_password is None:
            object.__setattr__(
                self,
                "kafka_sasl_password",
                _read_secret_file(self.kafka_sasl_password_file, "the SASL password"),
            )
        if self.admin_token_file and self.admin_token is None:
            object.__setattr__(self, "admin_token", _read_secret_file(self.admin_token_file, "the admin token"))
        return self

    # -- derived -----------------------------------------------------------------------------------
    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def embedded_registry(self) -> bool:
        return not self.schema_registry_url

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"{self.broker_host}:{self.broker_port}"

    @property
    def registry_url(self) -> str:
        return self.schema_registry_url or f"http://{self.registry_host}:{self.registry_port}"

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        # a broker closing idle connections is normal; librdkafka would log each one
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers, "log.connection.close": False}
        if self.kafka_client_config_file:
            conf.update(read_properties(Path(self.kafka_client_config_file)))
        if self.kafka_security_protocol != "PLAINTEXT":
            conf["security.protocol"] = self.kafka_security_protocol
        optional = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
        }
        conf.update({k: v for k, v in optional.items() if v})
        if self.kafka_sasl_password is not None:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return conf

    def registry_config(self) -> dict[str, Any]:
        """Configuration for ``confluent_kafka.schema_registry.SchemaRegistryClient``."""
        conf: dict[str, Any] = {"url": self.registry_url}
        if self.schema_registry_basic_auth is not None:
            conf["basic.auth.user.info"] = self.schema_registry_basic_auth.get_secret_value()
        return conf


def no_password(dsn: str) -> str:
    """Refuse a libpq DSN (URL or key=value) that carries a password: secrets come from the environment."""
    from psycopg import ProgrammingError, conninfo

    try:
        params = conninfo.conninfo_to_dict(dsn)
    except ProgrammingError:
        raise ValueError("not a valid PostgreSQL connection string") from None
    if params.get("password"):
        raise ValueError("the DSN must not contain a password: set PGPASSWORD in the environment, or use "
                         "PGPASSFILE / ~/.pgpass")  # fmt: skip
    return dsn


def read_properties(path: Path) -> dict[str, str]:
    """Read a Java-style ``key=value`` properties file (comments with # or !)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the Kafka client config file: {exc.strerror}") from None
    props: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{n}: expected key=value, got {line[:40]!r}")
        props[key.strip()] = value.strip()
    return props


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment; a bad value becomes a ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, source="environment (BIZBUS_*)", prefix="BIZBUS_")
        ) from None
