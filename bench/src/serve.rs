//! `medins-bench service` (hidden): one service as a child process of the bench: what the
//! `identity-svc` and `insurance-svc` binaries do (same flags, same code), or the bare echo
//! server. It stops on SIGTERM/Ctrl-C and also when its standard input closes, so it never
//! outlives the bench.

use std::net::SocketAddr;

use clap::Parser as _;
use medins_proto::bench::v1::{
    EchoRequest, EchoResponse,
    echo_service_server::{EchoService, EchoServiceServer},
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Which server to run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// identity-svc (flags as `identity-svc --help`).
    Identity,
    /// insurance-svc (flags as `insurance-svc --help`).
    Insurance,
    /// The bare echo server; flags: the listen address, then optionally a certificate and key
    /// file to serve TLS.
    Echo,
}

/// Flags of `medins-bench service`.
#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    /// Which server.
    #[arg(value_enum)]
    pub service: ServiceKind,
    /// The server's own flags.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// The bare echo service: the ceiling of tonic on this machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse { payload: request.into_inner().payload }))
    }
}

/// Serves the bare echo service (tonic defaults but TCP_NODELAY, as the services) on `listener`
/// until `shutdown`; over TLS with `tls`, accepted as the services accept (`medins_common::tls`).
pub async fn serve_echo(
    listener: TcpListener,
    tls: Option<medins_common::tls::ServerTlsOptions>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = tls.map(medins_common::tls::ReloadingServerConfig::load).transpose()?;
    // As the services do: no Nagle delay on small answers.
    let tcp = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(EchoServiceServer::new(Echo))
        .serve_with_incoming_shutdown(medins_common::tls::incoming(tcp, tls), shutdown)
        .await?;
    Ok(())
}

/// Completes on SIGTERM, Ctrl-C, or when standard input reaches its end (the parent is gone).
async fn stop_signal() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        loop {
            match std::io::Read::read(&mut std::io::stdin(), &mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = tx.send(());
    });
    tokio::select! {
        _ = medins_common::server::shutdown_signal() => {}
        _ = rx => {}
    }
}

/// Runs `medins-bench service`.
pub async fn run(args: ServiceArgs) -> anyhow::Result<()> {
    match args.service {
        ServiceKind::Identity => {
            let config = identity_svc::Config::parse_from(std::iter::once("identity-svc".to_owned()).chain(args.args));
            let _telemetry = medins_common::telemetry::init("identity-svc")?;
            let listener = TcpListener::bind(config.listen).await?;
            tracing::info!(address = %listener.local_addr()?, "identity-svc listening");
            let service = identity_svc::IdentityService::build(config, Default::default()).await?;
            service.serve(listener, stop_signal()).await
        }
        ServiceKind::Insurance => {
            let config =
                insurance_svc::Config::parse_from(std::iter::once("insurance-svc".to_owned()).chain(args.args));
            let _telemetry = medins_common::telemetry::init("insurance-svc")?;
            let listener = TcpListener::bind(config.listen).await?;
            tracing::info!(address = %listener.local_addr()?, "insurance-svc listening");
            let service = insurance_svc::InsuranceService::build(config, Default::default()).await?;
            service.serve(listener, stop_signal()).await
        }
        ServiceKind::Echo => {
            let addr: SocketAddr =
                args.args.first().ok_or_else(|| anyhow::anyhow!("echo needs a listen address"))?.parse()?;
            let tls = match (args.args.get(1), args.args.get(2)) {
                (Some(cert), Some(key)) => Some(medins_common::tls::ServerTlsOptions::new(cert, key)),
                _ => None,
            };
            serve_echo(TcpListener::bind(addr).await?, tls, stop_signal()).await
        }
    }
}
