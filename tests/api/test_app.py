"""The app as assembled: what /openapi.json tells a client developer, and how `serve` runs it."""

import asyncio
import io
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from api.app import create_app
from api.bodylimit import JSON_BODY, BodyLimit
from api.logs import WITHOUT_MESSAGES
from api.render import Json
from api.settings import Settings
from api.spreadsheet import XLSX


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


def test_errors_are_described_as_problems_and_writes_by_their_headers(tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'lastmeter.db'}"))
    spec = TestClient(app).get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail"]
    note = spec["paths"]["/v1/cases/{case_id}/notes"]["post"]["responses"]
    assert set(note) == {"200", "401", "403", "404", "409", "412", "413", "422", "503"}
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    assert "503" in spec["paths"]["/v1/workload"]["get"]["responses"]  # min_position: the views may lag
    assert "503" in spec["paths"]["/v1/cases/{case_id}"]["get"]["responses"]  # the store may not answer
    assert "503" not in spec["paths"]["/healthz"]["get"]["responses"]
    assert "413" in spec["paths"]["/v1/contracts/{contract_id}/deliveries/import"]["post"]["responses"]
    assert "413" not in spec["paths"]["/v1/cases/{case_id}"]["get"]["responses"]
    assert note["422"]["content"] == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert {"ETag", "X-Position", "Idempotent-Replayed"} <= set(note["200"]["headers"])
    assert "Location" in spec["paths"]["/v1/cases"]["post"]["responses"]["201"]["headers"]
    imported = spec["paths"]["/v1/contracts/{contract_id}/deliveries/import"]["post"]["requestBody"]["content"]
    assert {"text/csv", "multipart/form-data"} <= set(imported)
    assert set(spec["paths"]["/healthz"]["get"]["responses"]) == {"200"}
    listed = spec["paths"]["/v1/cases"]["get"]["responses"]["200"]
    assert {"application/json", "text/csv", XLSX} <= set(listed["content"]) and "X-Next-Cursor" in listed["headers"]
    assert set(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    for everyones in ("/v1/case-kinds", "/v1/org-units", "/v1/projections"):  # no role is refused these
        assert {"401", "422"} <= set(spec["paths"][everyones]["get"]["responses"]) and \
            "403" not in spec["paths"][everyones]["get"]["responses"], everyones


def test_the_served_app_settles_its_heap_at_startup_and_a_test_app_does_not(tmp_path):
    # In a process of its own: what is frozen stays frozen for the life of the process.
    code = textwrap.dedent("""
        import gc
        from fastapi.testclient import TestClient
        from api.app import GC_THRESHOLDS, create_app, serving_app
        with TestClient(create_app()):
            assert gc.get_freeze_count() == 0 and gc.get_threshold() != GC_THRESHOLDS
        with TestClient(serving_app()):
            assert gc.get_freeze_count() > 50_000, gc.get_freeze_count()
            assert gc.get_threshold() == GC_THRESHOLDS
        import logging
        from api.logs import WITHOUT_MESSAGES
        assert WITHOUT_MESSAGES in logging.getLogger("uvicorn.error").filters  # see the test below
    """)
    env = {**os.environ, "LASTMETER_DATABASE_URL": f"sqlite:///{tmp_path / 'lastmeter.db'}", "LASTMETER_MASTER_KEY": ""}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_server_error_is_logged_again_with_its_traceback_and_without_any_message():
    """Starlette re-raises what server_fault answered, and uvicorn logged it with its message (and
    those it chained), which may carry an identifier or a personal value."""
    logger, out = logging.getLogger("test.without-messages"), io.StringIO()
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    logger.addFilter(WITHOUT_MESSAGES)
    number, who = "350502197506121435", "林晓 13800000000"  # a traceback shows the lines that raised
    try:
        try:
            try:
                raise KeyError(number)
            except KeyError as error:
                raise ValueError(who) from error
        except ValueError:
            logger.exception("Exception in ASGI application")
    finally:
        logger.removeHandler(handler)
    logged = out.getvalue()
    assert "350502197506121435" not in logged and "13800000000" not in logged and "林晓" not in logged
    assert "builtins.KeyError (message withheld)" in logged and "builtins.ValueError (message withheld)" in logged
    assert logged.index("KeyError") < logged.index("ValueError") and "test_app.py" in logged
    looped = ValueError(who)
    looped.__cause__ = KeyError(number)
    looped.__cause__.__cause__ = looped  # a chain made by hand may loop back
    record = logging.LogRecord("test", logging.ERROR, __file__, 1, "failed", None, (ValueError, looped, None))
    assert WITHOUT_MESSAGES.filter(record) and record.exc_text.count("message withheld") == 2
    itself = ValueError(who)
    itself.__cause__ = itself
    deep = None
    for _ in range(3000):  # deeper than the interpreter's recursion
        cause, deep = deep, ValueError(who)
        deep.__context__ = cause
    for exc, told in ((itself, 1), (deep, 3000)):
        record = logging.LogRecord("test", logging.ERROR, __file__, 1, "failed", None, (type(exc), exc, None))
        assert WITHOUT_MESSAGES.filter(record) and record.exc_text.count("message withheld") == told


def test_every_logger_of_lastmeter_writes_where_serve_configured_its_log():
    """A logger outside `lastmeter` went to Python's last resort: its warnings bare on stderr, without
    level or name, and anything below a warning nowhere."""
    script = textwrap.dedent("""
        import importlib, logging, logging.config, pkgutil
        from api.cli.serving import logging_config
        logging.config.dictConfig(logging_config())
        for package in ("api", "domain", "projections"):
            for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
                for value in vars(importlib.import_module(module.name)).values():
                    if isinstance(value, logging.Logger):
                        value.info("written by %s", value.name)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode == 0, done.stderr
    written = [line for line in done.stderr.splitlines() if "written by" in line]
    assert len(written) >= 8 and all(line.startswith("INFO:") for line in written), done.stderr
    for module in ("domain.application", "domain.storage.application", "projections.privacy"):
        assert any(line.endswith(f"written by lastmeter.{module}") for line in written), done.stderr


def test_json_answers_render_what_orjson_refuses_as_the_json_module_does():
    assert Json({"units": 2**70, "名": "林"}).body == '{"units":1180591620717411303424,"名":"林"}'.encode()
    assert Json({1: "x"}).body == b'{"1":"x"}'


def test_the_access_log_names_fastapi_own_routes_and_never_an_unmatched_path(api, caplog):
    case_id = "0b6b3a34-8c7e-4f4e-9a55-7b6c8f1d2e3a"
    with caplog.at_level("INFO", logger="lastmeter.access"):
        api.client.get("/openapi.json")
        api.client.get(f"/v1/cases/{case_id}", headers=api.token("auditor"))
        api.client.get(f"/v1/nothing/{case_id}")
    lines = [r.getMessage().rsplit(" ", 2)[0] for r in caplog.records if r.name == "lastmeter.access"]
    assert lines == ["GET /openapi.json 200", "GET /v1/cases/{case_id} 404", "GET unmatched 404"]


def test_a_body_sent_in_chunks_is_refused_as_soon_as_it_passes_the_limit_not_once_read_whole():
    """Counted as it arrives: the app (here one reading the body as FastAPI does) never gets the rest."""
    pulled = 0

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 2**19, "more_body": pulled < 40}  # 20 MB by halves

    async def reads_it_all(scope, receive, send):
        while (await receive()).get("more_body"):
            pass

    async def send(message):
        raise AssertionError("nothing is sent before the refusal")

    scope = {"type": "http", "path": "/v1/cases", "headers": [(b"transfer-encoding", b"chunked")]}
    with pytest.raises(HTTPException) as refused:
        asyncio.run(BodyLimit(reads_it_all)(scope, receive, send))
    assert refused.value.status_code == 413 and pulled == JSON_BODY // 2**19 + 1
