"""DingTalk callback crypto: the documented test vector, the 32-byte padding, the owner-key suffix, the
signature and the encrypted "success" answer (pure functions, no I/O)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from bizbus.connectors.sources.dingtalk.webhook import (
    CryptoError,
    aes_key_bytes,
    callback_signature,
    decrypt_message,
    encrypt_message,
    encrypted_reply,
    timestamp_seconds,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

VECTOR = json.loads(
    (Path(__file__).parents[1] / "contract/samples/dingtalk/callback_faq_vector.json").read_text()
)
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
KEY = aes_key_bytes(AES_KEY)


def test_the_documented_vector_verifies_and_decrypts_to_success() -> None:
    v = VECTOR
    assert callback_signature(v["token"], v["timestamp"], v["nonce"], v["encrypt"]) == v["msg_signature"]
    assert decrypt_message(aes_key_bytes(v["aes_key"]), v["encrypt"]) == (v["plaintext"], v["owner_key"])


def test_signature_sorts_the_four_strings_before_hashing() -> None:
    sig = callback_signature("tok", "1700000000000", "nonce", "ENC")
    assert sig == callback_signature("tok", "1700000000000", "nonce", "ENC")
    assert len(sig) == 40
    assert sig == hashlib.sha1("".join(sorted(["tok", "1700000000000", "nonce", "ENC"])).encode()).hexdigest()
    assert sig != callback_signature("tok2", "1700000000000", "nonce", "ENC")


def test_key_is_base64_of_the_43_characters_plus_padding() -> None:
    assert len(KEY) == 32
    assert base64.b64decode(AES_KEY + "=") == KEY
    with pytest.raises(ValueError, match="43 characters"):
        aes_key_bytes(AES_KEY[:-1])


@pytest.mark.parametrize("message", ["", "success", '{"EventType":"check_url"}', "审批" * 40])
def test_round_trip_pads_to_a_multiple_of_32_with_the_documented_layout(message: str) -> None:
    enc = encrypt_message(KEY, message, "dingcorp", random=b"R" * 16)
    raw = base64.b64decode(enc)
    assert len(raw) % 32 == 0
    dec = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).decryptor()
    plain = dec.update(raw) + dec.finalize()
    pad = plain[-1]
    assert 1 <= pad <= 32 and plain[-pad:] == bytes([pad]) * pad
    body = message.encode()
    assert plain[:-pad] == b"R" * 16 + len(body).to_bytes(4, "big") + body + b"dingcorp"
    assert decrypt_message(KEY, enc) == (message, "dingcorp")


def test_random_prefix_makes_every_encryption_different() -> None:
    assert encrypt_message(KEY, "success", "c") != encrypt_message(KEY, "success", "c")


@pytest.mark.parametrize(
    "encrypt, problem",
    [
        ("not base64 !!", "base64"),
        (base64.b64encode(b"x" * 20).decode(), "multiple"),
        ("another key", "padding"),  # encrypted at run time: a random prefix, so not a stable test id
    ],
    ids=["base64", "multiple", "padding"],
)
def test_undecryptable_payloads_raise_crypto_error(encrypt: str, problem: str) -> None:
    if encrypt == "another key":
        encrypt = encrypt_message(aes_key_bytes("Z" * 43), "success", "c")
    with pytest.raises(CryptoError, match=problem):
        decrypt_message(KEY, encrypt)


def test_a_length_field_beyond_the_plaintext_is_refused() -> None:
    plain = b"R" * 16 + (999).to_bytes(4, "big") + b"short"
    pad = 32 - len(plain) % 32
    enc = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).encryptor()
    raw = enc.update(plain + bytes([pad]) * pad) + enc.finalize()
    with pytest.raises(CryptoError, match="length"):
        decrypt_message(KEY, base64.b64encode(raw).decode())


def test_the_reply_is_the_signed_encrypted_success() -> None:
    reply = encrypted_reply("tok", KEY, "dingapp")
    assert set(reply) == {"msg_signature", "timeStamp", "nonce", "encrypt"}
    assert reply["msg_signature"] == callback_signature(
        "tok", reply["timeStamp"], reply["nonce"], reply["encrypt"]
    )
    assert decrypt_message(KEY, reply["encrypt"]) == ("success", "dingapp")
    assert len(reply["timeStamp"]) == 13  # ms, as DingTalk's own libraries answer


def test_timestamps_in_ms_and_in_seconds() -> None:
    assert timestamp_seconds("1614767836") == 1614767836.0
    assert timestamp_seconds("1445827045067") == pytest.approx(1445827045.067)
    with pytest.raises(ValueError):
        timestamp_seconds("yesterday")
