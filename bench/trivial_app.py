"""The trivial endpoint bench/http.py compares `lastmeter serve` with: one GET, served by uvicorn the same way.

    .venv/bin/python -m uvicorn bench.trivial_app:app --host 127.0.0.1 --port 8001

Like lastmeter's routes it is a plain `def`, so FastAPI runs it in its thread pool as it runs theirs,
and like lastmeter it turns FastAPI's OpenTelemetry hooks off.
"""

from fastapi import FastAPI

# api.app.NO_OPENTELEMETRY, written out: importing lastmeter would weigh on this server's heap.
app = FastAPI(title="trivial", telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})


@app.get("/")
def ok() -> dict[str, bool]:
    return {"ok": True}
