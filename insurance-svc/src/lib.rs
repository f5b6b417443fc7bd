//! insurance-svc: what a person may do with their insurance (docs/architecture.md#insurance-svc).
//! Holds no raw personal data: persons are opaque ids resolved through identity-svc, and the one
//! piece of personal data it keeps, a card's mailing address, is encrypted per field
//! (docs/architecture.md#personal-data).

pub mod clients;
pub mod code_keys;
pub mod config;
pub mod domain;
pub mod heavy;
pub mod person_tokens;
pub mod relationship;
pub mod service;
pub mod store;

use std::sync::Arc;

use anyhow::Context as _;
use medins_common::{
    auth::{MethodScopes, Partners, scopes},
    clock::{SharedClock, SystemClock},
    crypto::{DataKeys, FieldCipher},
    db::Db,
    idempotency::Idempotency,
    server::{ServiceDefinition, serve, service_name},
};
use medins_proto::insurance::v1::{
    account_service_server::AccountServiceServer, identity_event_service_server::IdentityEventServiceServer,
};
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use config::Config;

use crate::{
    clients::identity::IdentityClient,
    service::{State, account::AccountApi, events::IdentityEventApi},
    store::account::AccountStore,
};

/// The scope each RPC of insurance-svc needs (docs/architecture.md#who-may-call-what).
pub const METHOD_SCOPES: MethodScopes = &[
    ("/medins.insurance.v1.AccountService/OpenAccount", scopes::ACCOUNT_OPEN),
    ("/medins.insurance.v1.AccountService/GetAccount", scopes::ACCOUNT_READ),
    ("/medins.insurance.v1.AccountService/CreditContribution", scopes::ACCOUNT_CREDIT),
    ("/medins.insurance.v1.AccountService/ListAccountEntries", scopes::ACCOUNT_READ),
    ("/medins.insurance.v1.AccountService/SuspendAccount", scopes::ACCOUNT_MANAGE),
    ("/medins.insurance.v1.AccountService/ResumeAccount", scopes::ACCOUNT_MANAGE),
    ("/medins.insurance.v1.SettlementService/Settle", scopes::SETTLEMENT_WRITE),
    ("/medins.insurance.v1.SettlementService/PreSettle", scopes::SETTLEMENT_WRITE),
    ("/medins.insurance.v1.SettlementService/ReverseSettlement", scopes::SETTLEMENT_REVERSE),
    ("/medins.insurance.v1.SettlementService/GetAnnualExpenses", scopes::EXPENSES_READ),
    ("/medins.insurance.v1.SettlementService/ListSettlements", scopes::SETTLEMENT_READ),
    ("/medins.insurance.v1.SettlementService/GetSettlement", scopes::SETTLEMENT_READ),
    ("/medins.insurance.v1.ReimbursementService/SubmitClaim", scopes::CLAIMS_SUBMIT),
    ("/medins.insurance.v1.ReimbursementService/ReviewClaim", scopes::CLAIMS_REVIEW),
    ("/medins.insurance.v1.ReimbursementService/ListClaims", scopes::CLAIMS_READ),
    ("/medins.insurance.v1.IdentityEventService/FaceVerificationCompleted", scopes::SERVICE),
    ("/medins.insurance.v1.IdentityEventService/PersonSuperseded", scopes::SERVICE),
    ("/medins.insurance.v1.PersonAccessService/ListPersonAccesses", scopes::SERVICE),
    ("/medins.insurance.v1.VoucherService/ActivateVoucher", scopes::VOUCHER_ACTIVATE),
    ("/medins.insurance.v1.VoucherService/GetVoucher", scopes::VOUCHER_READ),
    ("/medins.insurance.v1.VoucherService/SuspendVoucher", scopes::VOUCHER_MANAGE),
    ("/medins.insurance.v1.VoucherService/ResumeVoucher", scopes::VOUCHER_MANAGE),
    ("/medins.insurance.v1.CodeService/IssueCode", scopes::CODE_ISSUE),
    ("/medins.insurance.v1.CodeService/VerifyCode", scopes::CODE_VERIFY),
    ("/medins.insurance.v1.CodeService/OpenVisitWithCard", scopes::CODE_VERIFY),
    ("/medins.insurance.v1.CodeService/GetCodeKeys", scopes::KEYS_READ),
    ("/medins.insurance.v1.CatalogService/LookupCatalogItem", scopes::CATALOG_READ),
    ("/medins.insurance.v1.CatalogService/SearchCatalog", scopes::CATALOG_READ),
    ("/medins.insurance.v1.CrossRegionService/FileCrossRegionCare", scopes::CROSSREGION_MANAGE),
    ("/medins.insurance.v1.CrossRegionService/ListCrossRegionFilings", scopes::CROSSREGION_READ),
    ("/medins.insurance.v1.CrossRegionService/CancelCrossRegionFiling", scopes::CROSSREGION_MANAGE),
    ("/medins.insurance.v1.FamilyService/AddFamilyMember", scopes::FAMILY_MANAGE),
    ("/medins.insurance.v1.FamilyService/GetFamilyBinding", scopes::FAMILY_READ),
    ("/medins.insurance.v1.FamilyService/ListFamilyMembers", scopes::FAMILY_READ),
    ("/medins.insurance.v1.FamilyService/ListWhoBoundMe", scopes::FAMILY_READ),
    ("/medins.insurance.v1.FamilyService/RemoveFamilyMember", scopes::FAMILY_MANAGE),
    ("/medins.insurance.v1.FamilyService/SetFamilyAid", scopes::FAMILY_MANAGE),
    ("/medins.insurance.v1.FamilyService/StartCounterOwnerCheck", scopes::FAMILY_COUNTER),
    ("/medins.insurance.v1.FamilyService/BindFamilyMemberAtCounter", scopes::FAMILY_COUNTER),
    ("/medins.insurance.v1.FamilyService/ListFamilyBindingReviews", scopes::FAMILY_REVIEW),
    ("/medins.insurance.v1.FamilyService/ReviewFamilyBinding", scopes::FAMILY_REVIEW),
    ("/medins.insurance.v1.DocumentService/UploadDocument", scopes::DOCUMENT_UPLOAD),
    ("/medins.insurance.v1.DocumentService/GetDocument", scopes::DOCUMENT_READ),
    ("/medins.insurance.v1.DocumentService/DownloadDocument", scopes::DOCUMENT_READ),
    ("/medins.insurance.v1.DocumentService/GenerateCommitmentLetter", scopes::DOCUMENT_UPLOAD),
    ("/medins.insurance.v1.CardService/RecordCardFee", scopes::CARD_FEE),
    ("/medins.insurance.v1.CardService/ApplyForCard", scopes::CARD_APPLY),
    ("/medins.insurance.v1.CardService/ApplyForCardsBatch", scopes::CARD_BATCH),
    ("/medins.insurance.v1.CardService/ReviewCardApplication", scopes::CARD_MANAGE),
    ("/medins.insurance.v1.CardService/RecordCardProduction", scopes::CARD_MANAGE),
    ("/medins.insurance.v1.CardService/RecordCardDispatch", scopes::CARD_MANAGE),
    ("/medins.insurance.v1.CardService/ConfirmCardDelivery", scopes::CARD_MANAGE),
    ("/medins.insurance.v1.CardService/GetCardApplication", scopes::CARD_READ),
    ("/medins.insurance.v1.CardService/ListCardApplications", scopes::CARD_MANAGE),
    ("/medins.insurance.v1.CardService/ActivateCard", scopes::CARD_ACTIVATE),
    ("/medins.insurance.v1.CardService/ChangeCardPin", scopes::CARD_PIN),
    ("/medins.insurance.v1.CardService/ResetCardPin", scopes::CARD_PIN),
    ("/medins.insurance.v1.CardService/GetCard", scopes::CARD_READ),
    ("/medins.insurance.v1.CardService/ReportCardLoss", scopes::CARD_LOSS),
    ("/medins.insurance.v1.CardService/CancelCardLossReport", scopes::CARD_LOSS),
    ("/medins.insurance.v1.CardService/ReplaceCard", scopes::CARD_APPLY),
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
    /// Loads the personal-data keys, connects the database (migrating unless told not to),
    /// loads partners, prepares the identity-svc client (connected on first use).
    pub async fn build(config: Config, dependencies: Dependencies) -> anyhow::Result<Self> {
        let keys = DataKeys::from_env_or_file(config.data_keys_file.as_deref()).context("personal-data keys")?;
        let partners = Partners::load(&config.common.partners_file)?;
        let audit_keys = config.common.audit_keys()?;
        let db = Db::connect(&config.common.database_url, &config.common.pool_options())?;
        if !config.common.no_migrate {
            db.migrate(store::MIGRATIONS).await.context("insurance migrations")?;
        }
        let identity = IdentityClient::connect_lazy(&config.identity_client_options())?;
        let policy = Arc::new(config.policy_table()?);
        let catalog = Arc::new(config.catalog()?);
        let clock = dependencies.clock;
        let code_keys = Arc::new(match &config.code_keys_file {
            Some(path) => code_keys::CodeKeys::load(path, clock.now())
                .with_context(|| format!("loading the code key file {}", path.display()))?,
            None => {
                // Embedding without a key file: codes verify on this process only.
                tracing::warn!("no code key file: payment codes are signed with a key of this process only");
                let ring = medins_common::keyring::SigningKeyRing::generate(domain::code::CODE_KEY_RING, clock.now());
                code_keys::CodeKeys::from_ring(ring, clock.now())
            }
        });
        let objects = store::objects::DocumentObjects::from_url(
            config.document_store.as_deref().context("no document store configured (--document-store)")?,
        )
        .context("opening the document store")?;
        let person_tokens = Arc::new(person_tokens::PersonTokenKeys::new(
            identity.clone(),
            clock.clone(),
            config.person_token_keys_min_refresh,
        ));
        let relationships = relationship::from_config(&config)?;
        let state = Arc::new(State {
            relationships,
            family_review_period: chrono::Duration::from_std(config.family_review_period)
                .context("--family-review-period")?,
            vouchers: store::voucher::VoucherStore::new(db.clone()),
            visits: store::visit::VisitStore::new(db.clone()),
            person_tokens,
            code_keys,
            holders: Arc::new(service::code::HolderCache::new(std::time::Duration::from_secs(60), 100_000)),
            accounts: AccountStore::new(db.clone()),
            documents: store::document::DocumentStore::new(db.clone()),
            objects,
            document_cipher: FieldCipher::new(&keys),
            pin_pepper: crate::domain::card_pin::PinPepper::from_keys(&keys),
            heavy: heavy::HeavyPool::new(config.decode_budget_bytes(), heavy::DEFAULT_WORKERS),
            family: store::family::FamilyStore::new(db.clone()),
            cards: store::card::CardStore::new(db.clone(), FieldCipher::new(&keys)),
            face_outcomes: store::face_outcome::FaceOutcomeStore::new(db.clone()),
            ledger: store::ledger::LedgerStore::new(db.clone()),
            settlements: store::settlement::SettlementStore::new(db.clone(), policy, catalog.clone()),
            catalog,
            cross_region: store::cross_region::CrossRegionStore::new(db.clone()),
            idempotency: Idempotency::new(db.clone(), clock.clone(), config.common.idempotency_options(), &keys),
            identity,
            audit: medins_common::audit::AuditStore::new(db.clone(), clock.clone(), "insurance-svc", audit_keys),
            partners: partners.clone(),
            db,
            clock,
        });
        // Audit rows of the first format (one hash chain) are re-sealed once
        // (docs/architecture.md#who-may-call-what).
        state.audit.reseal_legacy().await.context("re-sealing first-format audit rows")?;
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
        // Every service with the configured message size limit, both ways.
        macro_rules! limited {
            ($($server:ident)::+, $($api:ident)::+) => {
                $($server)::+::new($($api)::+::new(self.state.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max)
            };
        }
        let accounts = limited!(AccountServiceServer, AccountApi);
        let events = limited!(IdentityEventServiceServer, IdentityEventApi);
        let person_accesses = limited!(
            medins_proto::insurance::v1::person_access_service_server::PersonAccessServiceServer,
            service::person_access::PersonAccessApi
        );
        let settlements = limited!(
            medins_proto::insurance::v1::settlement_service_server::SettlementServiceServer,
            service::settlement::SettlementApi
        );
        let vouchers = limited!(
            medins_proto::insurance::v1::voucher_service_server::VoucherServiceServer,
            service::voucher::VoucherApi
        );
        let codes =
            limited!(medins_proto::insurance::v1::code_service_server::CodeServiceServer, service::code::CodeApi);
        let cards =
            limited!(medins_proto::insurance::v1::card_service_server::CardServiceServer, service::card::CardApi);
        let family = limited!(
            medins_proto::insurance::v1::family_service_server::FamilyServiceServer,
            service::family::FamilyApi
        );
        let documents = limited!(
            medins_proto::insurance::v1::document_service_server::DocumentServiceServer,
            service::document::DocumentApi
        );
        let catalog = limited!(
            medins_proto::insurance::v1::catalog_service_server::CatalogServiceServer,
            service::catalog::CatalogApi
        );
        let cross_region = limited!(
            medins_proto::insurance::v1::cross_region_service_server::CrossRegionServiceServer,
            service::cross_region::CrossRegionApi
        );
        let reimbursement = limited!(
            medins_proto::insurance::v1::reimbursement_service_server::ReimbursementServiceServer,
            service::claim::ReimbursementApi
        );
        let person_token_refresher = self.state.person_tokens.spawn_refresher(self.config.person_token_keys_refresh);
        let revocation_refresher = self.state.person_tokens.spawn_revocation_refresher();
        let code_keys_watcher =
            self.state.code_keys.spawn_watcher(self.state.clock.clone(), self.config.code_keys_check_interval);
        let purger = self.state.idempotency.spawn_purger(std::time::Duration::from_secs(600));
        let document_sweeper = store::document_sweeper::spawn(self.state.clone(), store::document_sweeper::EVERY);
        let review_sweeper =
            self.state.family.spawn_review_sweeper(self.state.clock.clone(), self.config.family_review_sweep_interval);
        let definition = ServiceDefinition {
            name: "insurance-svc",
            grpc_services: vec![
                service_name::<
                    medins_proto::insurance::v1::reimbursement_service_server::ReimbursementServiceServer<
                        service::claim::ReimbursementApi,
                    >,
                >(),
                service_name::<AccountServiceServer<AccountApi>>(),
                service_name::<
                    medins_proto::insurance::v1::voucher_service_server::VoucherServiceServer<
                        service::voucher::VoucherApi,
                    >,
                >(),
                service_name::<
                    medins_proto::insurance::v1::code_service_server::CodeServiceServer<service::code::CodeApi>,
                >(),
                service_name::<IdentityEventServiceServer<IdentityEventApi>>(),
                service_name::<
                    medins_proto::insurance::v1::person_access_service_server::PersonAccessServiceServer<
                        service::person_access::PersonAccessApi,
                    >,
                >(),
                service_name::<
                    medins_proto::insurance::v1::settlement_service_server::SettlementServiceServer<
                        service::settlement::SettlementApi,
                    >,
                >(),
                service_name::<
                    medins_proto::insurance::v1::family_service_server::FamilyServiceServer<service::family::FamilyApi>,
                >(),
                service_name::<
                    medins_proto::insurance::v1::document_service_server::DocumentServiceServer<
                        service::document::DocumentApi,
                    >,
                >(),
                service_name::<
                    medins_proto::insurance::v1::card_service_server::CardServiceServer<service::card::CardApi>,
                >(),
            ],
            routes: Routes::new(accounts)
                .add_service(events)
                .add_service(person_accesses)
                .add_service(vouchers)
                .add_service(codes)
                .add_service(settlements)
                .add_service(family)
                .add_service(documents)
                .add_service(cards)
                .add_service(catalog)
                .add_service(cross_region)
                .add_service(reimbursement),
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
        document_sweeper.abort();
        review_sweeper.abort();
        person_token_refresher.abort();
        revocation_refresher.abort();
        code_keys_watcher.abort();
        result
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_insurance_rpc_that_needs_assurance_level_2_is_served_here() {
        let level_2 = medins_common::assurance::LEVEL_2_METHODS.iter().filter(|m| m.starts_with("/medins.insurance."));
        let mut count = 0;
        for method in level_2 {
            assert!(super::METHOD_SCOPES.iter().any(|(served, _)| served == method), "{method} is not an RPC");
            count += 1;
        }
        assert_eq!(count, 3, "AddFamilyMember, SetFamilyAid, ApplyForCard");
    }
}
