"""EnvSecret: a config names the variable; the value comes from it or from <VAR>_FILE, never into errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from bizbus.errors import ConfigError
from bizbus.secrets import EnvSecret, SecretNotSet, secret_vars


class Conf(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    token_env: EnvSecret
    key_env: EnvSecret | None = None
    again_env: EnvSecret | None = None
    other: str = "not a secret"


def test_reads_the_variable_then_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = Conf(token_env="BIZBUS_T_TOKEN")
    assert isinstance(conf.token_env, EnvSecret) and conf.token_env == "BIZBUS_T_TOKEN"
    assert conf.model_dump()["token_env"] == "BIZBUS_T_TOKEN"  # dumps as the name, like a str
    monkeypatch.delenv("BIZBUS_T_TOKEN", raising=False)
    monkeypatch.delenv("BIZBUS_T_TOKEN_FILE", raising=False)
    assert not conf.token_env.is_set()
    with pytest.raises(SecretNotSet, match=r"connector c1: environment variable BIZBUS_T_TOKEN \(the API token\) "
                                           r"is not set \(nor BIZBUS_T_TOKEN_FILE"):  # fmt: skip
        conf.token_env.read("the API token", "connector c1")
    secret_file = tmp_path / "token"
    secret_file.write_text("from-the-file-1234\n", encoding="utf-8")
    monkeypatch.setenv("BIZBUS_T_TOKEN_FILE", str(secret_file))
    assert conf.token_env.is_set() and conf.token_env.read() == "from-the-file-1234"
    monkeypatch.setenv("BIZBUS_T_TOKEN", "from-the-variable-1234")  # the variable wins over the file
    assert conf.token_env.read() == "from-the-variable-1234"


def test_file_problems_name_the_file_not_a_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = EnvSecret("BIZBUS_T_PW")
    monkeypatch.delenv("BIZBUS_T_PW", raising=False)
    monkeypatch.setenv("BIZBUS_T_PW_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot read the password from file .*missing .BIZBUS_T_PW_FILE."):
        secret.read("the password")
    (tmp_path / "empty").write_text("  \n", encoding="utf-8")
    monkeypatch.setenv("BIZBUS_T_PW_FILE", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="is empty"):
        secret.read("the password")


def test_a_value_read_is_masked_in_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    from bizbus import logs

    monkeypatch.setenv("BIZBUS_T_MASKED", "very-secret-value-42")
    EnvSecret("BIZBUS_T_MASKED").read()
    assert "very-secret-value-42" not in logs.redact("token very-secret-value-42 leaked")


@pytest.mark.parametrize("bad", ["s3cr3t pw!", "", "1ABC", "abc-def", "ghp_abc=="])
def test_refuses_what_is_not_a_variable_name_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        Conf(token_env=bad)
    text = str(info.value)
    assert "NAME of an environment variable" in text
    assert not bad or bad not in text


def test_secret_vars_lists_the_named_variables_once() -> None:
    assert secret_vars(Conf(token_env="A_1")) == ("A_1",)
    assert secret_vars(Conf(token_env="A_1", key_env="B_2", again_env="A_1")) == ("A_1", "B_2")
