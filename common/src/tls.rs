//! TLS on every edge (docs/tls.md): rustls with the ring provider, TLS 1.3 preferred and 1.2
//! allowed (ring's suites only: AEAD ciphers with ECDHE key exchange).
//!
//! - Servers ([`ReloadingServerConfig`], [`incoming`]): the certificate, key and client CA are
//!   read from files and read again whenever one of them changes (a poll of their size and
//!   modification time; a file that does not load is logged and the previous configuration
//!   stays). Each accepted connection is handshaken with the configuration current at that
//!   moment, so new connections see a rotated certificate while open ones keep theirs.
//! - The client certificate a connection presented reaches the handlers as [`ConnectionInfo`]
//!   (tonic's `Connected` connect-info, in the request extensions): the auth layer checks a
//!   partner's pinned certificate against it ([`ClientCertificate`]).
//! - Clients: [`client_config`] (webhooks) and [`PeerTls`] (calls between the services).
//! - Plaintext is allowed only to and on loopback addresses unless the operator said
//!   `--insecure-plaintext` ([`plaintext_allowed`]).

pub mod dev;

use std::{
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{Semaphore, mpsc},
};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::transport::server::{Connected, TcpIncoming};

/// The rustls provider every medins TLS edge uses (ring), named explicitly so that a second
/// provider elsewhere in the dependency tree can never make the choice ambiguous.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 first, 1.2 for older clients; nothing below.
pub const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Reads every certificate of a PEM file (at least one).
pub fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    anyhow::ensure!(!certificates.is_empty(), "{} holds no PEM certificate", path.display());
    Ok(certificates)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("{} holds no PEM private key", path.display()))
}

/// The CA certificates of a PEM file, as a trust store.
pub fn read_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).with_context(|| format!("{}: a CA certificate is not usable", path.display()))?;
    }
    Ok(roots)
}

/// The operating system's trust store (what `update-ca-certificates` manages).
pub fn system_roots() -> anyhow::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    anyhow::ensure!(
        added > 0,
        "no CA certificate found in the system trust store ({} errors); give a CA file instead",
        found.errors.len()
    );
    Ok(roots)
}

/// A CA file's roots, or the system's when no file is given.
pub fn roots(ca_file: Option<&Path>) -> anyhow::Result<RootCertStore> {
    match ca_file {
        Some(path) => read_roots(path),
        None => system_roots(),
    }
}

/// A client configuration (webhooks): trusts `ca_file`'s CAs, or the system's; no client
/// certificate; ALPN as given.
pub fn client_config(ca_file: Option<&Path>, alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

/// A client configuration trusting nothing, for connector types that want one where no TLS
/// is spoken (an `http://` loopback webhook).
pub fn client_config_without_roots() -> anyhow::Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// Whether `host` (a URI host: a name, an IPv4 address or a bracketed IPv6 address) is this
/// machine's loopback: `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether plaintext may be used towards (or on) `host`: loopback always, anything else only
/// when the operator asked for it (`--insecure-plaintext`).
pub fn plaintext_allowed(host: &str, insecure_plaintext: bool) -> bool {
    insecure_plaintext || is_loopback_host(host)
}

/// Whether clients must present a certificate when a client CA is configured.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// A certificate is asked for and checked when sent; partners whose entry pins one must send
    /// it, the others may connect without.
    #[default]
    Optional,
    /// Every connection must present a certificate issued by the client CA.
    Required,
}

/// Where a server's TLS material is and how it is used.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTlsOptions {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf.
    pub key_file: PathBuf,
    /// PEM CAs whose client certificates are accepted (mutual TLS); none: no client certificate
    /// is asked for.
    pub client_ca_file: Option<PathBuf>,
    /// Whether a client certificate is required (with a client CA).
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
    /// Longest a TLS handshake may take before the connection is dropped.
    pub handshake_timeout: Duration,
}

