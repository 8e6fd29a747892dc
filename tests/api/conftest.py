import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from domain.application import LastMeter
from tests.conftest import ADMIN
from tests.helpers import client_body


class Api:
    """The FastAPI app under test, with tokens for any role and scope."""

    def __init__(self, client: TestClient):
        self.client = client
        self.app: LastMeter = client.app.state.lastmeter

    def token(self, role: str, org_unit: str | None = None, user: str | None = None, provider: str | None = None) -> dict:
        user = user or f"{role}-{uuid.uuid4().hex[:6]}"
        secret = self.app.issue_token(ADMIN, user, role, org_unit, provider)
        return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    with TestClient(create_app(settings)) as client:
        yield Api(client)


class Desk:
    """A case worker's desk: a token scoped to Licheng (350502) and helpers to open cases."""

    def __init__(self, api):
        self.api = api
        self.http = api.client
        self.user = "li-worker"
        self.auth = api.token("case_worker", "350502", user=self.user)

    def post(self, path: str, json=None, **headers):
        return self.http.post(path, json=json, headers={**self.auth, **headers})

    def get(self, path: str, **params):
        return self.http.get(path, params=params, headers=self.auth)

    def register(self, **overrides) -> dict:
        r = self.post("/v1/clients", client_body(**overrides))
        assert r.status_code == 201, r.text
        return r.json()

    def open(self, kind: str = "certificate", org_unit: str = "350502", **overrides) -> dict:
        client = self.register()
        body = {"kind": kind, "client_id": client["id"], "org_unit": org_unit, "need": "需要办理残疾人证", **overrides}
        r = self.post("/v1/cases", body)
        assert r.status_code == 201, r.text
        case = r.json()
        case["_client"] = client
        case["_position"] = r.headers["x-position"]
        return case


@pytest.fixture
def desk(api) -> Desk:
    return Desk(api)
