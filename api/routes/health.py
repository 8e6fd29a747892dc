"""Liveness and readiness."""

from fastapi import APIRouter

from api.deps import App
from api.problems import problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz():
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(app: App):
    """The store answers."""
    try:
        position = app.recorder.max_notification_id()
    except Exception as error:  # any store failure means: not ready
        return problem(503, "Not ready", f"the store does not answer ({type(error).__name__})")
    return {"status": "ready", "position": position or 0}