impl ServerTlsOptions {
    /// TLS from a certificate and key file, no client certificates, the default timings.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            client_ca_file: None,
            client_auth: ClientAuth::Optional,
            reload_interval: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// The same with mutual TLS against `client_ca_file`.
    pub fn with_client_ca(mut self, client_ca_file: impl Into<PathBuf>, client_auth: ClientAuth) -> Self {
        self.client_ca_file = Some(client_ca_file.into());
        self.client_auth = client_auth;
        self
    }

    fn files(&self) -> Vec<&Path> {
        [Some(self.cert_file.as_path()), Some(self.key_file.as_path()), self.client_ca_file.as_deref()]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// What identifies a version of the files: size and modification time of each.
type FilesStamp = Vec<Option<(u64, SystemTime)>>;

fn stamp(files: &[&Path]) -> FilesStamp {
    files
        .iter()
        .map(|path| std::fs::metadata(path).ok().and_then(|meta| Some((meta.len(), meta.modified().ok()?))))
        .collect()
}

/// A server's TLS configuration, rebuilt from its files when they change.
#[derive(Debug)]
pub struct ReloadingServerConfig {
    options: ServerTlsOptions,
    current: RwLock<Arc<ServerConfig>>,
    loaded: Mutex<FilesStamp>,
}

impl ReloadingServerConfig {
    /// Loads the files; fails when they do not make a usable configuration.
    pub fn load(options: ServerTlsOptions) -> anyhow::Result<Arc<Self>> {
        let files_stamp = stamp(&options.files());
        let config = build_server_config(&options, None)?;
        Ok(Arc::new(Self { options, current: RwLock::new(Arc::new(config)), loaded: Mutex::new(files_stamp) }))
    }

    /// The configuration new connections are handshaken with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls config lock").clone()
    }

    /// Whether client certificates are asked for.
    pub fn asks_for_client_certificates(&self) -> bool {
        self.options.client_ca_file.is_some()
    }

    /// Rebuilds the configuration if a file changed since the last attempt: `Ok(true)` when a
    /// new one is in force, `Ok(false)` when nothing changed, an error (the previous
    /// configuration stays) when the changed files do not load. A failed version is not tried
    /// again until a file changes once more.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = stamp(&self.options.files());
        {
            let mut loaded = self.loaded.lock().expect("tls stamp lock");
            if *loaded == now {
                return Ok(false);
            }
            *loaded = now;
        }
        let previous = self.current();
        let config = build_server_config(&self.options, Some(&previous))?;
        *self.current.write().expect("tls config lock") = Arc::new(config);
        Ok(true)
    }

    /// Checks the files every `reload_interval` until the task is aborted.
    pub fn spawn_watcher(self: &Arc<Self>, service: &'static str) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(this.options.reload_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match this.reload_if_changed() {
                    Ok(true) => tracing::info!(service, "TLS certificate files changed: reloaded"),
                    Ok(false) => {}
                    Err(error) => tracing::error!(
                        service,
                        error = format!("{error:#}"),
                        "TLS certificate files changed but do not load; the previous certificate stays in use"
                    ),
                }
            }
        })
    }
}

fn build_server_config(options: &ServerTlsOptions, previous: Option<&ServerConfig>) -> anyhow::Result<ServerConfig> {
    let certificates = read_certificates(&options.cert_file)?;
    let key = read_private_key(&options.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider()).with_protocol_versions(PROTOCOL_VERSIONS)?;
    let builder = match &options.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca_file)?), provider());
            let verifier = match options.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().context("client CA")?)
        }
    };
    let mut config = builder.with_single_cert(certificates, key).with_context(|| {
        format!(
            "{} and {} do not make a certificate and its key",
            options.cert_file.display(),
            options.key_file.display()
        )
    })?;
    // gRPC is HTTP/2 only; clients that negotiate ALPN (grpcurl, Go and Java gRPC) require it.
    config.alpn_protocols = vec![b"h2".to_vec()];
    if let Some(previous) = previous {
        // Sessions resumed across a reload stay valid: they were made with this server's keys.
        config.session_storage = previous.session_storage.clone();
    }
    Ok(config)
}

