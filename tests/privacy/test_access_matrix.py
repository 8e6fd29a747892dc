"""Every endpoint × every role × in scope and out of scope, against the one access matrix.

The routes are read off the application (each declares its action with
`permit`), and what each role may do is read from `api.access.MATRIX`: the
test cannot drift from either.
"""

import uuid
from datetime import timedelta

import pytest
from fastapi.routing import APIRoute

from api.access import MATRIX
from api.app import ROUTERS
from domain.actor import ROLES
from domain.clock import today
from tests.helpers import client_body

SCOPED_PARAMS = ("case_id", "client_id", "contract_id")
ROLE_SCOPES = {  # role → (in scope, out of scope) token arguments; None where a role has no scope
    "case_worker": ({"org_unit": "350502"}, {"org_unit": "350503"}),
    "supervisor": ({"org_unit": "350502"}, {"org_unit": "350503"}),
    "contractor": ({"provider": "ngo-m"}, {"provider": "ngo-x"}),
    "auditor": ({}, None),
    "admin": ({}, None),
}


def route_actions() -> list[tuple[str, str, str]]:
    """(method, path, action) of every route of the API, with the action its permission names."""
    found = []
    for route in (r for router in ROUTERS for r in router.routes):
        if not isinstance(route, APIRoute):
            continue
        actions = [getattr(d.call, "action", None) for d in _all_dependencies(route.dependant)]
        actions = [a for a in actions if a]
        for method in route.methods:
            found.append((method, route.path, actions[0] if actions else None))
    return found


def _all_dependencies(dependant):
    for dep in dependant.dependencies:
        yield dep
        yield from _all_dependencies(dep)


class World:
    """A client, case, contract, delivery and statement in Licheng (350502), referred to ngo-m."""

    def __init__(self, api):
        self.api = api
        self.admin = api.token("admin")
        self.day = today()
        contract = self.post("/v1/contracts", {
            "provider": "ngo-m", "service_kind": "home_care", "unit": "hour", "unit_price": "10.00",
            "budget": "100000.00", "starts_on": str(self.day - timedelta(days=5)),
            "ends_on": str(self.day + timedelta(days=5)), "org_units": ["350502"]})
        self.contract_id = contract["id"]
        self.contractor = api.token("contractor", provider="ngo-m")
        accepted = self.fresh_delivery(self.fresh_case()["id"])  # a statement lists accepted deliveries
        self.post(f"/v1/contracts/{self.contract_id}/deliveries/{accepted}/review", {"accepted": True})
        self.statement_id = self.post(f"/v1/contracts/{self.contract_id}/statements",
                                      {"period": self.day.strftime("%Y-%m")})["id"]

    def post(self, path, body, headers=None):
        r = self.api.client.post(path, json=body, headers=headers or self.admin)
        assert r.status_code in (200, 201), (path, r.text)
        return r.json()

    def fresh_case(self) -> dict:
        client = self.post("/v1/clients", client_body(org_unit="350502"))
        case = self.post("/v1/cases", {"kind": "home_care", "client_id": client["id"], "org_unit": "350502",
                                       "need": "n"})
        self.post(f"/v1/cases/{case['id']}/referral", {"contract_id": self.contract_id})
        return case

    def fresh_delivery(self, case_id: str) -> str:
        return self.post(f"/v1/contracts/{self.contract_id}/deliveries",
                         {"case_id": case_id, "delivered_on": str(self.day), "units": 1,
                          "reference": uuid.uuid4().hex}, self.contractor)["id"]

    def request(self, method: str, path: str) -> tuple[str, dict | None, bytes | None]:
        """A concrete path and a valid body for one route, on fresh objects where it changes them."""
        case = self.fresh_case()
        delivery = self.fresh_delivery(case["id"])
        concrete = (path.replace("{case_id}", case["id"]).replace("{client_id}", case["client_id"])
                    .replace("{contract_id}", self.contract_id).replace("{delivery_id}", delivery)
                    .replace("{statement_id}", self.statement_id).replace("{step}", "assess_care_needs"))
        return concrete, BODIES.get((method, path), {}), self._csv(case["id"]) if path.endswith("/import") else None

    def _csv(self, case_id: str) -> bytes:
        return f"case_id,delivered_on,units,reference\n{case_id},{self.day},1,{uuid.uuid4().hex}\n".encode()


