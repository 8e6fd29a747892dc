import pytest

from tests.api.conftest import Desk, api, desk  # noqa: F401  the API fixtures, shared


@pytest.fixture
def settings(settings):
    """Cases snapshotted every second event: every privacy test also covers what snapshots keep."""
    return settings.model_copy(update={"case_snapshot_interval": 2})
