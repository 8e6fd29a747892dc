"""The person served (client): the identity a case needs, and nothing else; and the two records
kept about persons beside them: a read of their personal data (Disclosure) and the turns that
registrations of one ID-number lot take (RegistrationTurns).

All of a client's identity is personal data; it lives in the `personal`
field of the client's events so that it can be encrypted with the person's
own key and erased with it.
"""

import re
from datetime import date
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate

from domain.actor import Actor
from domain.clock import today
from domain.errors import CommandRefused, InvalidInput
from domain.fields import clean_text

# The grounds for deletion of PIPL art. 47: a code, never free text (free text could name the person).
ERASURE_GROUNDS = ("purpose_achieved", "service_ended", "consent_withdrawn", "retention_expired",
                   "unlawful_processing", "other_lawful_ground")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_PHONE = re.compile(r"(\+?86)?1[0-9]{10}|0[0-9]{2,3}-?[0-9]{7,8}")


def id_number_check_digit(first17: str) -> str:
    """The GB 11643 check character of a resident ID number's first 17 digits."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS)) % 11]


def check_id_number(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{17}[0-9Xx]", value):
        raise InvalidInput("id_number", "must be an 18-character resident ID number")
    value = value.upper()
    if id_number_check_digit(value[:17]) != value[17]:
        raise InvalidInput("id_number", "the check digit (GB 11643) is wrong")
    if value[0] == "0":  # a province's region code (11 to 82), or 9 on a foreigner's permanent residence card
        raise InvalidInput("id_number", "its first digit is 0, which no region code or card number begins with")
    if birth_date_of(value) is None:
        raise InvalidInput("id_number", "its digits 7 to 14 are not a birth date from 1800 to today (YYYYMMDD)")
    return value


def birth_date_of(id_number: str) -> date | None:
    """The day digits 7 to 14 of an ID number give, if they are one from 1800 to today."""
    try:
        born = date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
    except ValueError:
        return None
    return born if date(1800, 1, 1) <= born <= today() else None


def is_id_number(text: str) -> bool:
    """Whether `text` (upper case) is a resident ID number: 18 characters, whose check digit is right,
    first digit a region's and birth date one that can be."""
    return (len(text) == 18 and text[0] != "0" and text[:17].isdigit() and id_number_check_digit(text[:17]) == text[17]
            and birth_date_of(text) is not None)


def check_phone(value: Any) -> str:
    if not isinstance(value, str) or not _PHONE.fullmatch(value.replace(" ", "")):
        raise InvalidInput("phone", "must be a mainland mobile (11 digits) or landline number")
    return value.replace(" ", "")


class Client(Aggregate):
    class ClientRegistered(Aggregate.Created):
        actor: dict
        org_unit: str
        personal: dict

    class ClientErased(Aggregate.Event):
        """The person's data was erased on lawful request (PIPL): their key is destroyed."""

        actor: dict
        reason: str

        def apply(self, client: "Client") -> None:
            client.erased = True
            client.personal = {name: None for name in client.personal}

    def __init__(self, actor: dict, org_unit: str, personal: dict):
        self.org_unit = org_unit
        self.personal = personal
        self.registered_by = actor["user"]
        self.erased = False

    @classmethod
    def register(
        cls, actor: Actor, name: str, id_number: str, phone: str, org_unit: str, address: str | None = None,
        client_id: UUID | None = None,
    ) -> "Client":
        personal = {
            "name": clean_text("name", name, 100),
            "id_number": check_id_number(id_number),
            "phone": check_phone(phone),
        }
        if address is not None:
            personal["address"] = clean_text("address", address, 300)
        return cls._create(cls.ClientRegistered, id=client_id or uuid4(), actor=actor.as_dict(), org_unit=org_unit,
                           personal=personal)

    def erase(self, actor: Actor, reason: str) -> None:
        if reason not in ERASURE_GROUNDS:
            raise InvalidInput("reason", f"must be one of the lawful grounds {', '.join(ERASURE_GROUNDS)}")
        if self.erased:
            raise CommandRefused("the person's data is already erased")
        self.trigger_event(self.ClientErased, actor=actor.as_dict(), reason=reason)

    @property
    def id_number(self) -> str | None:
        return self.personal.get("id_number")


class Disclosure(Aggregate):
    """One read of a person's personal values, by whom, of what: the audit trail of disclosures."""

    class PersonalDataRead(Aggregate.Created):
        actor: dict
        person: UUID
        resource: str
        resource_id: UUID

    def __init__(self, actor: dict, person: UUID, resource: str, resource_id: UUID):
        self.person = person

    @classmethod
    def record(cls, actor: Actor, person: UUID, resource: str, resource_id: UUID) -> "Disclosure":
        return cls._create(cls.PersonalDataRead, actor=actor.as_dict(), person=person, resource=resource,
                           resource_id=resource_id)


class RegistrationTurns(Aggregate):
    """Registrations of the ID numbers whose fingerprints begin alike (one of 256 lots), one at a time.

    A registration takes a turn (the next version of its lot; the first opens the lot), then looks for
    the person under their number, and saves the turn with the person: two registrations of one
    number at once cannot both be saved, and the one that loses the race looks again and finds the
    other. A turn records who took it (the audit search names every event's actor), and nothing of
    the person: neither their number nor who they are; a lot holds a 256th of all numbers, so which
    lot a number falls in tells nothing either.
    """

    class Opened(Aggregate.Created):
        actor: dict

    class Taken(Aggregate.Event):
        actor: dict

    def __init__(self, actor: dict):
        pass  # a lot keeps no state: its version is what registrations take turns on

    @staticmethod
    def id_for(lot: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"lastmeter:registration-turns:{lot}")

    @classmethod
    def open(cls, actor: Actor, lot: str) -> "RegistrationTurns":
        return cls._create(cls.Opened, id=cls.id_for(lot), actor=actor.as_dict())

    def take(self, actor: Actor) -> None:
        self.trigger_event(self.Taken, actor=actor.as_dict())
