"""Feishu event encryption and signature (connectors/sources/feishu/webhook.py), against Feishu's documented
example and an independent encryptor (tests/fakes/feishu_api.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from bizbus.connectors.sources.feishu.webhook import decrypt, signature

from tests.fakes.feishu_api import feishu_encrypt

SAMPLES = Path(__file__).resolve().parents[1] / "contract" / "samples" / "feishu"


def test_documented_example_decrypts_to_hello_world() -> None:
    sample = json.loads((SAMPLES / "encrypted_hello_world.json").read_text(encoding="utf-8"))
    assert decrypt(sample["encrypt_key"], sample["body"]["encrypt"]) == sample["plaintext"].encode()


def test_round_trip_with_an_independent_encryptor_keeps_unicode_json() -> None:
    plaintext = json.dumps({"approval_name": "采购申请", "amount": "1234.56"}, ensure_ascii=False).encode()
    for size in (0, 1, 15, 16, 17, 1000):  # PKCS#7 pads whole blocks too
        data = plaintext + b" " * size
        assert decrypt("s3cret-key", feishu_encrypt("s3cret-key", data)) == data


@pytest.mark.parametrize(
    "encrypted",
    [
        "not base64 at all!",
        "P37w+VZImNgPEO1RBhJ6Rt==",  # shorter than IV + one block
        "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghkA",  # not whole blocks
    ],
)
def test_garbage_is_a_value_error(encrypted: str) -> None:
    with pytest.raises(ValueError):
        decrypt("test key", encrypted)


def test_wrong_key_does_not_yield_the_plaintext() -> None:
    encrypted = feishu_encrypt("right key", b'{"schema":"2.0"}')
    try:
        plain = decrypt("wrong key", encrypted)
    except ValueError:
        return  # bad padding: the usual outcome
    assert plain != b'{"schema":"2.0"}'  # the rare valid padding still gives garbage


def test_signature_is_sha256_of_timestamp_nonce_key_body_in_that_order() -> None:
    body = b'{"encrypt":"abc"}'
    expected = hashlib.sha256(b"1666079207" + b"82741" + b"my-encrypt-key" + body).hexdigest()
    assert signature("1666079207", "82741", "my-encrypt-key", body) == expected
    assert signature("82741", "1666079207", "my-encrypt-key", body) != expected
    assert signature("1666079207", "82741", "my-encrypt-key", body + b" ") != expected
