//! Telemetry (docs/architecture.md#telemetry): `tracing` always; OpenTelemetry traces and RPC
//! metrics over OTLP only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. W3C trace context is extracted
//! from incoming metadata by [`TraceLayer`] and injected into outgoing calls by [`inject_context`],
//! so one trace spans both services. Spans carry the method, the partner id and the status code,
//! never personal data.

use std::{
    io::IsTerminal,
    task::{Context, Poll},
    time::Instant,
};

use futures::future::BoxFuture;
use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram},
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::{metrics::SdkMeterProvider, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tonic::{body::Body, metadata::MetadataMap};
use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer as _, layer::SubscriberExt, util::SubscriberInitExt};

/// The filter of the OpenTelemetry layer: our own spans only. Unfiltered, one unary call
/// exports hundreds of transport spans (h2, hyper, tower, tonic).
pub const OTEL_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tower=off,tonic=off,r2d2=off";

/// The default log filter when `RUST_LOG` is not set.
pub const DEFAULT_LOG_FILTER: &str = "info,h2=warn,hyper=warn,hyper_util=warn,tower=warn,tonic=warn";

/// Keeps the exporters alive; flushes and shuts them down when dropped.
#[derive(Debug, Default)]
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take()
            && let Err(error) = tracer.shutdown()
        {
            eprintln!("telemetry: trace provider shutdown failed: {error}");
        }
        if let Some(meter) = self.meter.take()
            && let Err(error) = meter.shutdown()
        {
            eprintln!("telemetry: meter provider shutdown failed: {error}");
        }
    }
}

/// Sets the W3C trace-context propagator (cheap, harmless without an exporter).
pub fn install_propagator() {
    global::set_text_map_propagator(TraceContextPropagator::new());
}

/// Installs logging (to stderr, filtered by `RUST_LOG`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is set, OTLP trace and metric export. Call inside the tokio runtime, once per process.
pub fn init(service_name: &str) -> anyhow::Result<TelemetryGuard> {
    install_propagator();
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(log_filter);

    let endpoint_set = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty());
    if !endpoint_set {
        tracing_subscriber::registry().with(fmt).try_init()?;
        return Ok(TelemetryGuard::default());
    }

    let tls = otlp_tls()?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_owned()).build();
    let mut span_exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    let mut metric_exporter = opentelemetry_otlp::MetricExporter::builder().with_tonic();
    if let Some(tls) = tls {
        span_exporter = span_exporter.with_tls_config(tls.clone());
        metric_exporter = metric_exporter.with_tls_config(tls);
    }
    let span_exporter = span_exporter.build()?;
    let tracer_provider =
        SdkTracerProvider::builder().with_batch_exporter(span_exporter).with_resource(resource.clone()).build();
    let metric_exporter = metric_exporter.build()?;
    let meter_provider =
        SdkMeterProvider::builder().with_periodic_exporter(metric_exporter).with_resource(resource).build();
    global::set_meter_provider(meter_provider.clone());
    global::set_tracer_provider(tracer_provider.clone());

    let otel = otel_layer(tracer_provider.tracer("medins"));
    tracing_subscriber::registry().with(fmt).with(otel).try_init()?;
    Ok(TelemetryGuard { tracer: Some(tracer_provider), meter: Some(meter_provider) })
}

