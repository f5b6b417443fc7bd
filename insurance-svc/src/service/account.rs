//! `medins.insurance.v1.AccountService`.

use medins_common::{
    ApiError, ApiResult, Reason,
    auth::{Caller, PartnerKind},
    convert::timestamp,
    error::{require_enum, require_uuid},
};
use medins_proto::{
    identity::v1::PersonView,
    insurance::v1::{
        self as pb, CreditContributionRequest, CreditContributionResponse, GetAccountRequest, GetAccountResponse,
        ListAccountEntriesRequest, ListAccountEntriesResponse, OpenAccountRequest, OpenAccountResponse,
        ResumeAccountRequest, ResumeAccountResponse, SuspendAccountRequest, SuspendAccountResponse,
        account_service_server::AccountService, get_account_request, open_account_request,
    },
};
use tonic::{Request, Response, Status};

use super::{SharedState, settlement::authorize_person_read};
use crate::{
    domain::{
        account::{AccountStatus, Scheme, account_terms},
        ledger::{self, EntryCursor, EntryKind},
    },
    store::{account::Account, ledger::Entry},
};

/// The AccountService implementation.
pub struct AccountApi {
    state: SharedState,
}

impl AccountApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }

    /// Finds (or, for name + ID number, resolves) the person an account is for.
    async fn person_of(
        &self,
        acting_partner: &str,
        person: Option<&open_account_request::Person>,
    ) -> ApiResult<PersonView> {
        match person {
            Some(open_account_request::Person::PersonId(id)) => {
                let id = require_uuid("person_id", id)?;
                self.state.identity.get_person(acting_partner, &id.to_string(), "").await
            }
            Some(open_account_request::Person::Identity(identity)) => {
                self.state
                    .identity
                    .resolve_person(acting_partner, &identity.name, &identity.id_number, "identity.")
                    .await
            }
            None => Err(ApiError::invalid_field(Reason::InvalidArgument, "person", "set person_id or identity")),
        }
    }
}

/// The wire form of an account.
pub fn account_message(account: &Account) -> pb::Account {
    pb::Account {
        account_id: account.id.to_string(),
        person_id: account.person_id.to_string(),
        scheme: match account.scheme {
            Scheme::Employee => pb::Scheme::Employee,
            Scheme::Resident => pb::Scheme::Resident,
        } as i32,
        region_code: account.region_code.clone(),
        employer_code: account.employer_code.clone().unwrap_or_default(),
        status: match account.status {
            AccountStatus::Active => pb::AccountStatus::Active,
            AccountStatus::Suspended => pb::AccountStatus::Suspended,
            AccountStatus::Closed => pb::AccountStatus::Closed,
        } as i32,
        balance_cents: account.balance_cents,
        opened_at: Some(timestamp(account.opened_at)),
    }
}

/// The wire form of a ledger entry.
pub fn entry_message(entry: &Entry) -> pb::AccountEntry {
    pb::AccountEntry {
        entry_id: entry.id.to_string(),
        account_id: entry.account_id.to_string(),
        kind: match entry.kind {
            EntryKind::Contribution => pb::EntryKind::Contribution,
            EntryKind::Settlement => pb::EntryKind::Settlement,
            EntryKind::FamilyAid => pb::EntryKind::FamilyAid,
            EntryKind::Adjustment => pb::EntryKind::Adjustment,
            EntryKind::Reversal => pb::EntryKind::Reversal,
        } as i32,
        amount_cents: entry.amount_cents,
        balance_after_cents: entry.balance_after_cents,
        reference: entry.reference.clone(),
        created_at: Some(timestamp(entry.created_at)),
    }
}

