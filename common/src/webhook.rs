//! A small client for outbound JSON webhooks: the SMS gateway and the identity authority of
//! identity-svc are reached this way.
//!
//! One call is a `POST` of a JSON body to a configured URL, with an optional
//! `authorization: Bearer ...` header and an `idempotency-key` header that stays the same on
//! every attempt of the call (so a receiver can drop duplicates). Each attempt has its own
//! timeout; connection errors, timeouts, HTTP 5xx and 429 are retried a bounded number of times
//! with capped exponential backoff and jitter; any other non-2xx status is final.
//!
//! HTTP/1.1 over TLS (rustls, TLS 1.3 preferred, docs/tls.md): `https://` URLs are verified
//! against the system trust store or, when given, a CA file of their own (a private gateway).
//! `http://` is refused when the client is built unless the host is loopback (a local
//! TLS-originating sidecar) or the operator said `--insecure-plaintext`.
//!
//! Errors describe the transport and status only: never the request or response body (which
//! carries personal data), the bearer token, or the URL's path and query.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rand::Rng;
use serde::{Serialize, de::DeserializeOwned};

/// A bearer token for a webhook. `Debug` never shows it; parse it from configuration with
/// `FromStr` (clap does).
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// A token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, to put into a header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl FromStr for BearerToken {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let token = text.trim();
        if token.is_empty() {
            return Err("the token must not be empty".into());
        }
        if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err("the token must be visible ASCII".into());
        }
        Ok(Self(token.to_owned()))
    }
}