/// TLS of the OTLP exporter, from the standard OpenTelemetry variables (docs/tls.md): an
/// `https://` `OTEL_EXPORTER_OTLP_ENDPOINT` is verified against `OTEL_EXPORTER_OTLP_CERTIFICATE`
/// (a PEM CA file) or the system trust store, with `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
/// `OTEL_EXPORTER_OTLP_CLIENT_KEY` as the client certificate where the collector asks for one.
/// An `http://` endpoint is refused unless its host is loopback or
/// `OTEL_EXPORTER_OTLP_INSECURE=true`: spans name partners and methods.
fn otlp_tls() -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    let variable = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(std::path::PathBuf::from);
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
    let uri: http::Uri = endpoint.parse().map_err(|_| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT is not a URL"))?;
    let insecure =
        std::env::var("OTEL_EXPORTER_OTLP_INSECURE").is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
    match uri.scheme_str() {
        Some("https") => {
            let files = crate::tls::PeerTls {
                ca_file: variable("OTEL_EXPORTER_OTLP_CERTIFICATE"),
                cert_file: variable("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
                key_file: variable("OTEL_EXPORTER_OTLP_CLIENT_KEY"),
            };
            Ok(Some(files.client_tls_config()?))
        }
        Some("http") if crate::tls::plaintext_allowed(uri.host().unwrap_or_default(), insecure) => Ok(None),
        Some("http") => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_ENDPOINT: refusing plaintext to a host that is not loopback: use https://, or set \
             OTEL_EXPORTER_OTLP_INSECURE=true"
        ),
        _ => anyhow::bail!("OTEL_EXPORTER_OTLP_ENDPOINT must start with https:// (or http:// on loopback)"),
    }
}

/// The tracing -> OpenTelemetry layer with the transport filter applied (also used by tests
/// with an in-memory exporter).
pub fn otel_layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(tracer).with_filter(EnvFilter::new(OTEL_FILTER))
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), tonic::metadata::MetadataValue::try_from(&value))
        {
            self.0.insert(key, value);
        }
    }
}

/// Injects the current span's trace context into outgoing request metadata (`traceparent`).
pub fn inject_context(metadata: &mut MetadataMap) {
    let context = Span::current().context();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut MetadataInjector(metadata)));
}

/// A client span for an outgoing call to another medins service; instrument the call with it
/// and call [`inject_context`] inside.
pub fn client_span(service: &'static str, method: &'static str) -> Span {
    tracing::info_span!(
        "rpc.client",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
    )
}

/// The server-side tower layer: one span per RPC (parented on the caller's trace context),
/// with partner id and status code, plus the `rpc.server.duration` histogram.
#[derive(Clone)]
pub struct TraceLayer {
    metrics: RpcMetrics,
}

#[derive(Clone)]
struct RpcMetrics {
    duration: Histogram<f64>,
    requests: Counter<u64>,
}

impl TraceLayer {
    /// A layer using the global meter provider (a no-op unless OTLP export is on).
    pub fn new() -> Self {
        let meter = global::meter("medins");
        Self {
            metrics: RpcMetrics {
                duration: meter
                    .f64_histogram("rpc.server.duration")
                    .with_unit("ms")
                    .with_description("Duration of inbound RPCs")
                    .build(),
                requests: meter.u64_counter("rpc.server.requests").with_description("Inbound RPCs").build(),
            },
        }
    }
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { metrics: self.metrics.clone(), inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Clone)]
pub struct TraceService<S> {
    metrics: RpcMetrics,
    inner: S,
}

impl<S> Service<http::Request<Body>> for TraceService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "rpc.server",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
            partner = Empty,
            rpc.grpc.status_code = Empty,
        );
        let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
        // Fails only when no OpenTelemetry layer is installed: nothing to parent then.
        let _ = span.set_parent(parent);
        let future = {
            let _entered = span.enter();
            inner.call(request)
        };
        let metrics = self.metrics.clone();
        let started = Instant::now();
        Box::pin(
            async move {
                let result = future.await;
                // Unary errors travel in the headers (trailers-only response); a success, or a
                // stream's end, in trailers this layer does not wait for.
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0),
                    Err(_) => tonic::Code::Unknown as i32,
                };
                let span = Span::current();
                span.record("rpc.grpc.status_code", code);
                let attributes =
                    [KeyValue::new("rpc.method", method), KeyValue::new("rpc.grpc.status_code", i64::from(code))];
                metrics.duration.record(started.elapsed().as_secs_f64() * 1000.0, &attributes);
                metrics.requests.add(1, &attributes);
                result
            }
            .instrument(span),
        )
    }
}
