"""The Confluent wire format with fastavro, against the registry; clear errors for bad records."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest
from bizbus.schemas import catalog
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bizbus.serde import AvroSerde, PoisonRecord, RecordInvalid

VOUCHER = "bizbus.finance.Voucher"


@pytest.fixture
def serde(registry) -> AvroSerde:
    return AvroSerde({"url": registry.url})


def test_wire_format_header_and_exact_decimals(serde: AvroSerde) -> None:
    sid = serde.register("bizbus.finance.voucher.v1-value", catalog.load(VOUCHER))
    rec = catalog.sample(VOUCHER)
    data = serde.encode(sid, rec)
    assert data[0] == 0 and struct.unpack(">I", data[1:5])[0] == sid
    assert AvroSerde.schema_id_of(data) == sid
    back = serde.decode(data)
    assert back == rec
    debit = sum((line["debit"] for line in back["lines"]), Decimal(0))
    credit = sum((line["credit"] for line in back["lines"]), Decimal(0))
    assert debit == credit and debit == sum(line["debit"] for line in rec["lines"])


def test_wrong_type_names_the_field(serde: AvroSerde) -> None:
    sid = serde.register("t-value", catalog.load(VOUCHER))
    rec = catalog.sample(VOUCHER)
    rec["currency"] = 156  # a number where the schema says string
    with pytest.raises(RecordInvalid) as err:
        serde.encode(sid, rec)
    assert "currency" in err.value.field and "currency" in str(err.value)


def test_too_many_decimal_places_names_the_field(serde: AvroSerde) -> None:
    sid = serde.register("t-value", catalog.load(VOUCHER))
    rec = catalog.sample(VOUCHER)
    rec["lines"][0]["debit"] = Decimal("10.005")  # scale 2: would lose a fen
    with pytest.raises(RecordInvalid) as err:
        serde.encode(sid, rec)
    assert "lines[0].debit" in str(err.value) and "3 fractional digits but the scale is 2" in str(err.value)


def test_poison_bytes(serde: AvroSerde) -> None:
    with pytest.raises(PoisonRecord, match="too short"):
        serde.decode(b"\x00\x01")
    with pytest.raises(PoisonRecord, match="magic byte"):
        serde.decode(b'{"json": "not avro"}')
    with pytest.raises(PoisonRecord, match="unknown to the registry"):
        serde.decode(b"\x00\x00\x00\x99\x99" + b"\x02")
    sid = serde.register("t-value", catalog.load(VOUCHER))
    good = serde.encode(sid, catalog.sample(VOUCHER))
    with pytest.raises(PoisonRecord, match="does not decode"):
        serde.decode(good[:12])


def test_reads_what_a_standard_client_wrote(serde: AvroSerde, registry) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    ser = AvroSerializer(client, catalog.schema_text(VOUCHER))
    rec = catalog.sample(VOUCHER)
    data = ser(rec, SerializationContext("bizbus.finance.voucher.v1", MessageField.VALUE))
    assert serde.decode(data) == rec


def test_precision_overflow_fastavro_would_write_is_refused(serde: AvroSerde) -> None:
    """fastavro alone writes 12345678901234567 into decimal(18,2) and reads it back wrong."""
    sid = serde.register("t-value", catalog.load(VOUCHER))
    rec = catalog.sample(VOUCHER)
    rec["lines"][1]["credit"] = Decimal("12345678901234567")
    with pytest.raises(RecordInvalid) as err:
        serde.encode(sid, rec)
    assert err.value.field == "lines[1].credit" and "precision is 18" in str(err.value)
