//! Calls from one medins service to the other: a lazily connected channel, the SERVICE
//! partner's API key and the caller's trace context on every request, and the client span that
//! records the outcome. Both directions use this; what differs (retries, error mapping) stays
//! with each client.

use std::time::Duration;

use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};
use tracing::Instrument;

use crate::{
    telemetry::{client_span, inject_context},
    tls::{PeerTls, plaintext_allowed},
};

/// How the other service is reached on the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerTransport {
    /// TLS of `https://` URLs.
    pub tls: PeerTls,
    /// Allow an `http://` URL whose host is not loopback (`--insecure-plaintext`).
    pub insecure_plaintext: bool,
}

/// How to reach the other service.
#[derive(Clone)]
pub struct PeerOptions {
    /// Base URL: `https://identity.internal:50051`, or `http://` on loopback.
    pub url: String,
    /// The SERVICE partner key this service presents there.
    pub api_key: String,
    /// Per-call deadline.
    pub timeout: Duration,
    /// TLS and the plaintext rule.
    pub transport: PeerTransport,
}

impl std::fmt::Debug for PeerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key stays out of logs.
        f.debug_struct("PeerOptions")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// A channel to the other service plus the credentials every request carries. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Peer {
    channel: Channel,
    authorization: AsciiMetadataValue,
}

impl Peer {
    /// Connects on first use, so each service starts while the other is down.
    pub fn connect_lazy(options: &PeerOptions) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(options.url.clone())?;
        let host = endpoint.uri().host().unwrap_or_default().to_owned();
        let tls = &options.transport.tls;
        let endpoint = match endpoint.uri().scheme_str() {
            Some("https") => endpoint.tls_config(tls.client_tls_config()?)?,
            Some("http") => {
                anyhow::ensure!(
                    plaintext_allowed(&host, options.transport.insecure_plaintext),
                    "{}: refusing plaintext to a host that is not loopback: use https:// (docs/tls.md), or say \
                     --insecure-plaintext",
                    options.url
                );
                anyhow::ensure!(
                    *tls == PeerTls::default(),
                    "{}: TLS files are set for the other service but its URL is http://",
                    options.url
                );
                endpoint
            }
            _ => anyhow::bail!("{}: the URL must start with https:// (or http:// on loopback)", options.url),
        };
        let channel = endpoint
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(2)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let authorization = format!("Bearer {}", options.api_key)
            .parse()
            .map_err(|_| anyhow::anyhow!("the API key for {} is not valid ASCII", options.url))?;
        Ok(Self { channel, authorization })
    }

    /// The channel, for generated clients.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A request carrying the API key and the current span's trace context.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", self.authorization.clone());
        inject_context(request.metadata_mut());
        request
    }
}

/// Runs `call` inside a client span for `service/method` and records its gRPC status code.
pub async fn traced<T>(
    service: &'static str,
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let span = client_span(service, method);
    async {
        let result = call.await;
        let code = result.as_ref().map_or_else(|status| status.code() as i32, |_| 0);
        tracing::Span::current().record("rpc.grpc.status_code", code);
        result
    }
    .instrument(span)
    .await
}
