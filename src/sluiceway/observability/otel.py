"""OpenTelemetry (OTLP over HTTP) as the alternative trace exporter.

:class:`OtelTraceBackend` is a :class:`~sluiceway.observability.tracing.SpanBackend`:
the same :class:`~sluiceway.observability.tracing.RunTracer` builds the same span
tree, exported by the OpenTelemetry SDK's batch processor to an OTLP/HTTP endpoint
(a collector, or the Datadog agent's OTLP intake). The SDK is imported when the
backend is made, never at module import.

It uses a tracer provider of its own (the process-wide one is left alone), with
``service.name``, ``service.version`` and ``deployment.environment`` as resource
attributes over whatever ``OTEL_RESOURCE_ATTRIBUTES`` sets. Errors set the span
status to ERROR with ``error.type`` and ``error.message`` attributes. Log lines
get ``trace_id``/``span_id`` (hex, as OpenTelemetry writes them) and the
``dd.trace_id``/``dd.span_id`` decimal form Datadog correlates OTLP traces with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluiceway.plugins import require

__all__ = ["OtelTraceBackend", "otel_fields"]

_LOW64 = (1 << 64) - 1


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def otel_fields(
    trace_id: int, span_id: int, *, service: str, env: str | None, version: str | None
) -> dict[str, str]:
    """Log correlation fields: OpenTelemetry's hex ids plus Datadog's decimal form."""
    return {
        "trace_id": f"{trace_id:032x}",
        "span_id": f"{span_id:016x}",
        "dd.trace_id": str(trace_id & _LOW64),
        "dd.span_id": str(span_id),
        "dd.service": service,
        "dd.env": env or "",
        "dd.version": version or "",
    }


class OtelTraceBackend:
    """Spans exported over OTLP/HTTP by an SDK tracer provider owned by this backend."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        service: str | None = None,
        env: str | None = None,
        version: str | None = None,
        resource_attributes: Mapping[str, str] | None = None,
        timeout: float | None = None,
        exporter: Any | None = None,
    ) -> None:
        what = "OpenTelemetry tracing"
        sdk_trace = require("opentelemetry.sdk.trace", extra="otel", what=what)
        export = require("opentelemetry.sdk.trace.export", extra="otel", what=what)
        resources = require("opentelemetry.sdk.resources", extra="otel", what=what)
        self._api = require("opentelemetry.trace", extra="otel", what=what)
        self._context = require("opentelemetry.context", extra="otel", what=what)
        if exporter is None:
            http = require(
                "opentelemetry.exporter.otlp.proto.http.trace_exporter", extra="otel", what=what
            )
            exporter = http.OTLPSpanExporter(
                endpoint=endpoint, headers=dict(headers) if headers else None, timeout=timeout
            )
        attributes: dict[str, str] = dict(resource_attributes or {})
        if service:
            attributes["service.name"] = service
        if env:
            attributes["deployment.environment"] = env
        if version:
            attributes["service.version"] = version
        id_module = require("opentelemetry.sdk.trace.id_generator", extra="otel", what=what)

        class _ChosenIds(id_module.RandomIdGenerator):  # type: ignore[misc, name-defined]
            """Random ids, except for the span being started with ids chosen beforehand."""

            chosen: tuple[int, int] | None = None

            def generate_trace_id(self) -> int:
                return self.chosen[0] if self.chosen else int(super().generate_trace_id())

            def generate_span_id(self) -> int:
                return self.chosen[1] if self.chosen else int(super().generate_span_id())

        self._ids = _ChosenIds()
        self._provider: Any = sdk_trace.TracerProvider(
            resource=resources.Resource.create(attributes), id_generator=self._ids
        )
        self._provider.add_span_processor(export.BatchSpanProcessor(exporter))
        self._tracer: Any = self._provider.get_tracer("sluiceway")
        resource_attrs = self._provider.resource.attributes
        self.service = str(resource_attrs.get("service.name") or service or "")
        self.env = env
        self.version = version
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"OtelTraceBackend(endpoint={self.endpoint!r}, service={self.service!r})"

    def start_span(
        self,
        name: str,
        *,
        parent: Any | None,
        start: float,
        resource: str,
        tags: Mapping[str, str],
        ids: tuple[int, int] | None = None,
    ) -> Any:
        if parent is not None:
            context = self._api.set_span_in_context(parent)
        elif ids is not None:
            context = self._context.Context()  # a new trace with the chosen id
        else:
            context = None  # the caller's active trace, if any
        attributes = {"resource.name": resource, **tags}
        self._ids.chosen = ids
        try:
            return self._tracer.start_span(
                name, context=context, attributes=attributes, start_time=_ns(start)
            )
        finally:
            self._ids.chosen = None

    def set_tags(self, span: Any, tags: Mapping[str, str]) -> None:
        span.set_attributes(dict(tags))

    def set_metrics(self, span: Any, metrics: Mapping[str, float]) -> None:
        span.set_attributes(dict(metrics))

    def set_error(self, span: Any, error_type: str | None, message: str | None) -> None:
        status = self._api.Status(self._api.StatusCode.ERROR, message or None)
        span.set_status(status)
        span.set_attribute("error", True)
        if error_type:
            span.set_attribute("error.type", error_type)
        if message:
            span.set_attribute("error.message", message)

    def finish(self, span: Any, end: float) -> None:
        start = span.start_time or 0
        span.end(end_time=max(_ns(end), start))

    def correlation(self, span: Any) -> dict[str, str]:
        ctx = span.get_span_context()
        return otel_fields(
            ctx.trace_id, ctx.span_id, service=self.service, env=self.env, version=self.version
        )

    def flush(self) -> None:
        self._provider.force_flush()

    def close(self) -> None:
        self._provider.shutdown()
