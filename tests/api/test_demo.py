"""The demo city, as `lastmeter serve --demo` seeds it."""

from api.demo import seed_demo


def test_the_demo_worker_is_assigned_only_cases_they_can_see(api):
    """A case assigned outside its worker's scope drops out of every queue they have, and the
    liaison subsidy pays them for it: the demo is the data people first look at."""
    secrets = {user: secret for user, _, _, secret in seed_demo(api.app)}
    head = api.app.recorder.max_notification_id()
    admin, worker = ({"Authorization": f"Bearer {secrets[user]}"} for user in ("demo-admin", "demo-worker"))
    assigned = api.client.get("/v1/cases", params={"assignee": "demo-worker", "min_position": head, "limit": 500},
                              headers=admin).json()["items"]
    assert assigned
    for case in assigned:
        assert api.client.get(f"/v1/cases/{case['id']}", headers=worker).status_code == 200, case["org_unit"]
    supervisor = {"Authorization": f"Bearer {secrets['demo-supervisor']}"}
    to_hand_out = api.client.get("/v1/cases", params={"unassigned": "true"}, headers=supervisor).json()["items"]
    assert to_hand_out  # in the supervisor's district, outside the worker's street
