"""OpenTelemetry for every process: tracer and meter providers, exporters, and the W3C trace
context carried in NATS message headers.

Set up once per process by its entry point (``Telemetry(settings.telemetry, role)``, an
async context manager that flushes on exit). The providers are installed globally, because
the instrumentations (Litestar's ASGI middleware, asyncpg, httpx) and every module's
``trace.get_tracer(__name__)`` / ``metrics.get_meter(__name__)`` find them there.

Tracing costs nothing beyond no-op calls while ``OTEL_TRACES_EXPORTER`` is ``none`` (the
default): no SDK tracer provider is installed then. Metrics always run: every process
keeps a Prometheus registry that ``GET /metrics`` gathers over NATS (app/metrics.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

from opentelemetry import context, metrics, propagate, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes
from prometheus_client import CollectorRegistry, generate_latest

from config.settings import SettingsError, TelemetrySettings

log = logging.getLogger(__name__)

# latency histograms in seconds: sub-millisecond fan-out up to multi-second stalls
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class NoRootClientSpans(Sampler):
    """Root sampler that drops client spans without a parent: the periodic loops' own
    queries (polls, heartbeats) would otherwise each start a one-span trace."""

    def __init__(self, base: Sampler = ALWAYS_ON) -> None:
        self.base = base

    def should_sample(
        self,
        parent_context: context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self.base.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoRootClientSpans{{{self.base.get_description()}}}"


def _root_sampler(settings: TelemetrySettings) -> Sampler:
    """Which new traces are kept (OTEL_TRACES_SAMPLER); children follow their parent."""
    kind = settings.sampler.strip().lower().removeprefix("parentbased_")
    if kind == "always_on":
        return ALWAYS_ON
    if kind == "always_off":
        return ALWAYS_OFF
    if kind == "traceidratio":
        return TraceIdRatioBased(settings.sampler_arg)
    raise SettingsError(f"OTEL_TRACES_SAMPLER: {settings.sampler!r} is not supported")


def _span_exporter(settings: TelemetrySettings) -> SpanExporter | None:
    kind = settings.traces_exporter.strip().lower()
    if kind in ("", "none"):
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if kind != "otlp":
        raise SettingsError(f"OTEL_TRACES_EXPORTER: {kind!r} is not otlp, console or none")
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def _metric_readers(settings: TelemetrySettings, registry: CollectorRegistry) -> list[MetricReader]:
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
    kind = settings.metrics_exporter.strip().lower()
    if kind == "console":
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    elif kind == "otlp":
        if settings.otlp_protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetricExporter,
            )

            readers.append(PeriodicExportingMetricReader(HttpMetricExporter()))
    elif kind not in ("", "none", "prometheus"):
        raise SettingsError(f"OTEL_METRICS_EXPORTER: {kind!r} is not otlp, console or none")
    return readers


class Telemetry:
    """``async with Telemetry(settings.telemetry, "api") as t:`` — this process's providers.

    ``role`` names the process kind (``api``, ``conflicts``...): the service name is
    ``<OTEL_SERVICE_NAME>-<role>`` and ``process`` (role-pid) labels its metrics.
    """

    def __init__(
        self, settings: TelemetrySettings, role: str, *, span_processor: SpanProcessor | None = None
    ) -> None:
        self.settings = settings
        self.role = role
        self.process = f"{role}-{os.getpid()}"
        self.registry = CollectorRegistry(auto_describe=True)
        resource = Resource.create(
            {
                "service.name": f"{settings.service_name}-{role}",
                "service.instance.id": self.process,
                "service.namespace": settings.service_name,
            }
        )
        exporter = _span_exporter(settings)
        self.tracer_provider: TracerProvider | None = None
        if exporter is not None or span_processor is not None:
            self.tracer_provider = TracerProvider(
                resource=resource,
                sampler=ParentBased(root=NoRootClientSpans(_root_sampler(settings))),
            )
            if exporter is not None:
                self.tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
            if span_processor is not None:
                self.tracer_provider.add_span_processor(span_processor)
        self.meter_provider = MeterProvider(
            resource=resource,
            metric_readers=_metric_readers(settings, self.registry),
            views=[  # the SDK's default buckets (0, 5, 10, 25 ... 10 000) suit milliseconds
                View(
                    instrument_name=name,
                    aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS),
                )
                for name in ("*latency*", "wedsync.gc.pause")
            ],
        )

    @property
    def tracing(self) -> bool:
        return self.tracer_provider is not None

    async def __aenter__(self) -> Telemetry:
        global _tracing
        metrics.set_meter_provider(self.meter_provider)
        if self.tracer_provider is not None:
            trace.set_tracer_provider(self.tracer_provider)
            _instrument_clients()
            _tracing = True
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush(5_000)
            self.tracer_provider.shutdown()
        self.meter_provider.shutdown(5_000)

    def prometheus(self) -> bytes:
        """This process's metrics in the Prometheus text format."""
        return generate_latest(self.registry)


def _instrument_clients() -> None:
    """Spans for every PostgreSQL query and outbound httpx request (SMS, webhooks, JWKS)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    for inst in (AsyncPGInstrumentor(), HTTPXClientInstrumentor()):  # type: ignore[no-untyped-call]
        if not inst.is_instrumented_by_opentelemetry:
            inst.instrument()


# -- the trace context in NATS headers -------------------------------------------------------

_tracing = False  # an SDK tracer provider is installed in this process


def tracing() -> bool:
    """Whether spans are recorded here. Hot paths skip span calls when not: even a no-op
    span through the API's proxy tracer costs ~10 µs (measured), per frame."""
    return _tracing


def span(
    tracer: trace.Tracer,
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
) -> contextlib.AbstractContextManager[object]:
    """``tracer.start_as_current_span(...)`` while tracing, else a null context."""
    if not _tracing:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current span's ``traceparent`` (and ``tracestate``) to message headers."""
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> context.Context:
    """The context a message's headers carry (empty if none)."""
    return propagate.extract(dict(headers or {}))


def traceparent() -> str | None:
    """The current span as a ``traceparent`` value, to store with deferred work."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def producing(
    tracer: trace.Tracer, stream: str, subject: str, headers: dict[str, str]
) -> Iterator[trace.Span]:
    """A PRODUCER span around a JetStream publish; its context goes into ``headers``."""
    if not _tracing:
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(
        f"publish {stream}",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "nats", "messaging.destination.name": subject},
    ) as span:
        inject(headers)
        yield span
