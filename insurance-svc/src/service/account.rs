//! `medins.insurance.v1.AccountService`.

use medins_common::{
    ApiError, ApiResult, Reason,
    auth::{Partner, PartnerKind},
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
use uuid::Uuid;

use super::{
    SharedState,
    access::{CallAccess, HandlerFacts},
};
use crate::domain::{
    access::{self, Standing},
    account::{Account, AccountStatus, Scheme, account_terms},
    ledger::{self, Entry, EntryCursor, EntryKind},
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
            EntryKind::ClaimReimbursement => pb::EntryKind::ClaimReimbursement,
        } as i32,
        amount_cents: entry.amount_cents,
        balance_after_cents: entry.balance_after_cents,
        reference: entry.reference.clone(),
        created_at: Some(timestamp(entry.created_at)),
    }
}

fn account_not_found() -> ApiError {
    ApiError::of(Reason::AccountNotFound, "no such account")
}

/// The account as `standing` may see it: an employer gets it without its balance (it sees its
/// own contributions only, and a balance tells how the person spent).
fn account_view(account: &Account, standing: Standing) -> pb::Account {
    let mut message = account_message(account);
    if standing == Standing::Employer {
        message.balance_cents = 0;
    }
    message
}

/// A ledger entry as `standing` may see it: an employer gets its own contribution without the
/// balance after it.
fn entry_view(entry: &Entry, standing: Standing) -> pb::AccountEntry {
    let mut message = entry_message(entry);
    if standing == Standing::Employer {
        message.balance_after_cents = 0;
    }
    message
}

