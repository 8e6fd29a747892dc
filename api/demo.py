"""A synthetic city for trying lastmeter: townships, villages, people, cases, tokens."""

import random
from datetime import datetime, timedelta, timezone

from domain.actor import Actor
from domain.application import LastMeter
from domain.client import id_number_check_digit
from domain.kinds import KINDS
from domain.orgs import BUILT_IN, OrgUnit

SEEDER = Actor("demo-seeder", "admin")
TOWNSHIPS_PER_COUNTY = 3
VILLAGES_PER_TOWNSHIP = 4
SURNAMES = "陈林黄张吴王李蔡郑许"
GIVEN = ("秀英", "志强", "丽华", "建国", "美玲", "伟", "芳", "明", "婷婷", "海峰")

SUPERVISED, WORKER_TOWNSHIP = "350502", "350502001"
DEMO_TOKENS = (
    ("demo-admin", "admin", None),
    ("demo-supervisor", "supervisor", SUPERVISED),
    ("demo-worker", "case_worker", WORKER_TOWNSHIP),
    ("demo-auditor", "auditor", None),
)


def demo_units(townships: int = TOWNSHIPS_PER_COUNTY, villages: int = VILLAGES_PER_TOWNSHIP) -> list[OrgUnit]:
    """Synthetic streets under every county, and communities under every street."""
    units = []
    for county, county_name, kind in BUILT_IN:
        if kind != "county":
            continue
        for t in range(1, townships + 1):
            township = f"{county}{t:03d}"
            units.append(OrgUnit(township, f"{county_name}第{t}街道", "township"))
            for v in range(1, villages + 1):
                units.append(OrgUnit(f"{township}{v:03d}", f"{county_name}{t}街道第{v}社区", "community"))
    return units


def synthetic_id_number(rng: random.Random, region: str) -> str:
    born = datetime(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 60))
    first17 = f"{region[:6]}{born:%Y%m%d}{rng.randrange(0, 1000):03d}"
    return first17 + id_number_check_digit(first17)


def seed_demo(app: LastMeter, clients: int = 24) -> list[tuple[str, str, str | None, str]] | None:
    """Seeds the demo city once; returns the new tokens, or None if it was seeded before."""
    units = demo_units()
    if units[0].code in app.org_tree(refresh=True):
        return None
    app.add_org_units(SEEDER, units)
    rng = random.Random(2024)
    villages = [u.code for u in units if u.kind == "community"]
    # the supervisor's district first (the worker's street among it), then a sample of the city
    villages = [v for v in villages if v.startswith(SUPERVISED)] + rng.sample(villages, 8)
    for i in range(clients):
        _seed_person(app, rng, villages[i % len(villages)])
    tokens = []
    for user, role, org_unit in DEMO_TOKENS:
        tokens.append((user, role, org_unit, app.issue_token(SEEDER, user, role, org_unit)))
    return tokens


def _seed_person(app: LastMeter, rng: random.Random, village: str) -> None:
    name = rng.choice(SURNAMES) + rng.choice(GIVEN)
    phone = f"13{rng.randrange(0, 10**9):09d}"
    client = app.register_client(
        SEEDER, None, name=name, id_number=synthetic_id_number(rng, village), phone=phone,
        org_unit=village, address=f"{village}号院",
    )
    kind = rng.choice(list(KINDS))
    case = app.open_case(SEEDER, None, client_id=client.id, org_unit=village, kind=kind,
                         need="基本状况调查登记的需求", service_mode="door_to_door")
    if village.startswith(WORKER_TOWNSHIP):  # elsewhere unassigned, for a supervisor to hand out
        app.update_case(None, case.id, None, lambda c: c.assign(SEEDER, "demo-worker"))
    first = KINDS[kind].steps[0]
    if not first.fields and rng.random() < 0.7:
        app.take_step(SEEDER, None, case.id, None, first.name, {})
    if rng.random() < 0.5:
        visited = datetime.now(timezone.utc) - timedelta(days=rng.randrange(1, 20))
        app.update_case(None, case.id, None,
                        lambda c: c.record_visit(SEEDER, "door_to_door", visited, "入户走访，了解需求"))