/// The client certificate a connection presented, as the pinning rules read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// SHA-256 of the leaf's DER SubjectPublicKeyInfo (what `openssl x509 -pubkey | openssl
    /// pkey -pubin -outform der | sha256sum` prints).
    pub spki_sha256: [u8; 32],
    /// The names the leaf carries: its subject common names, DNS and URI subject alternative
    /// names.
    pub names: Vec<String>,
}

impl ClientCertificate {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> anyhow::Result<Self> {
        use x509_cert::{
            der::{Decode, Encode, Tag, Tagged, asn1::ObjectIdentifier},
            ext::pkix::{SubjectAltName, name::GeneralName},
        };
        const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
        let certificate = x509_cert::Certificate::from_der(der).context("not an X.509 certificate")?;
        let tbs = &certificate.tbs_certificate;
        let spki = tbs.subject_public_key_info.to_der().context("public key")?;
        let mut names = Vec::new();
        for rdn in tbs.subject.0.iter() {
            for attribute in rdn.0.iter() {
                let text = matches!(attribute.value.tag(), Tag::Utf8String | Tag::PrintableString | Tag::Ia5String);
                if attribute.oid == COMMON_NAME
                    && text
                    && let Ok(name) = std::str::from_utf8(attribute.value.value())
                {
                    names.push(name.to_owned());
                }
            }
        }
        if let Some((_, SubjectAltName(alt_names))) =
            tbs.get::<SubjectAltName>().context("subject alternative names")?
        {
            for name in alt_names {
                match name {
                    GeneralName::DnsName(dns) => names.push(dns.to_string()),
                    GeneralName::UniformResourceIdentifier(uri) => names.push(uri.to_string()),
                    _ => {}
                }
            }
        }
        Ok(Self { spki_sha256: Sha256::digest(&spki).into(), names })
    }

    /// Reads the first certificate of a PEM file.
    pub fn from_pem_file(path: &Path) -> anyhow::Result<Self> {
        let certificates = read_certificates(path)?;
        Self::from_der(&certificates[0]).with_context(|| format!("reading {}", path.display()))
    }
}

/// What a handler can know about the connection a call came over (request extensions).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client certificate, when one was presented and verified against the client CA.
    pub client_certificate: Option<Arc<ClientCertificate>>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection, plaintext or TLS, with what [`ConnectionInfo`] says about it.
pub struct ServerConnection {
    io: Io,
    info: ConnectionInfo,
}

impl ServerConnection {
    fn plain(stream: TcpStream) -> Self {
        let info = ConnectionInfo { remote_addr: stream.peer_addr().ok(), tls: false, client_certificate: None };
        Self { io: Io::Plain(stream), info }
    }

    fn tls(stream: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        let (tcp, session) = stream.get_ref();
        let client_certificate = session.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| {
            // The verifier accepted it, so it parses; if ours cannot read it, no pin matches it.
            ClientCertificate::from_der(leaf)
                .inspect_err(|error| tracing::debug!(error = format!("{error:#}"), "client certificate unreadable"))
                .ok()
                .map(Arc::new)
        });
        let info = ConnectionInfo { remote_addr: tcp.peer_addr().ok(), tls: true, client_certificate };
        Self { io: Io::Tls(Box::new(stream)), info }
    }
}

impl Connected for ServerConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for ServerConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Handshakes in progress at once; more connections wait in the kernel's backlog, so a flood
/// of slow handshakes cannot take every task and file descriptor.
const MAX_CONCURRENT_HANDSHAKES: usize = 512;

