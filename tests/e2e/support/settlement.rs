//! Helpers of the ledger and settlement tests: insured persons with money on their account and
//! an ACTIVE voucher, visits opened the real way (person token -> IssueCode -> VerifyCode at the
//! counter), and the raw year-to-date rows.

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl};
use insurance_svc::store::schema::{account_entries, accounts, annual_totals};
use medins_common::db::DbError;
use medins_proto::{
    identity::v1::FacePurpose,
    insurance::v1::{
        Account, AccountEntry, ActivateVoucherRequest, ActivationChannel, CreditContributionRequest, IssueCodeRequest,
        ListAccountEntriesRequest, OpenAccountRequest, Scheme, VerifyCodeRequest, open_account_request,
        settlement_service_client::SettlementServiceClient,
    },
};

use super::{Intercepted, Stack, interceptor, privacy, vouchers::FrontDoorPerson, with_person_token};

impl Stack {
    /// insurance-svc reimbursement claims, as the partner holding `key`.
    pub fn reimbursements(
        &self,
        key: Option<&str>,
    ) -> medins_proto::insurance::v1::reimbursement_service_client::ReimbursementServiceClient<Intercepted> {
        medins_proto::insurance::v1::reimbursement_service_client::ReimbursementServiceClient::with_interceptor(
            self.insurance_channel(),
            interceptor(key),
        )
    }

    /// insurance-svc settlements, as the partner holding `key`.
    pub fn settlements(&self, key: Option<&str>) -> SettlementServiceClient<Intercepted> {
        SettlementServiceClient::with_interceptor(self.insurance_channel(), interceptor(key))
    }

    /// A new adult who came through the bank's front door (registered, real name, linked, with
    /// person tokens from the bank), insured under `scheme` (the employer opens an EMPLOYEE
    /// account under its code, the bank a RESIDENT one with the person's token),
    /// with an ACTIVE voucher (a PASSED face session, channel BANK_APP) and, when
    /// `balance_cents > 0`, that much credited. Returns the account as it is then.
    pub async fn insured_with_balance(&self, scheme: Scheme, balance_cents: i64) -> Account {
        self.insured_holder(scheme, balance_cents).await.1
    }

    /// [`Stack::insured_with_balance`], also returning the person (seed and bank token).
    pub async fn insured_holder(&self, scheme: Scheme, balance_cents: i64) -> (FrontDoorPerson, Account) {
        let person = self.front_door_person(&self.keys.bank).await;
        let open = OpenAccountRequest {
            person: Some(open_account_request::Person::PersonId(person.person_id.clone())),
            scheme: scheme as i32,
            region_code: "110105".into(),
            employer_code: if scheme == Scheme::Employee { "ACME-01".into() } else { String::new() },
        };
        let account = if scheme == Scheme::Employee {
            self.accounts(Some(&self.keys.employer)).open_account(open).await
        } else {
            self.accounts(Some(&self.keys.bank)).open_account(with_person_token(open, &person.token)).await
        };
        let account = account.expect("open account").into_inner().account.expect("account");
        let face = self.passed_face_session(&self.keys.bank, &person, FacePurpose::VoucherActivation).await;
        self.vouchers(Some(&self.keys.bank))
            .activate_voucher(with_person_token(
                ActivateVoucherRequest {
                    person_id: person.person_id.clone(),
                    channel: ActivationChannel::BankApp as i32,
                    face_session_id: face,
                },
                &person.token,
            ))
            .await
            .expect("activate voucher");
        if balance_cents == 0 {
            return (person, account);
        }
        let account =
            self.credit(&account.account_id, balance_cents, &format!("seed-{}", uuid::Uuid::now_v7())).await.1;
        (person, account)
    }

    /// A fresh person token of `account`'s holder, issued to the bank (their front door).
    pub async fn holder_token(&self, account: &Account) -> String {
        self.fresh_person_token(&self.keys.bank, &account.person_id).await
    }

