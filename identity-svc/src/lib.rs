//! identity-svc: who a person is (docs/architecture.md#identity-svc). The only holder of raw
//! personal data: ID numbers, names and phones, encrypted per field at rest.

pub mod authority;
pub mod clients;
pub mod config;
pub mod domain;
pub mod outbox;
pub mod service;
pub mod sms;
pub mod store;
pub mod sweeper;

use std::sync::Arc;

use anyhow::Context as _;
use medins_common::{
    auth::{MethodScopes, Partners, scopes},
    clock::{SharedClock, SystemClock},
    crypto::{BlindIndex, DataKeys, FieldCipher},
    db::Db,
    idempotency::Idempotency,
    revocation::REVOCATION_MAX_STALENESS,
    server::{ServiceDefinition, serve, service_name},
};
use medins_proto::identity::v1::sms_service_server::SmsServiceServer;
use medins_proto::identity::v1::{
    access_history_service_server::AccessHistoryServiceServer, partner_link_service_server::PartnerLinkServiceServer,
    person_facts_service_server::PersonFactsServiceServer, person_service_server::PersonServiceServer,
    person_token_service_server::PersonTokenServiceServer,
};
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use config::Config;

use crate::{
    service::{State, person::PersonApi, person_facts::PersonFactsApi},
    store::person::PersonStore,
};

/// The scope each RPC of identity-svc needs (docs/architecture.md#who-may-call-what).
pub const METHOD_SCOPES: MethodScopes = &[
    ("/medins.identity.v1.PersonService/RegisterPerson", scopes::PERSON_REGISTER),
    ("/medins.identity.v1.PersonService/GetPerson", scopes::PERSON_READ),
    ("/medins.identity.v1.PersonService/ResolvePerson", scopes::PERSON_RESOLVE),
    ("/medins.identity.v1.PersonService/MatchPerson", scopes::PERSON_RESOLVE),
    ("/medins.identity.v1.PersonService/ChangePhone", scopes::PERSON_REGISTER),
    ("/medins.identity.v1.PersonService/CompleteRealName", scopes::REALNAME_COMPLETE),
    ("/medins.identity.v1.PersonService/ConsumeSmsChallenge", scopes::SERVICE),
    ("/medins.identity.v1.PersonService/SuspendPerson", scopes::PERSON_MANAGE),
    ("/medins.identity.v1.PersonService/ResumePerson", scopes::PERSON_MANAGE),
    ("/medins.identity.v1.PartnerLinkService/RevokePartnerLink", scopes::LINK_MANAGE),
    ("/medins.identity.v1.PersonTokenService/ListTokenRevocations", scopes::SERVICE),
    // Issue 12, views that cannot be unmasked: birth dates for medins services only.
    ("/medins.identity.v1.PersonFactsService/GetPersonFacts", scopes::SERVICE),
    ("/medins.identity.v1.SmsService/SendSmsCode", scopes::SMS_SEND),
    ("/medins.identity.v1.SmsService/VerifySmsCode", scopes::SMS_VERIFY),
    ("/medins.identity.v1.PartnerLinkService/LinkPartnerAccount", scopes::LINK_MANAGE),
    ("/medins.identity.v1.PartnerLinkService/UnlinkPartnerAccount", scopes::LINK_MANAGE),
    ("/medins.identity.v1.PartnerLinkService/ListPartnerLinks", scopes::LINK_MANAGE),
    ("/medins.identity.v1.PersonTokenService/IssuePersonToken", scopes::TOKEN_ISSUE),
    ("/medins.identity.v1.PersonTokenService/GetPublicKeys", scopes::KEYS_READ),
    ("/medins.identity.v1.AccessHistoryService/ListMyAccessHistory", scopes::AUDIT_READ),
    ("/medins.identity.v1.FaceVerificationService/StartFaceVerification", scopes::FACE_START),
    ("/medins.identity.v1.FaceVerificationService/SubmitFaceResult", scopes::FACE_SUBMIT),
    ("/medins.identity.v1.FaceVerificationService/GetFaceVerification", scopes::FACE_READ),
    ("/medins.identity.v1.FaceVerificationService/WatchFaceVerification", scopes::FACE_READ),
];

