"""What each request leaves behind: Prometheus figures (HTTP requests, events processed, projection lag)
and the access log line, both naming the route, never the path asked for."""

import logging
import time

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


log = logging.getLogger("lastmeter.metrics")


class ProjectionCollector:
    """Reads the projector's figures at scrape time; while the store does not answer, the scrape
    still gives the request figures, which say most then."""

    def __init__(self, app: FastAPI):
        self.app = app

    def collect(self):
        readside = getattr(self.app.state, "readside", None)
        lag = GaugeMetricFamily("lastmeter_projection_lag_events", "Events a view is behind the log", labels=["view"])
        processed = CounterMetricFamily("lastmeter_projection_events_processed",
                                        "Events applied to a view by this process", labels=["view"])
        if readside is not None:
            for name, count in readside.processed().items():  # this process's own count: no store read
                processed.add_metric([name], count)
            try:
                statuses = readside.projector.statuses()
            except Exception as error:  # noqa: BLE001 - a store that does not answer: the scrape keeps the rest
                log.warning("projection lag not measured: the store did not answer (%s)", type(error).__name__)
                statuses = []
            for status in statuses:
                lag.add_metric([status.name], status.lag)
        yield lag
        yield processed


def install(app: FastAPI) -> CollectorRegistry:
    registry = CollectorRegistry()
    requests = Counter("lastmeter_http_requests", "HTTP requests answered", ["method", "route", "status"],
                       registry=registry)
    latency = Histogram("lastmeter_http_request_duration_seconds", "Time to answer", ["method", "route"],
                        registry=registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
    registry.register(ProjectionCollector(app))

    app.add_middleware(Measure, requests=requests, latency=latency)
    return registry


access = logging.getLogger("lastmeter.access")


def route_of(scope) -> str:
    """What a log may say of the path asked for: the matched route's template; the path itself for a
    route without parameters (FastAPI's own /docs and /openapi.json carry no route object); else
    "unmatched", so that no identifier a client put in a path is written down."""
    route = scope.get("route")
    if route is not None:
        return route.path
    if scope.get("endpoint") is not None and not scope.get("path_params"):
        return scope["path"]
    return "unmatched"


class Measure:
    """Counts, times and logs every HTTP request by route (plain ASGI: no per-request task or queue).

    The access log names the route's template, never the path asked for, so no identifier a client
    sent is written to the log; `serve` turns uvicorn's own access log off for it.
    """

    def __init__(self, app, requests: Counter, latency: Histogram):
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route, took = route_of(scope), time.perf_counter() - started
            self.latency.labels(scope["method"], route).observe(took)
            self.requests.labels(scope["method"], route, str(status[0])).inc()
            access.info("%s %s %d %.1f ms", scope["method"], route, status[0], took * 1000)