/// Timeouts and retries of a webhook.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Limit of one attempt: connect, send, and read the whole response.
    pub attempt_timeout: Duration,
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Pause before the second attempt; doubled after each further attempt.
    pub initial_backoff: Duration,
    /// Longest pause between attempts.
    pub max_backoff: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// CA certificates (PEM) trusted for `https://`; none: the system trust store.
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` to a host that is not loopback.
    pub insecure_plaintext: bool,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(3),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            max_response_bytes: 64 * 1024,
            ca_file: None,
            insecure_plaintext: false,
        }
    }
}

/// Why a webhook call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The URL or token is unusable (found when the client is built).
    #[error("webhook configuration: {0}")]
    Config(String),
    /// Every attempt failed with a retryable error (connection, timeout, 5xx, 429).
    #[error("webhook unreachable after {attempts} attempt(s): {last}")]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// What went wrong last (transport or status, never a body).
        last: String,
    },
    /// The receiver refused the request with a final status (4xx other than 429, 1xx, 3xx).
    #[error("webhook refused the request with HTTP {status}")]
    Rejected {
        /// The HTTP status.
        status: u16,
    },
    /// A 2xx response that could not be used (too large, not the expected JSON).
    #[error("webhook answered an unusable response: {0}")]
    InvalidResponse(String),
}

/// A successful (2xx) response.
#[derive(Debug, Clone)]
pub struct WebhookResponse {
    /// The status.
    pub status: StatusCode,
    /// The body (at most `max_response_bytes`).
    pub body: Bytes,
}

/// A client for one webhook URL. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct WebhookClient {
    uri: Uri,
    token: Option<BearerToken>,
    options: WebhookOptions,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookClient")
            .field("endpoint", &self.endpoint())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("options", &self.options)
            .finish()
    }
}

enum AttemptError {
    /// Worth another attempt.
    Retryable(String),
    /// Final.
    Fatal(WebhookError),
}

impl WebhookClient {
    /// A client posting to `url`: `https://host[:port]/path`, or `http://` on loopback.
    pub fn new(url: &str, token: Option<BearerToken>, options: WebhookOptions) -> Result<Self, WebhookError> {
        let uri: Uri = url.trim().parse().map_err(|_| WebhookError::Config("the URL is not valid".into()))?;
        let Some(host) = uri.host().filter(|host| !host.is_empty()) else {
            return Err(WebhookError::Config("the URL must start with https:// and name a host".into()));
        };
        let tls = match uri.scheme_str() {
            // No ALPN here: the connector offers http/1.1 itself (enable_http1).
            Some("https") => crate::tls::client_config(options.ca_file.as_deref(), &[])
                .map_err(|error| WebhookError::Config(format!("TLS: {error:#}")))?,
            Some("http") if crate::tls::plaintext_allowed(host, options.insecure_plaintext) => {
                // Never used for an http:// URL; the connector type wants one.
                crate::tls::client_config_without_roots()
                    .map_err(|error| WebhookError::Config(format!("TLS: {error:#}")))?
            }
            Some("http") => {
                return Err(WebhookError::Config(
                    "http:// is allowed only to a loopback host (a local TLS-originating proxy): use https://, or \
                     say --insecure-plaintext"
                        .into(),
                ));
            }
            _ => return Err(WebhookError::Config("the URL must start with https:// (or http:// on loopback)".into())),
        };
        if options.max_attempts == 0 {
            return Err(WebhookError::Config("max_attempts must be at least 1".into()));
        }
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(options.attempt_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(Self { uri, token, options, client })
    }

    /// `host:port` of the webhook, for logs (the path and query may hold secrets).
    pub fn endpoint(&self) -> String {
        self.uri.authority().map(|a| a.to_string()).unwrap_or_default()
    }

    /// Posts `body` as JSON, retrying as the module doc says; returns the first 2xx response.
    pub async fn post_json<B: Serialize + ?Sized>(&self, body: &B) -> Result<WebhookResponse, WebhookError> {
        let body = Bytes::from(
            serde_json::to_vec(body).map_err(|e| WebhookError::Config(format!("request is not JSON: {e}")))?,
        );
        let idempotency_key = uuid::Uuid::now_v7().to_string();
        let mut last = String::new();
        for attempt in 1..=self.options.max_attempts {
            match self.attempt(body.clone(), &idempotency_key).await {
                Ok(response) => return Ok(response),
                Err(AttemptError::Fatal(error)) => return Err(error),
                Err(AttemptError::Retryable(cause)) => {
                    tracing::debug!(endpoint = %self.endpoint(), attempt, cause = %cause, "webhook attempt failed");
                    last = cause;
                }
            }
            if attempt < self.options.max_attempts {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
        }
        Err(WebhookError::Unreachable { attempts: self.options.max_attempts, last })
    }

    /// [`post_json`](Self::post_json), then decodes the response body as JSON.
    pub async fn post_json_for<B: Serialize + ?Sized, R: DeserializeOwned>(&self, body: &B) -> Result<R, WebhookError> {
        let response = self.post_json(body).await?;
        // serde's message could quote the body: keep only its category and position.
        serde_json::from_slice(&response.body).map_err(|e| {
            WebhookError::InvalidResponse(format!("not the expected JSON ({:?} at line {})", e.classify(), e.line()))
        })
    }

    /// Full jitter in [d/2, d] of a capped exponential delay `d`.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self.options.initial_backoff.saturating_mul(1u32 << (attempt - 1).min(16));
        let capped = exponential.min(self.options.max_backoff);
        let half = capped / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    async fn attempt(&self, body: Bytes, idempotency_key: &str) -> Result<WebhookResponse, AttemptError> {
        let mut request = http::Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .header("idempotency-key", idempotency_key);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|_| AttemptError::Fatal(WebhookError::Config("cannot build the request".into())))?;
        let timeout = self.options.attempt_timeout;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                AttemptError::Retryable(if error.is_connect() {
                    format!("connection failed: {}", source_text(&error))
                } else {
                    format!("request failed: {}", source_text(&error))
                })
            })?;
            let status = response.status();
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                return Err(AttemptError::Retryable(format!("HTTP {}", status.as_u16())));
            }
            if !status.is_success() {
                return Err(AttemptError::Fatal(WebhookError::Rejected { status: status.as_u16() }));
            }
            let body = Limited::new(response.into_body(), self.options.max_response_bytes).collect().await.map_err(
                |error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        AttemptError::Fatal(WebhookError::InvalidResponse(format!(
                            "the body exceeds {} bytes",
                            self.options.max_response_bytes
                        )))
                    } else {
                        AttemptError::Retryable("the connection broke while reading the response".into())
                    }
                },
            )?;
            Ok(WebhookResponse { status, body: body.to_bytes() })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Retryable(format!("no complete response within {timeout:?}"))),
        }
    }
}

