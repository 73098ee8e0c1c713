"""deploy/datadog: the dashboard and monitors query only documented metrics and tags.

(The integration test ``test_observability_cli`` checks the same queries against the
datagrams of a real ``sluiceway run``.)
"""

from __future__ import annotations

import json
import re

from tests.integration.observability.support import DEPLOY, HISTOGRAM_SUFFIXES, queried

from sluiceway.observability.statsd import COMMON_TAGS, METRICS

COMMON = set(COMMON_TAGS)


def test_dashboard_and_monitors_use_documented_metrics_and_tags() -> None:
    tags: dict[str, set[str]] = {}
    for m in METRICS:
        names = [m.name]
        if m.type == "histogram":
            names += [f"{m.name}.{suffix}" for suffix in HISTOGRAM_SUFFIXES]
        for name in names:
            tags[name] = COMMON | set(m.tags)
    dashboard = json.loads((DEPLOY / "dashboard.json").read_text())
    monitors = json.loads((DEPLOY / "monitors.json").read_text())
    used = queried(dashboard) + queried(monitors)
    assert {m for m, _ in used} >= {
        "sluiceway.records.read",
        "sluiceway.records.dead_lettered",
        "sluiceway.stage.duration.95percentile",
        "sluiceway.consumer.lag",
        "sluiceway.run.failed",
        "sluiceway.run.succeeded",
    }
    for metric, keys in used:
        assert metric in tags, metric
        assert keys <= tags[metric], (metric, keys - tags[metric])


def test_they_are_importable_api_payloads() -> None:
    dashboard = json.loads((DEPLOY / "dashboard.json").read_text())
    assert dashboard["layout_type"] == "ordered" and dashboard["title"]
    assert {v["name"] for v in dashboard["template_variables"]} == {"pipeline", "env"}
    titles = [w["definition"]["title"] for w in dashboard["widgets"]]
    assert titles == [
        "Runs",
        "Throughput",
        "Errors and dead letters",
        "Latency",
        "Consumer lag (Kafka and other streaming sources)",
    ]
    monitors = json.loads((DEPLOY / "monitors.json").read_text())
    for monitor in monitors:
        assert monitor["type"] == "query alert"
        assert {"name", "query", "message", "options", "tags"} <= set(monitor)
        bound = re.search(r"[<>]=?\s*([0-9.]+)$", monitor["query"])
        assert bound and float(bound.group(1)) == monitor["options"]["thresholds"]["critical"]
    assert [m["name"].split("]")[1].split("(")[0].strip() for m in monitors] == [
        "{{pipeline.name}} run failed",
        "{{pipeline.name}} dead-letter rate above threshold",
        "{{pipeline.name}} no successful run in 6 hours",
        "{{pipeline.name}} consumer lag high",
    ]
