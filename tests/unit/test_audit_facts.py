"""An audit row's facts: the stored state as plain JSON values, whichever encoder renders them."""

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import uuid4

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex

from projections.audit import facts


def transcoder() -> JSONTranscoder:
    coder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        coder.register(transcoding)
    return coder


def stored(value: dict) -> str:
    return transcoder().encode(value).decode()


def as_the_json_module_writes(value: dict) -> dict:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def test_ids_moments_and_amounts_become_their_text():
    value = {"case_id": uuid4(), "amount": Decimal("120.50"), "hours": 2, "rate": 1.5, "done": True,
             "due": datetime(2026, 11, 29, 8, 0, 30, 123, tzinfo=timezone(timedelta(hours=8))),
             "items": [{"id": uuid4(), "note": "上门服务"}], "outcome": None}
    shown = facts(transcoder(), stored(value))
    assert shown == as_the_json_module_writes(value)
    assert shown["due"] == "2026-11-29 08:00:30.000123+08:00"  # str() of the moment, as ever


def test_an_integer_beyond_64_bits_is_kept_whole():
    value = {"count": 2 ** 70, "id": uuid4()}
    assert facts(transcoder(), stored(value)) == as_the_json_module_writes(value)