/// The connections of `tcp`, handshaken with `tls`'s current configuration when given (each in
/// its own task, bounded by `handshake_timeout`; failures are logged at debug and dropped), else
/// as they are. Ends when the listener fails for good or the stream is dropped.
pub fn incoming(
    mut tcp: TcpIncoming,
    tls: Option<Arc<ReloadingServerConfig>>,
) -> impl Stream<Item = Result<ServerConnection, io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Result<ServerConnection, io::Error>>(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = tcp.next() => accepted,
            };
            let stream = match accepted {
                None => return,
                Some(Ok(stream)) => stream,
                Some(Err(error)) => {
                    // Accept errors (EMFILE, a reset before accept) concern one connection.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(tls) = &tls else {
                if tx.send(Ok(ServerConnection::plain(stream))).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let timeout = tls.options.handshake_timeout;
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(ServerConnection::tls(stream))).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// TLS of a call from one medins service to the other: the CA that issued the other's
/// certificate (none: the system's trust store) and this service's client certificate, for
/// servers that ask for one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerTls {
    /// PEM CA certificates; none: the system trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain presented when the server asks.
    pub cert_file: Option<PathBuf>,
    /// Its private key.
    pub key_file: Option<PathBuf>,
}

impl PeerTls {
    /// tonic's client TLS settings for these files.
    pub fn client_tls_config(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
        let mut config = tonic::transport::ClientTlsConfig::new();
        config = match &self.ca_file {
            Some(path) => {
                // Checked here so that a bad file fails the start, not the first call.
                read_roots(path)?;
                let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                config.ca_certificate(tonic::transport::Certificate::from_pem(pem))
            }
            None => config.with_native_roots(),
        };
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                read_certificates(cert)?;
                read_private_key(key)?;
                let cert = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
                let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
                config = config.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => anyhow::bail!("a client certificate needs both its certificate file and its key file"),
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "[::1]", "::1"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1", "0.0.0.0", "[::]", "localhost.example.com", "192.168.1.1"] {
            assert!(!is_loopback_host(host), "{host}");
        }
        assert!(plaintext_allowed("10.0.0.1", true));
        assert!(!plaintext_allowed("10.0.0.1", false));
    }

    #[test]
    fn a_bad_file_keeps_the_previous_certificate_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dev::DevCa::generate().unwrap();
        let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server-key.pem"));
        ca.issue_server(&["localhost".into()]).unwrap().write(&cert, &key).unwrap();
        let config = ReloadingServerConfig::load(ServerTlsOptions::new(&cert, &key)).unwrap();
        let first = config.current();
        assert!(!config.reload_if_changed().unwrap(), "nothing changed");

        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(config.reload_if_changed().is_err());
        assert!(Arc::ptr_eq(&first, &config.current()), "the previous configuration stays");
        assert!(!config.reload_if_changed().unwrap(), "a failed version is not retried until it changes");

        // A certificate whose key is another's does not load either.
        let other = ca.issue_server(&["localhost".into()]).unwrap();
        std::fs::write(&cert, &other.cert_pem).unwrap();
        assert!(config.reload_if_changed().is_err());
        assert!(Arc::ptr_eq(&first, &config.current()));

        other.write(&cert, &key).unwrap();
        assert!(config.reload_if_changed().unwrap());
        assert!(!Arc::ptr_eq(&first, &config.current()));
    }

    #[test]
    fn a_client_certificate_shows_its_key_fingerprint_and_names() {
        let ca = dev::DevCa::generate().unwrap();
        let issued = ca.issue_client("bank-gateway").unwrap();
        let read = ClientCertificate::from_der(issued.cert_der()).unwrap();
        assert_eq!(read.names, vec!["bank-gateway".to_owned(), "bank-gateway".to_owned()]);
        assert_eq!(read.spki_sha256, issued.spki_sha256());
        let again = ca.issue_client("bank-gateway").unwrap();
        assert_ne!(ClientCertificate::from_der(again.cert_der()).unwrap().spki_sha256, read.spki_sha256);
        assert!(ClientCertificate::from_der(b"garbage").is_err());
    }
}
