"""Small builders for test data, sent as commands (never inserted as rows); a port for a server."""

import itertools
import random
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

from domain.client import id_number_check_digit
from domain.errors import CommandRefused


# Numbers drawn without a seed are counted instead: drawn at random, two in one test's store were
# alike often enough (a few hundred draws among 20 million) to fail a test now and then with a 409.
_UNSEEDED = itertools.count(random.randrange(10**6))


def free_port() -> int:
    """A port on loopback that nothing listens on now, for a server a test or benchmark starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def id_number(region: str = "350502", seed: int | None = None) -> str:
    if seed is None:
        n = next(_UNSEEDED)
        born = date(1940, 1, 1) + timedelta(days=(n // 1000) % 25_000)  # to 2008
        first17 = f"{region[:6]}{born:%Y%m%d}{n % 1000:03d}"
    else:
        rng = random.Random(seed)
        first17 = (f"{region[:6]}19{rng.randrange(40, 99)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
                   f"{rng.randrange(0, 1000):03d}")
    return first17 + id_number_check_digit(first17)


def client_body(org_unit: str = "350502", **overrides) -> dict:
    body = {"name": "林秀英", "id_number": id_number(), "phone": "13912345678",
            "address": "鲤城区某街道12号", "org_unit": org_unit}
    body.update(overrides)
    return body


def at_once(count: int, call: Callable[[], Any], refused: type[Exception] = CommandRefused) -> list[int]:
    """The statuses of `count` calls of a command, made in threads released together: each call's
    Written status, or 409 for one that raised `refused`."""
    start = threading.Barrier(count)

    def run(_: int) -> int:
        start.wait()
        try:
            return call().status
        except refused:
            return 409

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))
