"""Benchmarks: each prints its figures and its ratios to the stock library and raw PostgreSQL."""

import base64
import hashlib
import math

# The city of bench.rebuild is shared with bench.queries: one master key for the benchmark store, so
# that each can open it (a store refuses a master key other than the one its keys were wrapped with).
BENCH_MASTER_KEY = base64.b64encode(hashlib.sha256(b"lastmeter benchmark city").digest()).decode()


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile, `p` from 0 to 100; NaN of nothing."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
