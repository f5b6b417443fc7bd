//! `medins.insurance.v1.SettlementService`.

use medins_common::{
    ApiResult,
    auth::{Caller, PartnerKind},
    convert::timestamp,
    error::{require_enum, require_uuid},
};
use medins_proto::insurance::v1::{
    self as pb, GetAnnualExpensesRequest, GetAnnualExpensesResponse, ReverseSettlementRequest,
    ReverseSettlementResponse, SettleRequest, SettleResponse, settlement_service_server::SettlementService,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{SharedState, State};
use crate::{
    domain::{
        ledger,
        settlement::{self, Category, ExpenseTotals, PayFrom, SettlementStatus},
    },
    store::settlement::Settlement,
};

/// The SettlementService implementation.
pub struct SettlementApi {
    state: SharedState,
}

impl SettlementApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

/// Checks that the caller may read what belongs to `person_id` (a ledger, annual expenses).
///
/// OPS and SERVICE partners act for no one person, nor do the kinds in `also_exempt`. Every
/// other caller acts for the person and must send that person's token, issued to it
/// (`x-person-token`, DESIGN.md 4.3): PERSON_TOKEN_REQUIRED without one, PERSON_TOKEN_INVALID
/// with a bad one or one for someone else.
pub(crate) async fn authorize_person_read<T>(
    state: &State,
    request: &Request<T>,
    person_id: Uuid,
    also_exempt: &[PartnerKind],
) -> ApiResult<()> {
    let caller = Caller::of(request)?;
    if !also_exempt.contains(&caller.kind) {
        state.person_tokens.authorize(request, person_id).await?;
    }
    Ok(())
}

fn category_from_wire(raw: i32) -> ApiResult<Category> {
    Ok(match require_enum::<pb::Category>("category", raw)? {
        pb::Category::Outpatient => Category::Outpatient,
        pb::Category::Inpatient => Category::Inpatient,
        pb::Category::Pharmacy => Category::Pharmacy,
        pb::Category::Unspecified => unreachable!("require_enum refuses the zero value"),
    })
}

fn category_to_wire(category: Category) -> pb::Category {
    match category {
        Category::Outpatient => pb::Category::Outpatient,
        Category::Inpatient => pb::Category::Inpatient,
        Category::Pharmacy => pb::Category::Pharmacy,
    }
}

fn pay_from_from_wire(raw: i32) -> ApiResult<PayFrom> {
    Ok(match require_enum::<pb::PayFrom>("pay_from", raw)? {
        pb::PayFrom::HolderAccount => PayFrom::HolderAccount,
        pb::PayFrom::BinderAccount => PayFrom::BinderAccount,
        pb::PayFrom::Self_ => PayFrom::SelfPay,
        pb::PayFrom::Unspecified => unreachable!("require_enum refuses the zero value"),
    })
}

/// The wire form of a settlement.
pub fn settlement_message(s: &Settlement) -> pb::Settlement {
    pb::Settlement {
        settlement_id: s.id.to_string(),
        visit_id: s.visit_id.to_string(),
        person_id: s.person_id.to_string(),
        category: category_to_wire(s.category) as i32,
        total_cents: s.total_cents,
        fund_cents: s.fund_cents,
        account_cents: s.account_cents,
        self_cents: s.self_cents,
        pay_from: match s.pay_from {
            PayFrom::HolderAccount => pb::PayFrom::HolderAccount,
            PayFrom::BinderAccount => pb::PayFrom::BinderAccount,
            PayFrom::SelfPay => pb::PayFrom::Self_,
        } as i32,
        charged_account_id: s.charged_account_id.map(|id| id.to_string()).unwrap_or_default(),
        status: match s.status {
            SettlementStatus::Settled => pb::SettlementStatus::Settled,
            SettlementStatus::Reversed => pb::SettlementStatus::Reversed,
        } as i32,
        settled_at: Some(timestamp(s.settled_at)),
        reversed_at: s.reversed_at.map(timestamp),
    }
}

fn totals_message(t: &ExpenseTotals) -> pb::ExpenseTotals {
    pb::ExpenseTotals {
        total_cents: t.total_cents,
        fund_cents: t.fund_cents,
        account_cents: t.account_cents,
        self_cents: t.self_cents,
        settlements: t.settlements,
    }
}

#[tonic::async_trait]
impl SettlementService for SettlementApi {
    async fn settle(&self, request: Request<SettleRequest>) -> Result<Response<SettleResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let visit_id = require_uuid("visit_id", &body.visit_id)?;
        let pay_from = pay_from_from_wire(body.pay_from)?;
        let terms = settlement::settle_terms(
            body.total_cents,
            category_from_wire(body.category)?,
            pay_from,
            &body.items_summary,
        )?;
        let binder = settlement::binder_of(pay_from, &body.binder_person_id)?;
        let state = &self.state;
        let response = state
            .idempotency
            .run(&caller.id, "Settle", request.metadata(), body, || async {
                let settled =
                    state.settlements.settle(visit_id, &caller.id, terms, binder, state.clock.stored_now()).await?;
                tracing::info!(settlement_id = %settled.id, %visit_id, partner = %caller.id, "visit settled");
                Ok(SettleResponse { settlement: Some(settlement_message(&settled)) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn reverse_settlement(
        &self,
        request: Request<ReverseSettlementRequest>,
    ) -> Result<Response<ReverseSettlementResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let settlement_id = require_uuid("settlement_id", &body.settlement_id)?;
        // Checked, not logged: free text may hold personal data.
        ledger::ops_reason(&body.reason)?;
        let state = &self.state;
        let response = state
            .idempotency
            .run(&caller.id, "ReverseSettlement", request.metadata(), body, || async {
                let reversed = state.settlements.reverse(settlement_id, state.clock.stored_now()).await?;
                tracing::info!(%settlement_id, partner = %caller.id, "settlement reversed");
                Ok(ReverseSettlementResponse { settlement: Some(settlement_message(&reversed)) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_annual_expenses(
        &self,
        request: Request<GetAnnualExpensesRequest>,
    ) -> Result<Response<GetAnnualExpensesResponse>, Status> {
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let year = settlement::expenses_year(body.year)?;
        super::family::authorize_person_or_binder(&self.state, &request, person_id).await?;
        let lines = self.state.settlements.expense_lines(person_id, year).await?;
        let expenses = settlement::annual_expenses(&lines);
        Ok(Response::new(GetAnnualExpensesResponse {
            year,
            totals: Some(totals_message(&expenses.totals)),
            by_category: expenses
                .by_category
                .iter()
                .map(|(category, totals)| pb::CategoryExpenses {
                    category: category_to_wire(*category) as i32,
                    totals: Some(totals_message(totals)),
                })
                .collect(),
            by_month: expenses
                .by_month
                .iter()
                .map(|(month, totals)| pb::MonthExpenses { month: *month as i32, totals: Some(totals_message(totals)) })
                .collect(),
        }))
    }
}
