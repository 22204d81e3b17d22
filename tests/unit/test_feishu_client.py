"""FeishuClient against the contract fake: token cache and refresh, error classes, subscribe idempotency."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bizbus.connectors.sources.feishu.api import FeishuClient

from bizbus.failures import BackOff, Fatal, Permanent, Retryable
from tests.fakes.feishu_api import FeishuApi


@pytest.fixture
def api() -> Iterator[FeishuApi]:
    with FeishuApi() as fake:
        fake.add_approval("APPROVAL-1", "采购申请")
        fake.put_instance("INST-1", "APPROVAL-1", status="APPROVED")
        yield fake


def client(api: FeishuApi, secret: str | None = None) -> FeishuClient:
    return FeishuClient(api.url, api.app_id, secret or api.app_secret, "FEISHU_APP_SECRET", timeout=5)


def test_token_is_cached_and_fetched_again_when_refused(api: FeishuApi) -> None:
    c = client(api)
    assert c.get_instance("INST-1")["approval_name"] == "采购申请"
    assert c.get_instance("INST-1")["status"] == "APPROVED"
    assert api.calls("token") == 1
    api.expire_tokens()  # the API now answers 99991663 to the cached token
    assert c.get_instance("INST-1")["instance_code"] == "INST-1"
    assert api.calls("token") == 2 and api.calls("GET instance") == 3


def test_token_is_fetched_again_shortly_before_it_expires(api: FeishuApi) -> None:
    now = [1000.0]
    c = FeishuClient(api.url, api.app_id, api.app_secret, "FEISHU_APP_SECRET", timeout=5, clock=lambda: now[0])
    c.get_instance("INST-1")  # the fake grants 7200 s
    # the fake reports the seconds left at the time of the call (7200 or, a second later, 7199): stay clear
    now[0] += 7200 - 310
    c.get_instance("INST-1")
    assert api.calls("token") == 1
    now[0] += 12  # less than 5 minutes left
    c.get_instance("INST-1")
    assert api.calls("token") == 2


def test_wrong_secret_is_fatal_and_names_the_env_variable_not_the_secret(api: FeishuApi) -> None:
    with pytest.raises(Fatal) as info:
        client(api, secret="not-the-secret").get_instance("INST-1")
    assert "10014" in str(info.value) and "$FEISHU_APP_SECRET" in str(info.value)
    assert "not-the-secret" not in str(info.value)


def test_rate_limit_is_backoff_with_the_reset_header(api: FeishuApi) -> None:
    api.throttle(n=1, reset_seconds=3)
    c = client(api)
    with pytest.raises(BackOff) as info:
        c.get_instance("INST-1")
    assert info.value.retry_after == 3.0 and info.value.reason == "rate_limited"
    assert c.get_instance("INST-1")["status"] == "APPROVED"


def test_gateway_errors_are_retryable_and_missing_instances_permanent(api: FeishuApi) -> None:
    c = client(api)
    api.fail_next(502)
    with pytest.raises(Retryable):
        c.get_instance("INST-1")
    with pytest.raises(Permanent) as info:
        c.get_instance("NO-SUCH-INSTANCE")
    assert info.value.reason == "not_found"


def test_subscribe_is_idempotent_and_unknown_definitions_fatal(api: FeishuApi) -> None:
    c = client(api)
    assert c.subscribe("APPROVAL-1") is True
    assert c.subscribe("APPROVAL-1") is False  # 1390007 subscription existed
    assert api.subscribe_answers == [("APPROVAL-1", 0), ("APPROVAL-1", 1390007)]
    with pytest.raises(Fatal, match="NOPE"):
        c.subscribe("NOPE")
    assert api.subscriptions == {"APPROVAL-1"}
