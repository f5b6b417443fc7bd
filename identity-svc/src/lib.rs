//! identity-svc: who a person is (DESIGN.md 5). The only holder of raw personal data: ID
//! numbers, names and phones, encrypted per field at rest.

pub mod config;
pub mod domain;
pub mod service;
pub mod store;

use std::sync::Arc;

use anyhow::Context as _;
use medins_common::{
    auth::{MethodScopes, Partners, scopes},
    clock::{SharedClock, SystemClock},
    crypto::{BlindIndex, DataKeys, FieldCipher},
    db::Db,
    idempotency::Idempotency,
    server::{ServiceDefinition, serve, service_name},
};
use medins_proto::identity::v1::person_service_server::PersonServiceServer;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use config::Config;

use crate::{
    service::{State, person::PersonApi},
    store::person::PersonStore,
};

/// The scope each RPC of identity-svc needs (DESIGN.md 4.3).
pub const METHOD_SCOPES: MethodScopes = &[
    ("/medins.identity.v1.PersonService/RegisterPerson", scopes::PERSON_REGISTER),
    ("/medins.identity.v1.PersonService/GetPerson", scopes::PERSON_READ),
    ("/medins.identity.v1.PersonService/ResolvePerson", scopes::PERSON_RESOLVE),
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

/// A built identity-svc, ready to serve.
pub struct IdentityService {
    state: Arc<State>,
    partners: Partners,
    config: Config,
}

impl IdentityService {
    /// Connects the database (migrating unless told not to), loads partners and keys.
    pub async fn build(config: Config, dependencies: Dependencies) -> anyhow::Result<Self> {
        let keys = DataKeys::from_env_or_file(config.data_keys_file.as_deref()).context("personal-data keys")?;
        let partners = Partners::load(&config.common.partners_file)?;
        let db = Db::connect(&config.common.database_url, &config.common.pool_options())?;
        if !config.common.no_migrate {
            db.migrate(store::MIGRATIONS).await.context("identity migrations")?;
        }
        let clock = dependencies.clock;
        let state = Arc::new(State {
            persons: PersonStore::new(db.clone(), FieldCipher::new(&keys), BlindIndex::new(&keys)),
            idempotency: Idempotency::new(db.clone(), clock.clone(), config.common.idempotency_options()),
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
        let persons = PersonServiceServer::new(PersonApi::new(self.state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let purger = self.state.idempotency.spawn_purger(std::time::Duration::from_secs(600));
        let definition = ServiceDefinition {
            name: "identity-svc",
            grpc_services: vec![service_name::<PersonServiceServer<PersonApi>>()],
            routes: Routes::new(persons),
            partners: self.partners,
            method_scopes: METHOD_SCOPES,
            db: self.state.db.clone(),
        };
        let result = serve(definition, listener, self.config.common.server_options(), shutdown).await;
        purger.abort();
        result
    }
}
