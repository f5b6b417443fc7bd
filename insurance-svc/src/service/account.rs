//! `medins.insurance.v1.AccountService`.

use chrono::NaiveDate;
use medins_common::{
    ApiError, ApiResult, Reason,
    auth::Caller,
    convert::timestamp,
    error::{require_enum, require_uuid},
};
use medins_proto::{
    identity::v1::PersonView,
    insurance::v1::{
        self as pb, GetAccountRequest, GetAccountResponse, OpenAccountRequest, OpenAccountResponse,
        account_service_server::AccountService, get_account_request, open_account_request,
    },
};
use tonic::{Request, Response, Status};

use super::SharedState;
use crate::{
    domain::account::{AccountStatus, Scheme, account_terms},
    store::account::Account,
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
    async fn person_of(&self, person: Option<&open_account_request::Person>) -> ApiResult<PersonView> {
        match person {
            Some(open_account_request::Person::PersonId(id)) => {
                let id = require_uuid("person_id", id)?;
                self.state.identity.get_person(&id.to_string(), "").await
            }
            Some(open_account_request::Person::Identity(identity)) => {
                self.state.identity.resolve_person(&identity.name, &identity.id_number, "identity.").await
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

fn birth_date_of(person: &PersonView) -> ApiResult<NaiveDate> {
    person
        .birth_date
        .as_ref()
        .and_then(|d| NaiveDate::from_ymd_opt(d.year, d.month as u32, d.day as u32))
        .ok_or_else(|| ApiError::internal("identity-svc answered a person without a birth date"))
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
        if body.person.is_none() {
            return Err(ApiError::invalid_field(Reason::InvalidArgument, "person", "set person_id or identity").into());
        }
        let state = &self.state;
        let response = state
            .idempotency
            .run(&caller.id, "OpenAccount", request.metadata(), body, || async {
                let person = self.person_of(body.person.as_ref()).await?;
                let person_id = require_uuid("person_id", &person.person_id)?;
                let account =
                    state.accounts.open(person_id, birth_date_of(&person)?, terms, state.clock.stored_now()).await?;
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
}
