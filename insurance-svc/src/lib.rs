//! insurance-svc: what a person may do with their insurance (DESIGN.md 6). Holds no raw
//! personal data: persons are opaque ids resolved through identity-svc.

pub mod clients;
pub mod config;
pub mod domain;
pub mod service;
pub mod store;

use std::sync::Arc;

use anyhow::Context as _;
use medins_common::{
    auth::{MethodScopes, Partners, scopes},
    clock::{SharedClock, SystemClock},
    db::Db,
    idempotency::Idempotency,
    server::{ServiceDefinition, serve, service_name},
};
use medins_proto::insurance::v1::account_service_server::AccountServiceServer;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use config::Config;

use crate::{
    clients::identity::IdentityClient,
    service::{State, account::AccountApi},
    store::account::AccountStore,
};

/// The scope each RPC of insurance-svc needs (DESIGN.md 4.3).
pub const METHOD_SCOPES: MethodScopes = &[
    ("/medins.insurance.v1.AccountService/OpenAccount", scopes::ACCOUNT_OPEN),
    ("/medins.insurance.v1.AccountService/GetAccount", scopes::ACCOUNT_READ),
];

/// What a test or an embedding process may replace.
#[derive(Debug, Clone)]
pub struct Dependencies {
    /// The clock.
    pub clock: SharedClock,
}

impl Default for Dependencies {
    fn default() -> Self {
        Self { clock: Arc::new(SystemClock) }
    }
}

/// A built insurance-svc, ready to serve.
pub struct InsuranceService {
    state: Arc<State>,
    partners: Partners,
    config: Config,
}

impl InsuranceService {
    /// Connects the database (migrating unless told not to), loads partners, prepares the
    /// identity-svc client (connected on first use).
    pub async fn build(config: Config, dependencies: Dependencies) -> anyhow::Result<Self> {
        let partners = Partners::load(&config.common.partners_file)?;
        let db = Db::connect(&config.common.database_url, &config.common.pool_options())?;
        if !config.common.no_migrate {
            db.migrate(store::MIGRATIONS).await.context("insurance migrations")?;
        }
        let identity = IdentityClient::connect_lazy(&config.identity_client_options())?;
        let clock = dependencies.clock;
        let state = Arc::new(State {
            accounts: AccountStore::new(db.clone()),
            idempotency: Idempotency::new(db.clone(), clock.clone(), config.common.idempotency_options()),
            identity,
            db,
            clock,
        });
        Ok(Self { state, partners, config })
    }

    /// The database (tests inspect raw rows).
    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// The live partners (reload after editing the file).
    pub fn partners(&self) -> &Partners {
        &self.partners
    }

    /// Serves on `listener` until `shutdown` completes, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let max = self.config.common.max_message_bytes;
        let accounts = AccountServiceServer::new(AccountApi::new(self.state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let purger = self.state.idempotency.spawn_purger(std::time::Duration::from_secs(600));
        let definition = ServiceDefinition {
            name: "insurance-svc",
            grpc_services: vec![service_name::<AccountServiceServer<AccountApi>>()],
            routes: Routes::new(accounts),
            partners: self.partners,
            method_scopes: METHOD_SCOPES,
            db: self.state.db.clone(),
        };
        let result = serve(definition, listener, self.config.common.server_options(), shutdown).await;
        purger.abort();
        result
    }
}
