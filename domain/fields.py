"""Declared payload fields and their validation.

A kind's step declares its payload as fields; a field says what a valid value
is and whether it is personal (about the person, so encrypted per person and
erased with them). Validation turns raw JSON values into the values an event
records, or raises InvalidInput naming the field.
"""

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.clock import EARLIEST_DAY, LATEST_DAY, check_day, check_moment, read_day, today
from domain.errors import InvalidInput

_MONEY = re.compile(r"[0-9]{1,9}(\.[0-9]{1,2})?")


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    description: str
    required: bool = True
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = 2000
    personal: bool = False
    past: bool = False  # a day of something that happened (a session held), not a plan: not after today

    def describe(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "required": self.required,
            "personal": self.personal,
        }
        if self.choices:
            spec["choices"] = list(self.choices)
        if self.minimum is not None:
            spec["minimum"] = self.minimum
        if self.maximum is not None:
            spec["maximum"] = self.maximum
        if self.type == "text":
            spec["max_length"] = self.max_length
        if self.type in ("date", "datetime"):
            spec["earliest"], spec["latest"] = EARLIEST_DAY.isoformat(), LATEST_DAY.isoformat()
            spec["past"] = self.past  # and then not after today, in Asia/Shanghai
        return spec

    def parse(self, value: Any) -> Any:
        return _PARSERS[self.type](self, value, self.name)


def parse_payload(fields: tuple[Field, ...], payload: Any) -> dict[str, Any]:
    """Checks a payload against its fields; returns the parsed values."""
    if not isinstance(payload, dict):
        raise InvalidInput("body", "must be a JSON object")
    names = {f.name for f in fields}
    for key in payload:
        if key not in names:
            raise InvalidInput(key, "is not a field of this step")
    parsed = {}
    for f in fields:
        if payload.get(f.name) is None:
            if f.required:
                raise InvalidInput(f.name, "is required")
            continue
        parsed[f.name] = f.parse(payload[f.name])
    return parsed


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(field: str, value: Any, max_length: int) -> str:
    """Free text as people write it: non-empty, printable, valid Unicode, bounded."""
    if not isinstance(value, str) or not _shows_something(value):
        raise InvalidInput(field, "must be a non-empty string")
    if len(value) > max_length:
        raise InvalidInput(field, f"must be at most {max_length} characters")
    if _CONTROL.search(value):
        raise InvalidInput(field, "must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "must be valid Unicode text") from None
    return value.strip()


def _shows_something(text: str) -> bool:
    """Not spaces and format characters alone: str.strip() keeps U+200B (zero-width space), U+2060 and
    U+FEFF, which show nothing either."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)


def parse_text(f: Field, value: Any, path: str) -> str:
    return clean_text(path, value, f.max_length)


def parse_date(f: Field, value: Any, path: str) -> str:
    """A day; with `past` (something that happened), not after today in Shanghai, as a visit is not in the future."""
    day = check_day(path, read_day(path, value))
    if f.past and day > today():
        raise InvalidInput(path, "must not be after today (days are in Asia/Shanghai)")
    return day.isoformat()


def parse_datetime(_: Field, value: Any, path: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidInput(path, "must be an ISO 8601 date-time with an offset") from None
    if moment.tzinfo is None:
        raise InvalidInput(path, "must carry a UTC offset, e.g. +08:00")
    if moment.utcoffset() % timedelta(minutes=1):  # Python reads +00:00:01; ISO 8601 has hours and minutes
        raise InvalidInput(path, "must carry an offset in hours and minutes, e.g. +08:00")
    check_moment(path, moment)  # its day in Shanghai, as a visit's: not the day where it was sent from
    return moment.isoformat()


def parse_choice(f: Field, value: Any, path: str) -> str:
    if value not in f.choices:
        raise InvalidInput(path, f"must be one of {', '.join(f.choices)}")
    return value


def parse_integer(f: Field, value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(path, "must be a whole number")
    if f.minimum is not None and value < f.minimum:
        raise InvalidInput(path, f"must be at least {f.minimum}")
    if f.maximum is not None and value > f.maximum:
        raise InvalidInput(path, f"must be at most {f.maximum}")
    return value


def parse_money(_: Field, value: Any, path: str) -> str:
    """Yuan as a decimal string with at most two places, never a float."""
    if not isinstance(value, str) or not _MONEY.fullmatch(value):
        raise InvalidInput(path, 'must be yuan as a decimal string, e.g. "1200.00"')
    try:
        return str(Decimal(value).quantize(Decimal("0.01")))
    except InvalidOperation:
        raise InvalidInput(path, "is not a valid amount") from None


def parse_boolean(_: Field, value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(path, "must be true or false")
    return value


def parse_certificate_number(_: Field, value: Any, path: str) -> str:
    """An ID number's check character X in either case, as registration takes it; kept upper case."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{17}[0-9Xx][0-9]{2}", value):
        raise InvalidInput(path, "must be the 18-character ID number followed by two digits")
    return value.upper()


_PARSERS = {
    "text": parse_text,
    "date": parse_date,
    "datetime": parse_datetime,
    "choice": parse_choice,
    "integer": parse_integer,
    "money": parse_money,
    "boolean": parse_boolean,
    "certificate_number": parse_certificate_number,
}
FIELD_TYPES = tuple(_PARSERS)
