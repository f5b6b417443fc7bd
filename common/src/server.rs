//! Server bootstrap shared by both services (docs/architecture.md#server-hardening): health and
//! reflection on every server, explicit limits (tonic's defaults are not safe for a public
//! endpoint), the trace and auth layers, a database probe that drives health, and graceful
//! shutdown: NOT_SERVING first, then a bounded drain.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame};
use tokio::net::TcpListener;
use tonic::{body::Body, server::NamedService, service::Routes, transport::server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Layer, Service};

use crate::{
    auth::{AuthLayer, MethodScopes, Partners},
    db::Db,
    error::{ApiError, Reason},
    telemetry::TraceLayer,
    tls::{ReloadingServerConfig, ServerTlsOptions},
};

/// Default largest message, each way: 64 KiB. Documents travel as streams of such chunks.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Limits and timings of a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest inbound message; larger ones are refused RESOURCE_EXHAUSTED / MESSAGE_TOO_LARGE.
    pub max_message_bytes: usize,
    /// Per-RPC server timeout (the caller sees CANCELLED: outcome unknown, retry with the same
    /// idempotency key).
    pub request_timeout: Duration,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// In-flight requests per connection; beyond it requests are shed (RESOURCE_EXHAUSTED).
    pub concurrency_limit_per_connection: usize,
    /// HTTP/2 keepalive ping interval.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered.
    pub keepalive_timeout: Duration,
    /// How often the database probe runs.
    pub health_check_interval: Duration,
    /// After shutdown is asked for: how long NOT_SERVING is shown while still serving, so load
    /// balancers move traffic away before the listener closes.
    pub shutdown_grace: Duration,
    /// How long in-flight calls may take to finish once the listener is closed.
    pub drain_timeout: Duration,
    /// TLS (docs/tls.md); none: plaintext, allowed only on a loopback address unless
    /// `insecure_plaintext`.
    pub tls: Option<ServerTlsOptions>,
    /// Serve plaintext on a non-loopback address (behind a TLS-terminating proxy or mesh).
    pub insecure_plaintext: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            request_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            concurrency_limit_per_connection: 256,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            health_check_interval: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(10),
            tls: None,
            insecure_plaintext: false,
        }
    }
}

/// What a service brings to the shared bootstrap.
pub struct ServiceDefinition {
    /// Short name for logs (`identity-svc`).
    pub name: &'static str,
    /// Fully qualified gRPC service names served (health statuses and reflection listing).
    pub grpc_services: Vec<&'static str>,
    /// The gRPC services.
    pub routes: Routes,
    /// Who may call.
    pub partners: Partners,
    /// The scope each RPC needs.
    pub method_scopes: MethodScopes,
    /// The service's database (its reachability drives health).
    pub db: Db,
}

/// The gRPC service name of `S`, for `ServiceDefinition::grpc_services`.
pub fn service_name<S: NamedService>() -> &'static str {
    S::NAME
}

