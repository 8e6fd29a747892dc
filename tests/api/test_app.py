"""What /openapi.json tells a client developer: how to authenticate, and the headers commands take."""

from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings


def test_routes_declare_the_bearer_scheme_and_the_command_headers(tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'lastmeter.db'}"))
    spec = TestClient(app).get("/openapi.json").json()  # no lifespan: the spec needs no store
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    note = spec["paths"]["/v1/cases/{case_id}/notes"]["post"]
    assert note["security"] == [{"bearer": []}]
    assert {(p["name"], p["in"]) for p in note["parameters"]} >= {("idempotency-key", "header"), ("if-match", "header")}
    register = spec["paths"]["/v1/clients"]["post"]
    assert ("idempotency-key", "header") in {(p["name"], p["in"]) for p in register["parameters"]}
    assert "security" not in spec["paths"]["/healthz"]["get"]