/// The facts about the caller and an account that only this service can read: whether the
/// caller is the EMPLOYER partner speaking for the account's employer code.
fn account_facts(caller: &Partner, account: &Account) -> HandlerFacts {
    HandlerFacts {
        employer: caller.kind == PartnerKind::Employer
            && access::speaks_for(&caller.employer_codes, account.employer_code.as_deref()),
        ..HandlerFacts::default()
    }
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    async fn open_account(
        &self,
        request: Request<OpenAccountRequest>,
    ) -> Result<Response<OpenAccountResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = access.caller.clone();
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
        // An employer opens EMPLOYEE accounts under its own codes only: refused from the request
        // alone, before any person is looked up, so it learns nothing about anyone.
        let employer = caller.kind == PartnerKind::Employer;
        if employer {
            access::require_own_employer_code(&caller.employer_codes, terms.employer_code.as_deref().unwrap_or(""))?;
        }
        let facts = HandlerFacts {
            employer,
            holder_present: matches!(body.person, Some(open_account_request::Person::Identity(_))),
            ..HandlerFacts::default()
        };
        // Named by id: decided before identity-svc is asked, so a refusal does not depend on
        // whether the person exists. Named by name + ID number: the match is the standing.
        if let Some(open_account_request::Person::PersonId(id)) = &body.person {
            let person = require_uuid("person_id", id)?;
            access::person_token(access.rule, caller.kind, access.token_subject, access::Named::ById)?;
            access.decide(state, person, facts).await?;
        }
        // The person, once known (allowed or refused), for the access history.
        let person_id = std::sync::OnceLock::new();
        let result: Result<OpenAccountResponse, Status> = state
            .idempotency
            .run(&caller.id, "OpenAccount", request.metadata(), body, || async {
                let person = self.person_of(&caller.id, body.person.as_ref()).await?;
                let id = require_uuid("person_id", &person.person_id)?;
                let _ = person_id.set(id);
                let standing = access.decide(state, id, facts).await?;
                // The birth date (for age rules) comes over a SERVICE-only call: no partner view
                // carries it.
                let birth_date = state.identity.get_person_birth_date(&caller.id, id).await?;
                let account = state.accounts.open(id, birth_date, terms, state.clock.stored_now()).await?;
                tracing::info!(account_id = %account.id, person_id = %id, partner = %caller.id, "account opened");
                Ok(OpenAccountResponse { account: Some(account_view(&account, standing)) })
            })
            .await;
        let person_id = person_id.get().copied().or_else(|| match &body.person {
            Some(open_account_request::Person::PersonId(id)) => Uuid::parse_str(id).ok(),
            _ => None,
        });
        // Only a person that exists is recorded: by id, one the request named and the access
        // table let through; by name + ID number, one identity-svc matched.
        let recorded = match (&result, &body.person) {
            (Err(status), Some(open_account_request::Person::PersonId(_)))
                if status.code() == tonic::Code::NotFound =>
            {
                None
            }
            _ => person_id,
        };
        access.record(state, recorded, &result).await;
        result.map(Response::new)
    }

    async fn get_account(&self, request: Request<GetAccountRequest>) -> Result<Response<GetAccountResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let account = match &request.get_ref().key {
            Some(get_account_request::Key::AccountId(id)) => {
                state.accounts.find(require_uuid("account_id", id)?).await?
            }
            Some(get_account_request::Key::PersonId(id)) => {
                state.accounts.find_open_by_person(require_uuid("person_id", id)?).await?
            }
            None => {
                return Err(
                    ApiError::invalid_field(Reason::InvalidArgument, "key", "set account_id or person_id").into()
                );
            }
        };
        let account = account.ok_or_else(account_not_found)?;
        let result = async {
            let standing = access.decide(state, account.person_id, account_facts(&access.caller, &account)).await?;
            Ok(GetAccountResponse { account: Some(account_view(&account, standing)) })
        }
        .await;
        access.record(state, Some(account.person_id), &result).await;
        result.map(Response::new)
    }

    async fn credit_contribution(
        &self,
        request: Request<CreditContributionRequest>,
    ) -> Result<Response<CreditContributionResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = access.caller.clone();
        let body = request.get_ref();
        let account_id = require_uuid("account_id", &body.account_id)?;
        let contribution = ledger::contribution(body.amount_cents, &body.reference)?;
        let account = state.accounts.find(account_id).await?.ok_or_else(account_not_found)?;
        let result: Result<CreditContributionResponse, Status> = async {
            let standing = access.decide(state, account.person_id, account_facts(&caller, &account)).await?;
            state
                .idempotency
                .run(&caller.id, "CreditContribution", request.metadata(), body, || async {
                    let (entry, account) =
                        state.ledger.credit(account_id, contribution, &caller.id, state.clock.stored_now()).await?;
                    tracing::info!(%account_id, entry_id = %entry.id, partner = %caller.id, "contribution credited");
                    Ok(CreditContributionResponse {
                        entry: Some(entry_view(&entry, standing)),
                        account: Some(account_view(&account, standing)),
                    })
                })
                .await
        }
        .await;
        access.record(state, Some(account.person_id), &result).await;
        result.map(Response::new)
    }

    async fn list_account_entries(
        &self,
        request: Request<ListAccountEntriesRequest>,
    ) -> Result<Response<ListAccountEntriesResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let body = request.get_ref();
        let account_id = require_uuid("account_id", &body.account_id)?;
        let page_size = ledger::page_size(body.page_size)?;
        let cursor = match body.page_token.trim() {
            "" => None,
            token => Some(EntryCursor::decode(token, account_id)?),
        };
        let account = state.accounts.find(account_id).await?.ok_or_else(account_not_found)?;
        let result: Result<ListAccountEntriesResponse, Status> = async {
            let standing = access.decide(state, account.person_id, account_facts(&access.caller, &account)).await?;
            // An employer reads the contributions it paid in, nothing else of the ledger.
            let only = (standing == Standing::Employer).then(|| access.caller.id.clone());
            let (entries, next) = state.ledger.list(account_id, cursor, page_size, only).await?;
            Ok(ListAccountEntriesResponse {
                entries: entries.iter().map(|entry| entry_view(entry, standing)).collect(),
                next_page_token: next.map(|cursor| cursor.encode()).unwrap_or_default(),
            })
        }
        .await;
        access.record(state, Some(account.person_id), &result).await;
        result.map(Response::new)
    }

    async fn suspend_account(
        &self,
        request: Request<SuspendAccountRequest>,
    ) -> Result<Response<SuspendAccountResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = access.caller.clone();
        let body = request.get_ref();
        let account_id = require_uuid("account_id", &body.account_id)?;
        // The reason is checked but not logged: free text may hold personal data.
        ledger::ops_reason(&body.reason)?;
        let account = state.accounts.find(account_id).await?.ok_or_else(account_not_found)?;
        let result: Result<SuspendAccountResponse, Status> = async {
            access.decide(state, account.person_id, HandlerFacts::default()).await?;
            state
                .idempotency
                .run(&caller.id, "SuspendAccount", request.metadata(), body, || async {
                    let account =
                        state.ledger.change_status(account_id, ledger::suspend, state.clock.stored_now()).await?;
                    tracing::info!(%account_id, partner = %caller.id, "account suspended");
                    Ok(SuspendAccountResponse { account: Some(account_message(&account)) })
                })
                .await
        }
        .await;
        access.record(state, Some(account.person_id), &result).await;
        result.map(Response::new)
    }

    async fn resume_account(
        &self,
        request: Request<ResumeAccountRequest>,
    ) -> Result<Response<ResumeAccountResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = access.caller.clone();
        let body = request.get_ref();
        let account_id = require_uuid("account_id", &body.account_id)?;
        let account = state.accounts.find(account_id).await?.ok_or_else(account_not_found)?;
        let result: Result<ResumeAccountResponse, Status> = async {
            access.decide(state, account.person_id, HandlerFacts::default()).await?;
            state
                .idempotency
                .run(&caller.id, "ResumeAccount", request.metadata(), body, || async {
                    let account =
                        state.ledger.change_status(account_id, ledger::resume, state.clock.stored_now()).await?;
                    tracing::info!(%account_id, partner = %caller.id, "account resumed");
                    Ok(ResumeAccountResponse { account: Some(account_message(&account)) })
                })
                .await
        }
        .await;
        access.record(state, Some(account.person_id), &result).await;
        result.map(Response::new)
    }
}