BODIES = {
    ("POST", "/v1/clients"): client_body(org_unit="350502"),
    ("POST", "/v1/clients/{client_id}/erasure"): {"reason": "consent_withdrawn"},
    ("POST", "/v1/cases/{case_id}/assignment"): {"assignee": "someone"},
    ("POST", "/v1/cases/{case_id}/notes"): {"text": "t"},
    ("POST", "/v1/cases/{case_id}/visits"): {"mode": "proxy", "visited_at": "2026-01-05T10:00:00+08:00",
                                             "summary": "s"},
    ("POST", "/v1/cases/{case_id}/steps/{step}"): {"care_level": 2},
    ("POST", "/v1/cases/{case_id}/hold"): {"reason": "r"},
    ("POST", "/v1/cases/{case_id}/resume"): {"reason": "r"},
    ("POST", "/v1/cases/{case_id}/closure"): {"outcome": "withdrawn"},
    ("POST", "/v1/cases/{case_id}/reopening"): {"reason": "r"},
    ("POST", "/v1/contracts/{contract_id}/deliveries/{delivery_id}/review"): {"accepted": True},
    ("POST", "/v1/contracts/{contract_id}/statements"): {"period": "2026-01"},
}


def body_for(world: World, method: str, path: str) -> dict:
    if (method, path) == ("POST", "/v1/cases"):
        client = world.post("/v1/clients", client_body(org_unit="350502"))
        return {"kind": "home_care", "client_id": client["id"], "org_unit": "350502", "need": "n"}
    if (method, path) == ("POST", "/v1/contracts"):
        return {"provider": "ngo-m", "service_kind": "home_care", "unit": "hour", "unit_price": "1.00",
                "budget": "10.00", "starts_on": str(world.day), "ends_on": str(world.day), "org_units": ["350502"]}
    if (method, path) == ("POST", "/v1/cases/{case_id}/referral"):
        other = world.post("/v1/contracts", body_for(world, "POST", "/v1/contracts") | {"budget": "20.00"})
        return {"contract_id": other["id"]}
    if path.endswith("/deliveries") and method == "POST":
        return None  # filled in with the fresh case
    return BODIES.get((method, path), {})


def expected(role: str, action: str, in_scope: bool, path: str, method: str) -> set[int] | str:
    if role not in MATRIX[action]:
        return {403}
    if in_scope:
        return "allowed"
    if any("{" + p + "}" in path for p in SCOPED_PARAMS):
        return {404}
    if method == "POST":  # creating something in an org unit outside the caller's scope
        return {403}
    return "allowed"


def test_every_route_answers_as_the_matrix_says_for_every_role_in_and_out_of_scope(api):
    routes = [(m, p, a) for m, p, a in route_actions() if p.startswith("/v1/")]
    assert len(routes) >= 28 and all(a in MATRIX for _, _, a in routes), routes
    world = World(api)
    mismatches = []
    for role in ROLES:
        for in_scope, scope in zip((True, False), ROLE_SCOPES[role]):
            if scope is None:
                continue
            headers = api.token(role, **scope)
            for method, path, action in routes:
                concrete, body, upload = world.request(method, path)
                if path.endswith("/deliveries") and method == "POST":
                    body = {"case_id": world.fresh_case()["id"],
                            "delivered_on": str(world.day), "units": 1, "reference": uuid.uuid4().hex}
                elif (method, path) not in BODIES:
                    body = body_for(world, method, path)
                if upload is not None:
                    r = api.client.post(concrete, content=upload, headers={**headers, "Content-Type": "text/csv"})
                else:
                    r = api.client.request(method, concrete, json=body if method == "POST" else None,
                                           params={"month": "2026-01"} if "subsidies" in path else None,
                                           headers=headers)
                want = expected(role, action, in_scope, path, method)
                ok = r.status_code not in (401, 403, 404) if want == "allowed" else r.status_code in want
                if not ok:
                    mismatches.append((role, "in" if in_scope else "out", method, path, r.status_code, want,
                                       r.text[:120]))
    assert mismatches == []


@pytest.mark.parametrize("action", sorted(MATRIX))
def test_every_action_in_the_matrix_guards_a_route(api, action):
    assert action in {a for _, _, a in route_actions()}
