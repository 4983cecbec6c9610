"""Statistics of the load's samples: percentiles, summaries, a per-second timeline."""

from __future__ import annotations

import statistics

from server.cli.load.traffic import Sample


def answered(sample: Sample) -> bool:
    """True when the request was sent and answered 2xx."""
    return not sample.error and 200 <= sample.status < 300


def errors(samples: list[Sample]) -> int:
    """Requests not answered 2xx: other statuses, timeouts, requests not sent."""
    return sum(1 for s in samples if not answered(s))


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation; NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_summary(samples: list[Sample]) -> dict[str, float]:
    """Count of ``samples`` and the latency percentiles, max and mean of their 2xx answers."""
    ok = [s.latency_ms for s in samples if answered(s)]
    return {
        "count": len(samples),
        "p50_ms": percentile(ok, 0.50),
        "p95_ms": percentile(ok, 0.95),
        "p99_ms": percentile(ok, 0.99),
        "max_ms": max(ok, default=float("nan")),
        "mean_ms": statistics.fmean(ok) if ok else float("nan"),
    }


def timeline(samples: list[Sample]) -> list[dict[str, float]]:
    """Per second of the load: requests due, 2xx answers, errors, p50 and p99 latency."""
    seconds = int(max((s.due_s for s in samples), default=-1)) + 1
    buckets: list[list[Sample]] = [[] for _ in range(seconds)]
    for sample in samples:
        buckets[int(sample.due_s)].append(sample)
    out = []
    for second, bucket in enumerate(buckets):
        ok = [s.latency_ms for s in bucket if answered(s)]
        out.append(
            {
                "s": second,
                "due": len(bucket),
                "ok": len(ok),
                "errors": len(bucket) - len(ok),
                "p50_ms": percentile(ok, 0.5),
                "p99_ms": percentile(ok, 0.99),
            }
        )
    return out


def overload(timeline: list[dict[str, float]]) -> tuple[int, int] | None:
    """(first, last) second of the first stretch of >= 3 s whose median latency exceeded 1 s.

    None when there is no such stretch.
    """
    stretch: list[int] = []
    for point in [*timeline, {"s": -1, "ok": 1, "p50_ms": 0.0}]:  # sentinel ends a stretch
        if point["s"] >= 0 and (not point["ok"] or point["p50_ms"] > 1000):
            stretch.append(int(point["s"]))
        elif len(stretch) >= 3:
            return stretch[0], stretch[-1]
        else:
            stretch = []
    return None


def mean(values: list[float]) -> float:
    """Mean of ``values`` (NaN when empty)."""
    return statistics.fmean(values) if values else float("nan")


def spread(groups: list[list[float]]) -> float:
    """Relative difference between the largest and smallest mean of ``groups``."""
    means = [mean(g) for g in groups if g]
    return max(means) / min(means) - 1 if len(means) > 1 else float("nan")


def endpoint_summary(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """:func:`latency_summary` and the error count per endpoint."""
    names = sorted({s.endpoint for s in samples})
    out = {}
    for name in names:
        mine = [s for s in samples if s.endpoint == name]
        summary = latency_summary(mine)
        summary["errors"] = errors(mine)
        out[name] = summary
    return out