    /// Opens a visit of `account`'s holder at the counter of the partner holding `partner_key`,
    /// the way it happens: the holder's app (the bank) issues a code with the holder's token,
    /// the hospital or pharmacy verifies it. Returns the visit id.
    pub async fn open_visit(&self, account: &Account, partner_key: &str) -> String {
        let code = self.code_of(&account.person_id).await;
        self.codes(Some(partner_key))
            .verify_code(VerifyCodeRequest { code })
            .await
            .expect("verify code")
            .into_inner()
            .visit_id
    }

    /// A payment code of `person_id`, issued by the holder's app (the bank) with a fresh token of
    /// the holder.
    pub async fn code_of(&self, person_id: &str) -> String {
        let token = self.fresh_person_token(&self.keys.bank, person_id).await;
        let code = self
            .codes(Some(&self.keys.bank))
            .issue_code(with_person_token(
                IssueCodeRequest { holder_person_id: person_id.to_owned(), include_png: false },
                &token,
            ))
            .await
            .expect("issue code")
            .into_inner()
            .code;
        privacy::sensitive_token(&code);
        code
    }

    /// Credits a contribution as operators (any account: an employer credits only its
    /// employees'); returns the entry and the account after it.
    pub async fn credit(&self, account_id: &str, amount_cents: i64, reference: &str) -> (AccountEntry, Account) {
        let response = self
            .accounts(Some(&self.keys.ops))
            .credit_contribution(CreditContributionRequest {
                account_id: account_id.into(),
                amount_cents,
                reference: reference.into(),
            })
            .await
            .expect("credit contribution")
            .into_inner();
        (response.entry.expect("entry"), response.account.expect("account"))
    }

    /// Every ledger entry of an account, newest first (paged through as ops).
    pub async fn all_entries(&self, account_id: &str) -> Vec<AccountEntry> {
        let mut client = self.accounts(Some(&self.keys.ops));
        let mut entries = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_account_entries(ListAccountEntriesRequest {
                    account_id: account_id.into(),
                    page_size: 100,
                    page_token,
                })
                .await
                .expect("list entries")
                .into_inner();
            entries.extend(page.entries);
            if page.next_page_token.is_empty() {
                return entries;
            }
            page_token = page.next_page_token;
        }
    }

    /// The raw year-to-date row (total, fund, deductible) of a person, year and category
    /// ("OUTPATIENT", ...); zeros when there is none.
    pub async fn year_to_date(&self, person_id: &str, year: i32, category: &'static str) -> (i64, i64, i64) {
        let person_id = person_id.to_owned();
        self.insurance_db
            .run(move |conn| -> Result<_, DbError> {
                Ok(annual_totals::table
                    .find((person_id, year, category))
                    .select((annual_totals::total_cents, annual_totals::fund_cents, annual_totals::deductible_cents))
                    .first(conn)
                    .optional()?
                    .unwrap_or((0, 0, 0)))
            })
            .await
            .expect("read annual totals")
    }

    /// The stored balance of an account and the sum of its ledger entries.
    pub async fn balance_and_ledger_sum(&self, account_id: &str) -> (i64, i64) {
        let account_id = account_id.to_owned();
        self.insurance_db
            .run(move |conn| -> Result<_, DbError> {
                let balance: i64 = accounts::table.find(&account_id).select(accounts::balance_cents).first(conn)?;
                let amounts: Vec<i64> = account_entries::table
                    .filter(account_entries::account_id.eq(&account_id))
                    .select(account_entries::amount_cents)
                    .load(conn)?;
                Ok((balance, amounts.iter().sum()))
            })
            .await
            .expect("read balance")
    }

    /// Sets an account's status directly (there is no CloseAccount RPC yet).
    pub async fn force_account_status(&self, account_id: &str, status: &'static str) {
        let account_id = account_id.to_owned();
        self.insurance_db
            .run(move |conn| -> Result<_, DbError> {
                diesel::update(accounts::table.find(&account_id)).set(accounts::status.eq(status)).execute(conn)?;
                Ok(())
            })
            .await
            .expect("set account status");
    }
}
