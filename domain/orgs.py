"""The org tree: city → county/district → township/street → village/community.

Units are identified by China's statistical division codes (统计用区划代码):
6 digits for the city and its counties/districts, 9 for a township or street,
12 for a village, community, or an enterprise/cooperative association under
its township. The tree is reference data kept as events of one registry
aggregate, so every unit added is on the audit trail.
"""

import re
from dataclasses import dataclass
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.actor import Actor
from domain.errors import InvalidInput
from domain.fields import clean_text

CITY = "350500"
UNIT_KINDS = ("city", "county", "township", "village", "community", "enterprise", "cooperative")

# Quanzhou's city and county-level units are built in.
BUILT_IN = (
    (CITY, "泉州市", "city"),
    ("350502", "鲤城区", "county"),
    ("350503", "丰泽区", "county"),
    ("350504", "洛江区", "county"),
    ("350505", "泉港区", "county"),
    ("350521", "惠安县", "county"),
    ("350524", "安溪县", "county"),
    ("350525", "永春县", "county"),
    ("350526", "德化县", "county"),
    ("350581", "石狮市", "county"),
    ("350582", "晋江市", "county"),
    ("350583", "南安市", "county"),
    ("350590", "台商投资区", "county"),
)

_CODE = re.compile(r"[0-9]{6}([0-9]{3}){0,2}")


@dataclass(frozen=True)
class OrgUnit:
    code: str
    name: str
    kind: str

    @property
    def parent(self) -> str | None:
        return parent_of(self.code)


def parent_of(code: str) -> str | None:
    """The code of the unit directly above, from the code's own digits."""
    if code == CITY:
        return None
    if len(code) == 6:
        return CITY
    return code[: len(code) - 3]


def depth_of(code: str) -> int:
    """How far below the city a unit is, by its parents: the city 0, a county 1, a township 2
    (1 for a township directly under the city, e.g. 350500001), a village 3."""
    depth, parent = 0, parent_of(code)
    while parent is not None:
        depth, parent = depth + 1, parent_of(parent)
    return depth


def check_code(field: str, code: str) -> str:
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise InvalidInput(field, "must be a 6, 9 or 12 digit statistical division code")
    if not code.startswith(code_prefix(CITY)):
        raise InvalidInput(field, f"{code} is not a unit of the city {CITY}: codes start {code_prefix(CITY)}")
    return code


def code_prefix(code: str) -> str:
    """The digits every code at or below `code` starts with (the city 350500 → 3505)."""
    return code[:4] if code == CITY else code


class OrgTree:
    """A read-only view of the units, answering scope questions."""

    def __init__(self, units: dict[str, OrgUnit]):
        self._units = units

    def __contains__(self, code: object) -> bool:
        return code in self._units

    def __iter__(self):
        return iter(sorted(self._units.values(), key=lambda u: u.code))

    def __len__(self) -> int:
        return len(self._units)

    def get(self, code: str) -> OrgUnit | None:
        return self._units.get(code)

    def covers(self, scope: str | None, code: str) -> bool:
        """Whether a scope (a unit code; None for everything) covers `code`: a code carries every
        code above it in its digits."""
        return scope is None or (_CODE.fullmatch(scope) is not None and code.startswith(code_prefix(scope)))


class OrgRegistry(Aggregate):
    """The one aggregate that holds the org tree's units."""

    ID: UUID = uuid5(NAMESPACE_URL, "lastmeter:org-registry")

    class Created(Aggregate.Created):
        units: list

    class UnitsAdded(Aggregate.Event):
        actor: dict
        units: list

        def apply(self, registry: "OrgRegistry") -> None:
            registry._add(self.units)

    def __init__(self, units: list):
        self.units: dict[str, OrgUnit] = {}
        self._add(units)

    @classmethod
    def founded(cls) -> "OrgRegistry":
        return cls._create(
            cls.Created, id=cls.ID, units=[{"code": c, "name": n, "kind": k} for c, n, k in BUILT_IN]
        )

    def _add(self, units: list) -> None:
        for unit in units:
            self.units[unit["code"]] = OrgUnit(unit["code"], unit["name"], unit["kind"])

    def add_units(self, units: list[OrgUnit], actor: Actor) -> int:
        """Adds units not yet known (parents first); returns how many were new."""
        known = set(self.units)
        new = []
        for i, unit in enumerate(units):
            check_code(f"units[{i}].code", unit.code)
        for i in sorted(range(len(units)), key=lambda i: len(units[i].code)):
            unit, field = units[i], f"units[{i}]"
            if unit.code in known:
                continue
            if unit.kind not in UNIT_KINDS:
                raise InvalidInput(f"{field}.kind", f"must be one of {', '.join(UNIT_KINDS)}")
            if not isinstance(unit.name, str) or not unit.name.strip():
                raise InvalidInput(f"{field}.name", "must not be empty")
            if unit.parent not in known:
                raise InvalidInput(f"{field}.code", f"its parent {unit.parent} is not known")
            known.add(unit.code)
            new.append({"code": unit.code, "name": clean_text(f"{field}.name", unit.name, 100), "kind": unit.kind})
        if new:
            self.trigger_event(self.UnitsAdded, actor=actor.as_dict(), units=new)
        return len(new)

    def tree(self) -> OrgTree:
        return OrgTree(dict(self.units))