/// What a test or an embedding process may replace.
#[derive(Debug, Clone)]
pub struct Dependencies {
    /// The clock.
    pub clock: SharedClock,
    /// Where SMS codes go, instead of what the config says (tests: `sms::MemorySmsSender`).
    pub sms_sender: Option<Arc<dyn sms::SmsSender>>,
    /// Who confirms real names, instead of what the config says.
    pub identity_authority: Option<Arc<dyn authority::IdentityAuthority>>,
}

impl Default for Dependencies {
    fn default() -> Self {
        Self { clock: Arc::new(SystemClock), sms_sender: None, identity_authority: None }
    }
}

/// A built identity-svc, ready to serve.
pub struct IdentityService {
    state: Arc<State>,
    partners: Partners,
    config: Config,
    /// Delivers face outcomes to insurance-svc; `None` when no insurance-svc is configured.
    outbox: Option<outbox::OutboxWorker>,
}

impl IdentityService {
    /// Connects the database (migrating unless told not to), loads partners and keys.
    pub async fn build(config: Config, dependencies: Dependencies) -> anyhow::Result<Self> {
        let keys = DataKeys::from_env_or_file(config.data_keys_file.as_deref()).context("personal-data keys")?;
        let partners = Partners::load(&config.common.partners_file)?;
        // Refuse to start rather than let codes or real-name checks silently go nowhere.
        let sms_sender = match dependencies.sms_sender {
            Some(sender) => sender,
            None => sms::sender_from_config(&config)?,
        };
        let identity_authority = match dependencies.identity_authority {
            Some(authority) => authority,
            None => authority::from_config(&config)?,
        };
        let audit_keys = config.common.audit_keys()?;
        let db = Db::connect(&config.common.database_url, &config.common.pool_options())?;
        if !config.common.no_migrate {
            db.migrate(store::MIGRATIONS).await.context("identity migrations")?;
        }
        let clock = dependencies.clock;
        let face_threshold =
            domain::face::Threshold::new(config.face.face_threshold).context("--face-threshold must be from 0 to 1")?;
        let face = service::face::FaceContext::new(
            store::face::FaceStore::new(db.clone()),
            face_threshold,
            config.face.face_watch_poll_interval,
        );
        let outbox = outbox::OutboxWorker::from_config(
            &config.outbox,
            config.common.peer_transport(),
            db.clone(),
            face.outbox_wake(),
        )?;
        let token_keys_file =
            config.tokens.token_keys_file.as_deref().context(
                "person-token keys: set --token-keys-file (MEDINS_TOKEN_KEYS_FILE); `medins up` creates one",
            )?;
        let person_tokens = Arc::new(
            service::person_token::PersonTokens::load(token_keys_file, medins_common::clock::Clock::now(&*clock))
                .context("person-token keys")?,
        );
        let revocations = store::revocation::RevocationStore::new(db.clone());
        // Tokens are refused (fail closed) until the revocations were read once, and again
        // whenever they could not be refreshed for a few seconds.
        person_tokens.verifier().revocations().require_refresh_within(REVOCATION_MAX_STALENESS);
        revocations.refresh(person_tokens.verifier().revocations(), &clock).await.context("token revocations")?;
        // The same insurance-svc endpoint and key as the outbox: the access history merges its
        // audit records.
        let insurance = match (&config.outbox.insurance_url, &config.outbox.insurance_api_key) {
            (Some(url), Some(api_key)) => {
                Some(clients::insurance::InsuranceClient::connect_lazy(&medins_common::peer::PeerOptions {
                    url: url.clone(),
                    api_key: api_key.clone(),
                    timeout: config.outbox.outbox_timeout,
                    transport: config.common.peer_transport(),
                })?)
            }
            _ => None,
        };
        let state = Arc::new(State {
            insurance,
            assurance: store::assurance::AssuranceStore::new(db.clone(), FieldCipher::new(&keys)),
            revocations,
            face,
            person_tokens,
            links: store::link::LinkStore::new(db.clone(), FieldCipher::new(&keys), BlindIndex::new(&keys)),
            audit: medins_common::audit::AuditStore::new(db.clone(), clock.clone(), "identity-svc", audit_keys),
            sms: store::sms::SmsStore::new(db.clone(), FieldCipher::new(&keys), BlindIndex::new(&keys), clock.clone()),
            sms_sender,
            identity_authority,
            persons: PersonStore::new(db.clone(), FieldCipher::new(&keys), BlindIndex::new(&keys)),
            idempotency: Idempotency::new(db.clone(), clock.clone(), config.common.idempotency_options(), &keys),
            partners: partners.clone(),
            db,
            clock,
        });
        // Audit rows of the first format (one hash chain) are re-sealed once
        // (docs/architecture.md#who-may-call-what).
        state.audit.reseal_legacy().await.context("re-sealing first-format audit rows")?;
        // Rows written before names had a blind index get one (once; idempotent).
        let named = state.persons.backfill_name_index().await.context("name index backfill")?;
        if named > 0 {
            tracing::info!(rows = named, "name blind index filled in");
        }
        Ok(Self { state, partners, config, outbox })
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
        let faces = medins_proto::identity::v1::face_verification_service_server::FaceVerificationServiceServer::new(
            service::face::FaceApi::new(self.state.clone()),
        )
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let purger = self.state.idempotency.spawn_purger(std::time::Duration::from_secs(600));
        let token_keys_watcher = self
            .state
            .person_tokens
            .spawn_watcher(self.state.clock.clone(), self.config.tokens.token_keys_check_interval);
        let links = PartnerLinkServiceServer::new(service::link::PartnerLinkApi::new(self.state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let person_tokens =
            PersonTokenServiceServer::new(service::person_token::PersonTokenApi::new(self.state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
        let access_history = AccessHistoryServiceServer::new(service::audit::AccessHistoryApi::new(self.state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let sms = SmsServiceServer::new(service::sms::SmsApi::new(self.state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let person_facts = PersonFactsServiceServer::new(PersonFactsApi::new(self.state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        // Background work lives exactly as long as this future: dropped (aborted) with it.
        let _background = BackgroundTasks(vec![
            self.state.revocations.clone().spawn_refresher(self.state.person_tokens.clone(), self.state.clock.clone()),
            sweeper::spawn(self.state.clone(), self.config.face.face_sweep_interval),
            match self.outbox {
                Some(worker) => worker.spawn(),
                None => {
                    tracing::info!(
                        "outbox delivery to insurance-svc is off (--insurance-url / --insurance-api-key unset): \
                         face outcomes wait in face_outbox"
                    );
                    tokio::spawn(async {})
                }
            },
        ]);
        let definition = ServiceDefinition {
            name: "identity-svc",
            grpc_services: vec![
                service_name::<PersonServiceServer<PersonApi>>(),
                service_name::<PartnerLinkServiceServer<service::link::PartnerLinkApi>>(),
                service_name::<PersonTokenServiceServer<service::person_token::PersonTokenApi>>(),
                service_name::<AccessHistoryServiceServer<service::audit::AccessHistoryApi>>(),
                service_name::<SmsServiceServer<service::sms::SmsApi>>(),
                service_name::<PersonFactsServiceServer<PersonFactsApi>>(),
                service_name::<
                    medins_proto::identity::v1::face_verification_service_server::FaceVerificationServiceServer<
                        service::face::FaceApi,
                    >,
                >(),
            ],
            routes: Routes::new(persons)
                .add_service(faces)
                .add_service(links)
                .add_service(person_tokens)
                .add_service(access_history)
                .add_service(sms)
                .add_service(person_facts),
            partners: self.partners,
            method_scopes: METHOD_SCOPES,
            db: self.state.db.clone(),
        };
        let checkpointer = self.state.audit.spawn_checkpointer(self.config.common.audit_checkpoint_interval);
        let result = serve(definition, listener, self.config.common.server_options(), shutdown).await;
        checkpointer.abort();
        // Seal what the drained calls appended, so a stopped replica leaves nothing unsealed.
        if let Err(error) = self.state.audit.checkpoint_now().await {
            tracing::warn!(%error, "final audit checkpoint failed; the next replica to run seals these rows");
        }
        purger.abort();
        token_keys_watcher.abort();
        result
    }
}

/// Tasks aborted when dropped: the sweeper and outbox worker stop with the server, also when
/// the server's own task is aborted.
struct BackgroundTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
