"""OpenTelemetry: the same span tree, exported over OTLP/HTTP to a real HTTP receiver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from pytest_httpserver import HTTPServer
from tests.integration.observability.runs import eventful_pipeline
from tests.integration.observability.support import TestAgent

from sluiceway.observability.setup import (
    DatadogConfig,
    ObservabilityConfig,
    OpenTelemetryConfig,
    build_hooks,
)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def received_spans(httpserver: HTTPServer) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    spans: list[dict[str, Any]] = []
    resource: dict[str, Any] = {}
    for request, _ in httpserver.log:
        assert request.path == "/v1/traces"
        assert request.headers["Content-Type"] == "application/x-protobuf"
        assert request.headers["Authorization"] == "Bearer t0ken"
        message = ExportTraceServiceRequest.FromString(request.get_data())
        for rs in message.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for scope in rs.scope_spans:
                for s in scope.spans:
                    spans.append(
                        {
                            "name": s.name,
                            "span_id": s.span_id,
                            "parent": s.parent_span_id,
                            "trace_id": s.trace_id,
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "error": s.status.code == Status.STATUS_CODE_ERROR,
                            "attrs": {a.key: _value(a.value) for a in s.attributes},
                        }
                    )
    return spans, resource


def tree(spans: list[dict[str, Any]], *, key: str, parent: str, error: Any) -> list[tuple]:
    """(name, resource, parent's name, error) per span: comparable across exporters."""
    names = {s[key]: s for s in spans}
    rows = []
    for s in spans:
        up = names.get(s[parent])
        resource = s.get("resource") or s.get("attrs", {}).get("resource.name")
        rows.append((s["name"], resource, up["name"] if up else None, bool(error(s))))
    return sorted(rows, key=str)


def test_otlp_export_has_the_same_span_tree_as_datadog(
    httpserver: HTTPServer, agent: TestAgent, tmp_path: Path
) -> None:
    httpserver.expect_request("/v1/traces", method="POST").respond_with_data(b"", status=200)
    otel = ObservabilityConfig(
        opentelemetry=OpenTelemetryConfig(
            endpoint=httpserver.url_for("/v1/traces"),
            headers={"Authorization": "Bearer t0ken"},
            service="orders",
            env="ci",
        )
    )
    kw = {"pipeline": "obs-demo", "source_type": "obs-rows", "sink_type": "obs-flaky"}
    with build_hooks(otel, engine="polars", **kw) as hooks:
        otel_metrics = eventful_pipeline(tmp_path / "otel", hooks).run()
    spans, resource = received_spans(httpserver)
    assert resource["service.name"] == "orders"
    assert resource["deployment.environment"] == "ci"
    (root,) = [s for s in spans if s["name"] == "sluiceway.pipeline.run"]
    assert root["parent"] == b"" and not root["error"]
    assert root["attrs"]["sluiceway.run_id"] == otel_metrics.run_id
    assert root["attrs"]["sluiceway.engine"] == "polars"
    assert root["attrs"]["sluiceway.rows.dead_lettered"] == 2
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}
    (transform,) = [s for s in spans if s["error"] and s["name"] == "sluiceway.transform"]
    assert transform["attrs"]["error.type"] == "ValueError"
    assert transform["attrs"]["error.message"] == "cannot explode id 2"
    assert root["start"] <= min(s["start"] for s in spans)
    assert root["end"] >= max(s["end"] for s in spans)

    datadog = ObservabilityConfig(
        datadog=DatadogConfig(agent_url=agent.url, metrics=False, events=False)
    )
    with build_hooks(datadog, engine="polars", **kw) as hooks:
        dd_metrics = eventful_pipeline(tmp_path / "dd", hooks).run()
    dd_spans = agent.run_spans(dd_metrics.run_id)

    otel_tree = tree(spans, key="span_id", parent="parent", error=lambda s: s["error"])
    dd_tree = tree(dd_spans, key="span_id", parent="parent_id", error=lambda s: s["error"])
    assert otel_tree == dd_tree
    assert len(otel_tree) == 1 + 3 + 3 * 4 + 2 + 2  # run, batches, stages, dlq, attempts