/// Serves `service` on `listener` until `shutdown` completes, then shows NOT_SERVING for
/// `shutdown_grace`, stops accepting, and waits at most `drain_timeout` for in-flight calls.
pub async fn serve(
    service: ServiceDefinition,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ServiceDefinition { name, grpc_services, routes, partners, method_scopes, db } = service;
    let tls = server_tls(name, &listener, &options, &partners)?;
    let health = HealthReporter::new();
    // Nothing is SERVING until the database probe says so.
    set_all(&health, &grpc_services, ServingStatus::NotServing).await;
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health.clone()),
    );

    let mut reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(medins_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(medins_proto::ERROR_DETAILS_DESCRIPTOR_SET);
    let mut reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(medins_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(medins_proto::ERROR_DETAILS_DESCRIPTOR_SET);
    for grpc_service in grpc_services.iter().copied().chain(["grpc.health.v1.Health"]) {
        reflection_v1 = reflection_v1.with_service_name(grpc_service);
        reflection_v1alpha = reflection_v1alpha.with_service_name(grpc_service);
    }
    let routes = routes
        .add_service(health_service)
        .add_service(reflection_v1.build_v1()?)
        .add_service(reflection_v1alpha.build_v1alpha()?);

    let (stop_probe, probe) = spawn_health_probe(name, db, health.clone(), grpc_services.clone(), options.clone());

    let layers = tower::ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(MessageLimitLayer { max_message_bytes: options.max_message_bytes })
        .layer(AuthLayer::new(partners, method_scopes));

    let tcp = TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(60)));
    let certificate_watcher = tls.as_ref().map(|tls| tls.spawn_watcher(name));
    let incoming = crate::tls::incoming(tcp, tls);

    let (listener_closed_tx, listener_closed_rx) = tokio::sync::oneshot::channel::<()>();
    let grace = options.shutdown_grace;
    let reporter = health.clone();
    let services_for_shutdown = grpc_services.clone();
    let shutdown_signal = async move {
        shutdown.await;
        tracing::info!(service = name, "shutdown asked: NOT_SERVING, then drain");
        let _ = stop_probe.send(());
        set_all(&reporter, &services_for_shutdown, ServingStatus::NotServing).await;
        tokio::time::sleep(grace).await;
        let _ = listener_closed_tx.send(());
    };

    let server = tonic::transport::Server::builder()
        .timeout(options.request_timeout)
        .concurrency_limit_per_connection(options.concurrency_limit_per_connection)
        .load_shed(true)
        .max_concurrent_streams(options.max_concurrent_streams)
        .http2_max_local_error_reset_streams(Some(1024))
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .http2_keepalive_timeout(Some(options.keepalive_timeout))
        .tcp_nodelay(true)
        .layer(layers)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown_signal);

    let drain_timeout = options.drain_timeout;
    let drain_deadline = async move {
        if listener_closed_rx.await.is_ok() {
            tokio::time::sleep(drain_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        result = server => result.map_err(anyhow::Error::from),
        () = drain_deadline => {
            tracing::warn!(service = name, "drain timed out; closing remaining calls");
            Ok(())
        }
    };
    probe.abort();
    if let Some(watcher) = certificate_watcher {
        watcher.abort();
    }
    result
}

/// The server's TLS configuration, or `None` for plaintext where plaintext is allowed: on a
/// loopback address, or anywhere with `insecure_plaintext`.
fn server_tls(
    name: &'static str,
    listener: &TcpListener,
    options: &ServerOptions,
    partners: &Partners,
) -> anyhow::Result<Option<Arc<ReloadingServerConfig>>> {
    let address = listener.local_addr()?;
    let pinned = partners.pinned_to_certificates();
    let Some(tls_options) = &options.tls else {
        if !address.ip().is_loopback() && !options.insecure_plaintext {
            anyhow::bail!(
                "{name}: refusing to serve plaintext on {address}: give a certificate and key (--tls-cert-file, \
                 --tls-key-file), listen on a loopback address, or say --insecure-plaintext (docs/tls.md)"
            );
        }
        if !address.ip().is_loopback() {
            tracing::warn!(service = name, %address, "serving PLAINTEXT on a non-loopback address (--insecure-plaintext)");
        }
        if !pinned.is_empty() {
            tracing::warn!(
                service = name,
                partners = pinned.join(","),
                "partners bound to client certificates cannot authenticate over plaintext"
            );
        }
        return Ok(None);
    };
    let tls = ReloadingServerConfig::load(tls_options.clone()).with_context(|| format!("{name}: TLS"))?;
    if !pinned.is_empty() && !tls.asks_for_client_certificates() {
        tracing::warn!(
            service = name,
            partners = pinned.join(","),
            "partners bound to client certificates cannot authenticate: no client CA (--tls-client-ca-file)"
        );
    }
    tracing::info!(
        service = name,
        %address,
        mutual = tls.asks_for_client_certificates(),
        "serving TLS (certificate files re-read when they change)"
    );
    Ok(Some(tls))
}

async fn set_all(reporter: &HealthReporter, services: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(*service, status).await;
    }
}

