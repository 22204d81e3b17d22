"""The DingTalk API client and converter against the contract fake (in-process HTTP, no broker): the access
token is cached, renewed on expiry and when refused; throttling, outages and unknown instances are classified."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from bizbus.connectors.runtime.inbox import InboxRow
from bizbus.connectors.sources.dingtalk.api import DingTalkApi
from bizbus.connectors.sources.dingtalk.config import DingTalkConfig
from bizbus.connectors.sources.dingtalk.convert import DingTalkConverter
from bizbus.connectors.sources.dingtalk.webhook import KIND_INSTANCE

from bizbus.failures import BackOff, Fatal, Permanent, Retryable
from tests.fakes.dingtalk_api import DingTalkApi as FakeApi
from tests.fakes.dingtalk_api import DingTalkCallbackSender

APP_KEY, APP_SECRET = "dingunitapp", "unit-secret"


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    with FakeApi(app_key=APP_KEY, app_secret=APP_SECRET) as api:
        api.add_instance("PI-1", process_code="PROC-PR", originator="E0042", title="采购申请",
                         form={"金额": "1,250.00", "项目编号": "P-9", "数量": 10})  # fmt: skip
        yield api


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(fake: FakeApi, secret: str = APP_SECRET, clock: Clock | None = None) -> DingTalkApi:
    return DingTalkApi(fake.url, APP_KEY, secret, 5.0, clock=clock or Clock())


def test_the_token_is_fetched_once_and_sent_in_the_documented_header(fake: FakeApi) -> None:
    api = client(fake)
    assert api.get_instance("PI-1")["originatorUserId"] == "E0042"
    assert api.get_instance("PI-1")["status"] == "RUNNING"
    assert (fake.token_requests, api.token_fetches) == (1, 1)
    assert fake.instance_requests == [("PI-1", 200), ("PI-1", 200)]


def test_the_token_is_renewed_shortly_before_it_expires(fake: FakeApi) -> None:
    clock = Clock()
    api = client(fake, clock=clock)
    api.get_instance("PI-1")
    clock.now += 7200 - 300 - 1  # expireIn 7200 s, renewed 300 s early
    api.get_instance("PI-1")
    assert fake.token_requests == 1
    clock.now += 2
    api.get_instance("PI-1")
    assert fake.token_requests == 2


def test_a_refused_token_is_renewed_once(fake: FakeApi) -> None:
    api = client(fake)
    api.get_instance("PI-1")
    fake.expire_tokens()  # DingTalk no longer knows the cached token
    assert api.get_instance("PI-1")["title"] == "采购申请"
    assert fake.token_requests == 2
    assert [s for _, s in fake.instance_requests] == [200, 400, 200]


def test_a_token_refused_again_right_after_renewal_is_fatal(fake: FakeApi) -> None:
    fake.expire_in = 0  # every token handed out is already invalid
    with pytest.raises(Fatal) as err:
        client(fake).get_instance("PI-1")
    assert err.value.reason == "auth" and "InvalidAuthentication" in str(err.value)
    assert fake.token_requests == 2


def test_wrong_app_secret_is_fatal(fake: FakeApi) -> None:
    with pytest.raises(Fatal) as err:
        client(fake, secret="wrong").get_instance("PI-1")
    assert "invalidClientIdOrSecret" in str(err.value)
    assert fake.instance_requests == []


@pytest.mark.parametrize("status", [403, 429])
def test_throttling_is_a_back_off_and_the_next_call_succeeds(fake: FakeApi, status: int) -> None:
    api = client(fake)
    fake.throttle(1, status=status)
    with pytest.raises(BackOff) as err:
        api.get_instance("PI-1")
    assert err.value.reason == "throttled" and err.value.retry_after == 1.0
    assert api.get_instance("PI-1")["status"] == "RUNNING"


def test_outage_is_retryable_and_unknown_instance_is_permanent(fake: FakeApi) -> None:
    api = client(fake)
    fake.fail_next(1, status=500)
    with pytest.raises(Retryable) as err:
        api.get_instance("PI-1")
    assert err.value.reason == "http_5xx"
    with pytest.raises(Permanent) as gone:
        api.get_instance("PI-404")
    assert gone.value.reason == "unknown_instance"


def row(event: dict) -> InboxRow:
    return InboxRow(1, "d1", KIND_INSTANCE, event, None, "webhook", datetime.now(UTC))


def test_converter_reads_the_form_and_delete_needs_no_read(
    fake: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = DingTalkConfig(token_env="T", aes_key_env="A", app_key=APP_KEY, app_secret_env="S",
                         api_base_url=fake.url, amount_field="金额", project_field="项目编号")  # fmt: skip
    conv = DingTalkConverter(cfg, APP_SECRET)
    conv.setup()
    sender = DingTalkCallbackSender("http://unused", "t", "a" * 43, "corp", api=fake)
    try:
        fake.finish("PI-1", "agree")
        [ev] = conv.convert(row(sender.instance_event("PI-1", "PROC-PR", "finish", "agree")))
        v = ev.value
        assert (v["status"], v["amount"], v["project"], v["applicant"]) == ("APPROVED", 1250, "P-9", "E0042")
        assert v["form_fields"] == {"金额": "1,250.00", "项目编号": "P-9", "数量": "10"}
        requests = len(fake.instance_requests)
        [gone] = conv.convert(row(sender.instance_event("PI-1", "PROC-PR", "delete")))
        assert gone.value["status"] == "CANCELLED" and len(fake.instance_requests) == requests
        assert conv.convert(row(sender.instance_event("PI-1", "PROC-PR", "finish", "redirect"))) == []
    finally:
        conv.close()
