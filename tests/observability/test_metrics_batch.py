"""Per-request metrics are gathered per event-loop iteration and added in one go
(issue 17): what a scrape shows must be what one update per request would have shown."""

from __future__ import annotations

import asyncio
import math

from prometheus_client import CollectorRegistry, Histogram

from wardgate.observability import metrics

# Every bucket boundary, values just above and below them, zero, and beyond the last.
SAMPLES = [
    0.0,
    0.0005,
    0.00050001,
    0.0009,
    0.001,
    0.003,
    0.0251,
    0.7,
    2.5,
    29.9,
    30.0,
    31.0,
    120.0,
]


def _buckets(histogram: Histogram) -> dict[str, float]:
    """Cumulative bucket counts, count and sum of ``histogram`` as a scrape shows them."""
    out = {}
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith(("_bucket", "_count", "_sum")):
                out[sample.name.rsplit("_", 1)[1] + sample.labels.get("le", "")] = sample.value
    return out


def _fresh(name: str) -> Histogram:
    return Histogram(name, "test", buckets=metrics.LATENCY_BUCKETS, registry=CollectorRegistry())


def test_batched_observations_equal_one_observe_per_sample() -> None:
    direct, batched = _fresh("direct_seconds"), _fresh("batched_seconds")
    for value in SAMPLES:
        direct.observe(value)
    metrics._add_observations(batched, list(SAMPLES))
    want, got = _buckets(direct), _buckets(batched)
    assert want.keys() == got.keys() and len(want) == len(metrics.LATENCY_BUCKETS) + 3
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-12), key


def _requests_total(code_class: str, replied_by: str) -> float:
    for metric in metrics.REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels == {
                "code_class": code_class,
                "replied_by": replied_by,
            }:
                return sample.value
    return 0.0


def test_samples_of_one_loop_iteration_land_at_its_end_and_before_a_scrape() -> None:
    async def scenario() -> tuple[float, float, float, bytes]:
        before = _requests_total("4xx", "batch-test")
        count_before = metrics.REQUEST_DURATION._sum.get()  # type: ignore[attr-defined]
        for _ in range(5):
            metrics.count_request(404, "batch-test")
            metrics.observe_request_seconds(0.25)
        pending = _requests_total("4xx", "batch-test") - before  # not yet added
        await asyncio.sleep(0)  # the loop iteration ends: the batch is flushed
        added = _requests_total("4xx", "batch-test") - before
        added_sum = metrics.REQUEST_DURATION._sum.get() - count_before  # type: ignore[attr-defined]
        metrics.count_request(404, "batch-test")  # a scrape in the same iteration sees it
        return pending, added, added_sum, metrics.render_prometheus()

    pending, added, added_sum, scrape = asyncio.run(scenario())
    assert pending == 0
    assert added == 5
    assert math.isclose(added_sum, 1.25)
    assert 'wardgate_requests_total{code_class="4xx",replied_by="batch-test"} ' in scrape.decode()
    assert _requests_total("4xx", "batch-test") >= 6


def test_outside_an_event_loop_samples_are_added_at_once() -> None:
    before = _requests_total("5xx", "batch-test-sync")
    metrics.count_request(503, "batch-test-sync")
    assert _requests_total("5xx", "batch-test-sync") == before + 1