/// The innermost cause of a transport error (e.g. "Connection refused"), which names no data.
fn source_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A scripted local HTTP server standing in for a webhook receiver, for tests (here and, with
/// the `testing` feature, in other crates).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::{
        net::SocketAddr,
        sync::{
            Arc, Mutex,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
        task::JoinHandle,
    };

    use super::WebhookOptions;

    /// Short timeouts and backoff, so retry and timeout tests take milliseconds.
    pub fn fast_options() -> WebhookOptions {
        WebhookOptions {
            attempt_timeout: Duration::from_millis(300),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            ..WebhookOptions::default()
        }
    }

    /// One scripted answer.
    #[derive(Debug, Clone)]
    pub struct FakeResponse {
        /// HTTP status.
        pub status: u16,
        /// Body, sent as `application/json`.
        pub body: String,
        /// Pause before answering (to provoke client timeouts).
        pub delay: Duration,
    }

    impl FakeResponse {
        /// An immediate answer.
        pub fn new(status: u16, body: impl Into<String>) -> Self {
            Self { status, body: body.into(), delay: Duration::ZERO }
        }

        /// The same answer after `delay`.
        pub fn after(mut self, delay: Duration) -> Self {
            self.delay = delay;
            self
        }
    }

    /// A request the server received.
    #[derive(Debug, Clone)]
    pub struct RecordedRequest {
        /// Method, e.g. `POST`.
        pub method: String,
        /// Path and query.
        pub path: String,
        /// Headers, names lower-cased.
        pub headers: Vec<(String, String)>,
        /// Body bytes.
        pub body: Vec<u8>,
    }

    impl RecordedRequest {
        /// The first value of a header.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }

        /// The body as JSON.
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("request body is JSON")
        }
    }

    /// The server. Answers requests with the script in order; once the script is used up, the
    /// last answer repeats. Every connection is closed after one answer.
    pub struct FakeWebhookServer {
        addr: SocketAddr,
        scheme: &'static str,
        requests: Arc<Mutex<Vec<RecordedRequest>>>,
        task: JoinHandle<()>,
    }

    impl FakeWebhookServer {
        /// Starts on 127.0.0.1 with a free port.
        pub async fn start(script: Vec<FakeResponse>) -> Self {
            Self::start_with(script, None).await
        }

        /// Starts on 127.0.0.1 with a free port, speaking HTTPS with this certificate chain and
        /// key (PEM).
        pub async fn start_tls(script: Vec<FakeResponse>, cert_pem: &str, key_pem: &str) -> Self {
            use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("certificate PEM");
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
            let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
                .with_protocol_versions(crate::tls::PROTOCOL_VERSIONS)
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("certificate and key");
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Self::start_with(script, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
        }

        async fn start_with(script: Vec<FakeResponse>, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
            assert!(!script.is_empty(), "a script needs at least one answer");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake webhook");
            let addr = listener.local_addr().expect("address");
            let tls_scheme = tls.is_some();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let script = Arc::new(script);
            let next = Arc::new(AtomicUsize::new(0));
            let recorded = requests.clone();
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (script, next, recorded) = (script.clone(), next.clone(), recorded.clone());
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            None => {
                                let _ = answer(stream, &script, &next, &recorded).await;
                            }
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let _ = answer(stream, &script, &next, &recorded).await;
                                }
                            }
                        }
                    });
                }
            });
            Self { addr, scheme: if tls_scheme { "https" } else { "http" }, requests, task }
        }

        /// `http://127.0.0.1:PORT/hook` (`https://localhost:PORT/hook` with TLS, the name its
        /// certificate is expected to carry).
        pub fn url(&self) -> String {
            match self.scheme {
                "https" => format!("https://localhost:{}/hook", self.addr.port()),
                _ => format!("http://{}/hook", self.addr),
            }
        }

        /// The requests received so far.
        pub fn requests(&self) -> Vec<RecordedRequest> {
            self.requests.lock().expect("requests lock").clone()
        }
    }

    impl Drop for FakeWebhookServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A URL on which nothing listens (connections are refused).
    pub async fn refused_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        format!("http://{addr}/hook")
    }

    async fn answer(
        mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        script: &[FakeResponse],
        next: &AtomicUsize,
        recorded: &Mutex<Vec<RecordedRequest>>,
    ) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..read]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let path = request_line.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length: usize =
            headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = buffer[head_end..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..read]);
        }
        recorded.lock().expect("requests lock").push(RecordedRequest { method, path, headers, body });
        let index = next.fetch_add(1, Ordering::SeqCst).min(script.len() - 1);
        let response = &script[index];
        tokio::time::sleep(response.delay).await;
        let text = format!(
            "HTTP/1.1 {} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
            response.status,
            response.body.len(),
            response.body
        );
        stream.write_all(text.as_bytes()).await?;
        stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::{
        testing::{FakeResponse, FakeWebhookServer, refused_url},
        *,
    };

    fn fast() -> WebhookOptions {
        WebhookOptions { max_response_bytes: 1024, ..testing::fast_options() }
    }

    #[tokio::test]
    async fn posts_json_with_the_bearer_token_and_returns_the_body() {
        let server = FakeWebhookServer::start(vec![FakeResponse::new(200, r#"{"ok":true}"#)]).await;
        let client = WebhookClient::new(&server.url(), Some(BearerToken::new("t0ken")), fast()).unwrap();
        let answer: serde_json::Value = client.post_json_for(&serde_json::json!({"a": 1})).await.unwrap();
        assert_eq!(answer, serde_json::json!({"ok": true}));
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, "/hook");
        assert_eq!(requests[0].header("authorization"), Some("Bearer t0ken"));
        assert_eq!(requests[0].header("content-type"), Some("application/json"));
        assert!(requests[0].header("idempotency-key").is_some());
        assert_eq!(requests[0].json(), serde_json::json!({"a": 1}));
    }

    #[tokio::test]
    async fn a_500_is_retried_with_the_same_idempotency_key() {
        let server = FakeWebhookServer::start(vec![
            FakeResponse::new(500, "{}"),
            FakeResponse::new(503, "{}"),
            FakeResponse::new(200, "{}"),
        ])
        .await;
        let client = WebhookClient::new(&server.url(), None, fast()).unwrap();
        client.post_json(&serde_json::json!({})).await.unwrap();
        let requests = server.requests();
        assert_eq!(requests.len(), 3);
        let keys: std::collections::HashSet<_> = requests.iter().map(|r| r.header("idempotency-key")).collect();
        assert_eq!(keys.len(), 1, "one key for all attempts of a call");
        assert!(requests[0].header("authorization").is_none());
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let server = FakeWebhookServer::start(vec![FakeResponse::new(502, "{}")]).await;
        let client = WebhookClient::new(&server.url(), None, fast()).unwrap();
        let error = client.post_json(&serde_json::json!({})).await.unwrap_err();
        assert_eq!(error, WebhookError::Unreachable { attempts: 3, last: "HTTP 502".into() });
        assert_eq!(server.requests().len(), 3);
    }

    #[tokio::test]
    async fn a_slow_answer_times_out_and_the_retry_succeeds() {
        let server = FakeWebhookServer::start(vec![
            FakeResponse::new(200, "{}").after(Duration::from_secs(5)),
            FakeResponse::new(200, r#"{"second":true}"#),
        ])
        .await;
        let client = WebhookClient::new(&server.url(), None, fast()).unwrap();
        let started = std::time::Instant::now();
        let answer: serde_json::Value = client.post_json_for(&serde_json::json!({})).await.unwrap();
        assert_eq!(answer, serde_json::json!({"second": true}));
        assert!(started.elapsed() < Duration::from_secs(3), "the first attempt was cut at its timeout");
        assert_eq!(server.requests().len(), 2);
    }

    #[tokio::test]
    async fn only_timeouts_end_unreachable() {
        let server = FakeWebhookServer::start(vec![FakeResponse::new(200, "{}").after(Duration::from_secs(5))]).await;
        let options = WebhookOptions { max_attempts: 2, ..fast() };
        let client = WebhookClient::new(&server.url(), None, options).unwrap();
        let error = client.post_json(&serde_json::json!({})).await.unwrap_err();
        assert!(
            matches!(error, WebhookError::Unreachable { attempts: 2, ref last } if last.contains("within")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_4xx_is_final() {
        let server = FakeWebhookServer::start(vec![FakeResponse::new(400, "{}")]).await;
        let client = WebhookClient::new(&server.url(), None, fast()).unwrap();
        assert_eq!(client.post_json(&serde_json::json!({})).await.unwrap_err(), WebhookError::Rejected { status: 400 });
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable() {
        let client = WebhookClient::new(&refused_url().await, None, fast()).unwrap();
        let error = client.post_json(&serde_json::json!({})).await.unwrap_err();
        assert!(matches!(error, WebhookError::Unreachable { attempts: 3, .. }), "{error}");
    }

    #[tokio::test]
    async fn oversized_or_malformed_answers_are_invalid_and_do_not_echo_the_body() {
        let big = format!("\"{}\"", "x".repeat(2000));
        let server = FakeWebhookServer::start(vec![FakeResponse::new(200, big)]).await;
        let client = WebhookClient::new(&server.url(), None, fast()).unwrap();
        assert!(matches!(client.post_json(&()).await.unwrap_err(), WebhookError::InvalidResponse(_)));

        let server = FakeWebhookServer::start(vec![FakeResponse::new(200, r#"{"secret-value": "#)]).await;
        let client = WebhookClient::new(&server.url(), None, fast()).unwrap();
        let error = client.post_json_for::<_, serde_json::Value>(&()).await.unwrap_err();
        assert!(matches!(error, WebhookError::InvalidResponse(_)));
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn https_anywhere_and_http_only_on_loopback_are_accepted() {
        for bad in
            ["http://example.com/hook", "http://10.1.2.3/hook", "ftp://x/y", "not a url", "/relative", "https:///x"]
        {
            assert!(matches!(WebhookClient::new(bad, None, fast()), Err(WebhookError::Config(_))), "{bad}");
        }
        for good in ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]:8/hook"] {
            WebhookClient::new(good, None, fast()).expect(good);
        }
        let insecure = WebhookOptions { insecure_plaintext: true, ..fast() };
        WebhookClient::new("http://10.1.2.3/hook", None, insecure).expect("allowed when asked for");
        let dir = tempfile::tempdir().unwrap();
        let missing = WebhookOptions { ca_file: Some(dir.path().join("none.pem")), ..fast() };
        assert!(matches!(WebhookClient::new("https://example.com/hook", None, missing), Err(WebhookError::Config(_))));
    }

    #[tokio::test]
    async fn https_is_verified_against_the_given_ca() {
        let ca = crate::tls::dev::DevCa::generate().unwrap();
        let leaf = ca.issue_server(&["localhost".into()]).unwrap();
        let server =
            FakeWebhookServer::start_tls(vec![FakeResponse::new(200, r#"{"ok":true}"#)], &leaf.cert_pem, &leaf.key_pem)
                .await;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let options = WebhookOptions { ca_file: Some(ca_file), ..fast() };
        let answer: serde_json::Value = WebhookClient::new(&server.url(), None, options)
            .unwrap()
            .post_json_for(&serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(answer, serde_json::json!({"ok": true}));

        // Another CA's client does not trust the server: nothing is sent.
        let other = crate::tls::dev::DevCa::generate().unwrap();
        let other_file = dir.path().join("other.pem");
        std::fs::write(&other_file, other.cert_pem()).unwrap();
        let options = WebhookOptions { ca_file: Some(other_file), ..fast() };
        let error = WebhookClient::new(&server.url(), None, options).unwrap().post_json(&()).await.unwrap_err();
        assert!(matches!(error, WebhookError::Unreachable { .. }), "{error}");
        assert_eq!(server.requests().len(), 1, "only the trusted client's request arrived");
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let token: BearerToken = " s3cret ".parse().unwrap();
        assert_eq!(token.expose(), "s3cret");
        let client = WebhookClient::new("http://127.0.0.1:9/path?key=q", Some(token.clone()), fast()).unwrap();
        let shown = format!("{token:?} {client:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("key=q"), "{shown}");
        assert!("".parse::<BearerToken>().is_err());
        assert!("a\nb".parse::<BearerToken>().is_err());
    }
}
