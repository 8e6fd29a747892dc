"""Benchmarks: each prints its figures and its ratios to the stock library and raw PostgreSQL."""

import base64
import hashlib

# The city of bench.rebuild is shared with bench.queries: one master key for the benchmark store, so
# that each can open it (a store refuses a master key other than the one its keys were wrapped with).
BENCH_MASTER_KEY = base64.b64encode(hashlib.sha256(b"lastmeter benchmark city").digest()).decode()
