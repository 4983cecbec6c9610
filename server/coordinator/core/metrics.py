"""Prometheus metrics of the coordinator, one registry per app."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

logger = logging.getLogger(__name__)


#: Reads the fleet totals (``crud.fleet_totals``) in a session of its own.
TotalsReader = Callable[[], dict[str, float]]


class FleetCollector(Collector):
    """Fleet totals read from the database at scrape time.

    Reading them from the stored rounds (not counting in-process) keeps them right when
    the launcher runs in another process and across coordinator restarts. The reader is
    injected, so this module imports no data access.

    Parameters
    ----------
    read_totals : Callable[[], dict[str, float]]
        Called at each scrape; a ``SQLAlchemyError`` leaves the families empty.
    """

    def __init__(self, read_totals: TotalsReader) -> None:
        self._read_totals = read_totals

    def describe(self) -> Iterator[Metric]:
        """The metric families, empty, so that registering reads no database."""
        # Without describe() the registry would call collect(), i.e. query the database,
        # when the collector is registered.
        yield from self._families({})

    def collect(self) -> Iterator[Metric]:
        """The fleet totals read now; nothing when the database cannot be read."""
        try:
            totals = self._read_totals()
        except SQLAlchemyError as exc:
            logger.warning("Fleet metrics unavailable: %s", type(exc).__name__)
            return
        yield from self._families(totals)

    @staticmethod
    def _families(totals: dict[str, float]) -> Iterator[Metric]:
        specs = [
            (GaugeMetricFamily, "aptfleet_active_runs", "Runs pending or running.", "active_runs"),
            (
                CounterMetricFamily,
                "aptfleet_rounds_completed",
                "Rounds recorded, all runs.",
                "rounds_completed",
            ),
            (
                CounterMetricFamily,
                "aptfleet_uplink_bytes",
                "Bytes sent by devices, all rounds.",
                "uplink_bytes",
            ),
            (
                CounterMetricFamily,
                "aptfleet_downlink_bytes",
                "Bytes sent to devices, all rounds.",
                "downlink_bytes",
            ),
            (
                CounterMetricFamily,
                "aptfleet_energy_joules",
                "Modelled device training energy, all rounds.",
                "energy_j",
            ),
        ]
        for family, name, doc, key in specs:
            if key in totals:
                yield family(name, doc, value=totals[key])
            else:
                yield family(name, doc)


class Metrics:
    """The app's registry, its request-latency histogram and the fleet collector.

    Parameters
    ----------
    read_totals : Callable[[], dict[str, float]]
        Fleet totals for the collector (see :class:`FleetCollector`).
    """

    def __init__(self, read_totals: TotalsReader) -> None:
        self.registry = CollectorRegistry()
        self.request_latency = Histogram(
            "aptfleet_http_request_duration_seconds",
            "Latency of HTTP requests.",
            labelnames=("method", "route", "status"),
            registry=self.registry,
        )
        self.registry.register(FleetCollector(read_totals))
