//! The insurance-svc binary: parse config, start telemetry, serve until SIGTERM or Ctrl-C.

use clap::Parser;
use insurance_svc::{Config, Dependencies, InsuranceService};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = medins_common::telemetry::init("insurance-svc")?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "insurance-svc listening");
    let service = InsuranceService::build(config, Dependencies::default()).await?;
    service.partners().reload_on_sighup()?;
    service.serve(listener, medins_common::server::shutdown_signal()).await
}