fn spawn_health_probe(
    name: &'static str,
    db: Db,
    reporter: HealthReporter,
    services: Vec<&'static str>,
    options: ServerOptions,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let mut last: Option<bool> = None;
        loop {
            let reachable = db.is_reachable(options.health_check_interval.max(Duration::from_millis(500))).await;
            if stop_rx.try_recv().is_ok() {
                return;
            }
            if last != Some(reachable) {
                if reachable {
                    tracing::info!(service = name, "database reachable: SERVING");
                    set_all(&reporter, &services, ServingStatus::Serving).await;
                } else {
                    tracing::warn!(service = name, "database unreachable: NOT_SERVING");
                    set_all(&reporter, &services, ServingStatus::NotServing).await;
                }
                last = Some(reachable);
            }
            tokio::select! {
                _ = &mut stop_rx => return,
                () = tokio::time::sleep(options.health_check_interval) => {}
            }
        }
    });
    (stop_tx, handle)
}

/// Refuses inbound messages larger than the limit with RESOURCE_EXHAUSTED / MESSAGE_TOO_LARGE
/// (tonic's own limit answers OUT_OF_RANGE), reading each gRPC frame's declared length as the
/// bytes go by, before any of the message is buffered.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimitLayer {
    /// The limit.
    pub max_message_bytes: usize,
}

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimitService { max_message_bytes: self.max_message_bytes, inner }
    }
}

/// The service of [`MessageLimitLayer`].
#[derive(Debug, Clone)]
pub struct MessageLimitService<S> {
    max_message_bytes: usize,
    inner: S,
}

impl<S> Service<http::Request<Body>> for MessageLimitService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let max = self.max_message_bytes;
        let request = request.map(|body| Body::new(LimitedBody::new(body, max)));
        Box::pin(self.inner.call(request))
    }
}

/// A request body that fails as soon as a gRPC frame header announces more than the limit.
struct LimitedBody {
    inner: Body,
    max: usize,
    header: [u8; 5],
    header_filled: usize,
    message_remaining: usize,
    failed: bool,
}

impl LimitedBody {
    fn new(inner: Body, max: usize) -> Self {
        Self { inner, max, header: [0; 5], header_filled: 0, message_remaining: 0, failed: false }
    }

    /// Walks the frame headers in `chunk`; false when a message exceeds the limit.
    fn inspect(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            if self.message_remaining > 0 {
                let skip = self.message_remaining.min(chunk.len());
                self.message_remaining -= skip;
                chunk = &chunk[skip..];
                continue;
            }
            let take = (5 - self.header_filled).min(chunk.len());
            self.header[self.header_filled..self.header_filled + take].copy_from_slice(&chunk[..take]);
            self.header_filled += take;
            chunk = &chunk[take..];
            if self.header_filled == 5 {
                let length =
                    u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
                if length > self.max {
                    return false;
                }
                self.message_remaining = length;
                self.header_filled = 0;
            }
        }
        true
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let chunk = data.chunk().to_vec();
                    if !self.inspect(&chunk) {
                        self.failed = true;
                        let max = self.max;
                        let status: tonic::Status =
                            ApiError::of(Reason::MessageTooLarge, format!("message larger than {max} bytes"))
                                .with_metadata("max_bytes", max.to_string())
                                .into();
                        return Poll::Ready(Some(Err(status)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(status))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Completes on SIGTERM or Ctrl-C. The signals are caught from the moment this is called, not
/// from the future's first poll: a SIGTERM sent right after a "ready" line printed between the
/// call and the `.await` stops the process cleanly instead of killing it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn first(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let terminate = first(signal(SignalKind::terminate()).ok());
        let interrupt = first(signal(SignalKind::interrupt()).ok());
        async move {
            tokio::select! {
                () = terminate => {}
                () = interrupt => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, len as usize));
        bytes
    }

    #[test]
    fn frames_within_the_limit_pass_even_when_split_anywhere() {
        let stream: Vec<u8> = [frame(10), frame(100), frame(0), frame(100)].concat();
        for split in 0..stream.len() {
            let mut body = LimitedBody::new(Body::empty(), 100);
            assert!(body.inspect(&stream[..split]) && body.inspect(&stream[split..]), "split at {split}");
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_caught_from_its_header() {
        let mut body = LimitedBody::new(Body::empty(), 100);
        assert!(body.inspect(&frame(100)));
        let big = frame(101);
        assert!(body.inspect(&big[..3]));
        assert!(!body.inspect(&big[3..5]));
    }
}
