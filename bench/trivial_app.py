"""The trivial endpoint bench/http.py compares `lastmeter serve` with: one GET, served by uvicorn the same way.

    .venv/bin/python -m uvicorn bench.trivial_app:app --host 127.0.0.1 --port 8001

Like lastmeter's routes it is a plain `def`, so FastAPI runs it in its thread pool as it runs theirs.
"""

from fastapi import FastAPI

app = FastAPI(title="trivial")


@app.get("/")
def ok() -> dict[str, bool]:
    return {"ok": True}
