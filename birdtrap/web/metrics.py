"""Prometheus metrics: what the database knows (photos by status, queue) and what this server did.

A registry of its own per app, so a test (or `birdtrap run --serve`) can build several apps in one
process. Database figures are read at scrape time by a collector, never kept in two places.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from birdtrap import store
from birdtrap.store import health as health_store

log = logging.getLogger(__name__)

# Invokes on a Pi take 30-300 ms each; a request of several photos with region search, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Found to stored includes the settle time and the batch wait: seconds, up to a backlog's hours.
PIPELINE_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 6 * 3600.0)


class _DatabaseCollector(Collector):
    """Photos by status, queue depth and the last photo's time, read from the database per scrape."""

    def __init__(self, sessions: sessionmaker[Session], model_info: Callable[[], dict[str, Any]]) -> None:
        self.sessions = sessions
        self.model_info = model_info

    def collect(self) -> Iterator[Metric]:
        info = self.model_info()
        model = InfoMetricFamily("birdtrap_model", "The species model this server classifies with")
        model.add_metric([], {k: str(v) for k, v in info.items() if k in ("state", "name", "version", "sha256", "runtime", "delegate")})
        yield model
        invokes = CounterMetricFamily("birdtrap_model_invokes", "Model invokes by this server", labels=["model"])
        for name, count in info.get("invokes", {}).items():
            invokes.add_metric([name], count)
        yield invokes
        try:
            with self.sessions() as session:
                counts = store.counts_by_status(session)
                last = store.last_photo(session)
                latency = _pipeline_latency(session)
                problems = health_store.open_problems(session)
        except SQLAlchemyError as e:
            log.warning("metrics: the database cannot be read (%s)", e)
            return
        photos = CounterMetricFamily("birdtrap_photos", "Photos on record by status (done, failed, duplicate, pending)", labels=["status"])
        for status in (store.DONE, store.FAILED, store.DUPLICATE, store.PENDING):
            photos.add_metric([status], counts.get(status, 0))
        yield photos
        yield GaugeMetricFamily("birdtrap_queue_depth", "Photos registered and waiting to be processed", value=counts.get(store.PENDING, 0))
        if latency is not None:
            yield latency
        if last is not None and last.discovered_at is not None:
            seen = last.discovered_at.replace(tzinfo=UTC).timestamp()  # stored as naive UTC
            yield GaugeMetricFamily("birdtrap_last_photo_timestamp_seconds", "When the newest photo was found (UTC)", value=seen)
        # Camera health (issue 19): 1 per open problem; a resolved one is gone (absent, not 0).
        health = GaugeMetricFamily("birdtrap_camera_problem", "A camera problem found in its photos is open", labels=["camera", "check"])
        for problem in problems:
            health.add_metric([problem.camera_id, problem.check], 1)
        yield health


def _pipeline_latency(session: Session) -> HistogramMetricFamily | None:
    """Found -> stored, for every photo the daemon processed: its end-to-end latency.

    Built from the rows at each scrape (one indexed scan), so it covers the daemon in its own
    process; rows are only ever added, so the buckets only grow, as a histogram's must.
    """
    seconds = _elapsed_seconds(session, store.ImageRecord.discovered_at, store.ImageRecord.processed_at)
    if seconds is None:
        return None
    buckets = PIPELINE_BUCKETS
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(seconds), 0.0), *[func.sum(case((seconds <= b, 1), else_=0)) for b in buckets]).where(
            store.ImageRecord.status == store.DONE, store.ImageRecord.processed_at.is_not(None)
        )
    ).one()
    total, summed, within = int(row[0]), float(row[1]), [int(v or 0) for v in row[2:]]
    family = HistogramMetricFamily(
        "birdtrap_photo_pipeline_seconds", "Photos processed by the daemon: found in the folder to stored (settle, queue, model)"
    )
    family.add_metric([], [(str(b), n) for b, n in zip(buckets, within, strict=True)] + [("+Inf", total)], summed)
    return family


def _elapsed_seconds(session: Session, start: Any, end: Any) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return None  # another database: the histogram is left out rather than guessed


class Metrics:
    """The server's own instruments plus the database collector, in one registry."""

    def __init__(self, sessions: sessionmaker[Session], model_info: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.invoke_seconds = Histogram(
            "birdtrap_classify_invoke_seconds",
            "Time in the model pipeline (identify) per POST /classify batch",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "birdtrap_classify_request_seconds",
            "POST /classify end to end: upload parsed to answer ready",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter(
            "birdtrap_classify_images", "Images sent to POST /classify by outcome", labelnames=["outcome"], registry=self.registry
        )
        for outcome in ("invoked", "cached", "failed"):
            self.images.labels(outcome)
        self.registry.register(_DatabaseCollector(sessions, model_info))
