from tests.api.conftest import Desk, api, desk  # noqa: F401  the API fixtures, shared