fn account_not_found() -> ApiError {
    ApiError::not_found(Reason::AccountNotFound, "no such account")
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    async fn open_account(
        &self,
        request: Request<OpenAccountRequest>,
    ) -> Result<Response<OpenAccountResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let scheme = match require_enum::<pb::Scheme>("scheme", body.scheme)? {
            pb::Scheme::Employee => Scheme::Employee,
            pb::Scheme::Resident => Scheme::Resident,
            pb::Scheme::Unspecified => unreachable!("require_enum refuses the zero value"),
        };
        let terms = account_terms(scheme, &body.region_code, &body.employer_code)?;
        match &body.person {
            None => {
                return Err(
                    ApiError::invalid_field(Reason::InvalidArgument, "person", "set person_id or identity").into()
                );
            }
            // The one name rule, before anything is resolved or created.
            Some(open_account_request::Person::Identity(identity)) => {
                medins_common::name::require_name("identity.name", &identity.name)?;
            }
            Some(open_account_request::Person::PersonId(_)) => {}
        }
        let state = &self.state;
        let response = state
            .idempotency
            .run(&caller.id, "OpenAccount", request.metadata(), body, || async {
                let person = self.person_of(&caller.id, body.person.as_ref()).await?;
                let person_id = require_uuid("person_id", &person.person_id)?;
                // The birth date (for age rules) comes over a SERVICE-only call: no partner view
                // carries it.
                let birth_date = state.identity.get_person_birth_date(&caller.id, person_id).await?;
                let account = state.accounts.open(person_id, birth_date, terms, state.clock.stored_now()).await?;
                tracing::info!(account_id = %account.id, %person_id, partner = %caller.id, "account opened");
                Ok(OpenAccountResponse { account: Some(account_message(&account)) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_account(&self, request: Request<GetAccountRequest>) -> Result<Response<GetAccountResponse>, Status> {
        Caller::of(&request)?;
        let account = match &request.get_ref().key {
            Some(get_account_request::Key::AccountId(id)) => {
                self.state.accounts.find(require_uuid("account_id", id)?).await?
            }
            Some(get_account_request::Key::PersonId(id)) => {
                self.state.accounts.find_open_by_person(require_uuid("person_id", id)?).await?
            }
            None => {
                return Err(
                    ApiError::invalid_field(Reason::InvalidArgument, "key", "set account_id or person_id").into()
                );
            }
        };
        let account = account.ok_or_else(account_not_found)?;
        Ok(Response::new(GetAccountResponse { account: Some(account_message(&account)) }))
    }

    async fn credit_contribution(
        &self,
        request: Request<CreditContributionRequest>,
    ) -> Result<Response<CreditContributionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let account_id = require_uuid("account_id", &body.account_id)?;
        let contribution = ledger::contribution(body.amount_cents, &body.reference)?;
        let state = &self.state;
        let response = state
            .idempotency
            .run(&caller.id, "CreditContribution", request.metadata(), body, || async {
                let (entry, account) = state.ledger.credit(account_id, contribution, state.clock.stored_now()).await?;
                tracing::info!(%account_id, entry_id = %entry.id, partner = %caller.id, "contribution credited");
                Ok(CreditContributionResponse {
                    entry: Some(entry_message(&entry)),
                    account: Some(account_message(&account)),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_account_entries(
        &self,
        request: Request<ListAccountEntriesRequest>,
    ) -> Result<Response<ListAccountEntriesResponse>, Status> {
        Caller::of(&request)?;
        let body = request.get_ref();
        let account_id = require_uuid("account_id", &body.account_id)?;
        let page_size = ledger::page_size(body.page_size)?;
        let cursor = match body.page_token.trim() {
            "" => None,
            token => Some(EntryCursor::decode(token, account_id)?),
        };
        let account = self.state.accounts.find(account_id).await?.ok_or_else(account_not_found)?;
        // Employers pay into their employees' ledgers and reconcile against them.
        authorize_person_read(&self.state, &request, account.person_id, &[PartnerKind::Employer]).await?;
        let (entries, next) = self.state.ledger.list(account_id, cursor, page_size).await?;
        Ok(Response::new(ListAccountEntriesResponse {
            entries: entries.iter().map(entry_message).collect(),
            next_page_token: next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }

    async fn suspend_account(
        &self,
        request: Request<SuspendAccountRequest>,
    ) -> Result<Response<SuspendAccountResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let account_id = require_uuid("account_id", &body.account_id)?;
        // The reason is checked but not logged: free text may hold personal data.
        ledger::ops_reason(&body.reason)?;
        let state = &self.state;
        let response = state
            .idempotency
            .run(&caller.id, "SuspendAccount", request.metadata(), body, || async {
                let account = state.ledger.change_status(account_id, ledger::suspend, state.clock.stored_now()).await?;
                tracing::info!(%account_id, partner = %caller.id, "account suspended");
                Ok(SuspendAccountResponse { account: Some(account_message(&account)) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn resume_account(
        &self,
        request: Request<ResumeAccountRequest>,
    ) -> Result<Response<ResumeAccountResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let account_id = require_uuid("account_id", &body.account_id)?;
        let state = &self.state;
        let response = state
            .idempotency
            .run(&caller.id, "ResumeAccount", request.metadata(), body, || async {
                let account = state.ledger.change_status(account_id, ledger::resume, state.clock.stored_now()).await?;
                tracing::info!(%account_id, partner = %caller.id, "account resumed");
                Ok(ResumeAccountResponse { account: Some(account_message(&account)) })
            })
            .await?;
        Ok(Response::new(response))
    }
}
