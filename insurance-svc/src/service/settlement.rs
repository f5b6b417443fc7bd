//! `medins.insurance.v1.SettlementService`.

use std::sync::OnceLock;

use medins_common::auth::{HospitalLevel, PartnerKind};
use medins_common::{
    ApiError, ApiResult, Reason,
    convert::timestamp,
    error::{require_enum, require_uuid},
};
use medins_proto::insurance::v1::{
    self as pb, GetAnnualExpensesRequest, GetAnnualExpensesResponse, PreSettleRequest, PreSettleResponse,
    ReverseSettlementRequest, ReverseSettlementResponse, SettleRequest, SettleResponse,
    settlement_service_server::SettlementService,
};
use tonic::{Request, Response, Status};

use super::{
    SharedState,
    access::{CallAccess, HandlerFacts},
};
use crate::{
    domain::{
        access::{self, Standing},
        catalog::CoverageClass,
        ledger,
        settlement::{
            self, BillItem, Category, ExpenseTotals, PayFrom, SettleCall, SettleTerms, Settlement, SettlementDetails,
            SettlementStatus, Site, Split, UnfiledCare,
        },
    },
    store::Audited,
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

fn category_from_wire(raw: i32) -> ApiResult<Category> {
    Ok(match require_enum::<pb::Category>("category", raw)? {
        pb::Category::Outpatient => Category::Outpatient,
        pb::Category::Inpatient => Category::Inpatient,
        pb::Category::Pharmacy => Category::Pharmacy,
        pb::Category::ChronicSpecial => Category::ChronicSpecial,
        pb::Category::Unspecified => unreachable!("require_enum refuses the zero value"),
    })
}

/// The wire form of a category.
pub(crate) fn category_to_wire(category: Category) -> pb::Category {
    match category {
        Category::Outpatient => pb::Category::Outpatient,
        Category::Inpatient => pb::Category::Inpatient,
        Category::Pharmacy => pb::Category::Pharmacy,
        Category::ChronicSpecial => pb::Category::ChronicSpecial,
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
        visit_id: s.visit_id.map(|id| id.to_string()).unwrap_or_default(),
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
        receipt: s.details.as_ref().map(|d| receipt_message(s.total_cents, &s.split(), d)),
    }
}

fn level_to_wire(level: HospitalLevel) -> pb::HospitalLevel {
    match level {
        HospitalLevel::Level1 => pb::HospitalLevel::HospitalLevel1,
        HospitalLevel::Level2 => pb::HospitalLevel::HospitalLevel2,
        HospitalLevel::Level3 => pb::HospitalLevel::HospitalLevel3,
        HospitalLevel::Pharmacy => pb::HospitalLevel::Pharmacy,
        HospitalLevel::Ungraded => pb::HospitalLevel::Ungraded,
    }
}

/// A settlement as a caller standing as `standing` sees it: without the person's id and the
/// charged account's id at the counter (`access::shows_person_id`, `access::shows_account_id`).
fn settlement_shown_to(standing: Standing, s: &Settlement) -> pb::Settlement {
    let mut message = settlement_message(s);
    if !access::shows_person_id(standing) {
        message.person_id.clear();
    }
    if !access::shows_account_id(standing) {
        message.charged_account_id.clear();
    }
    message
}

/// The wire form of a settlement's (or pre-settlement's) breakdown.
pub fn receipt_message(total_cents: i64, split: &Split, d: &SettlementDetails) -> pb::Receipt {
    pb::Receipt {
        total_cents,
        in_scope_cents: d.in_scope_cents,
        b_self_pay_cents: d.b_self_pay_cents,
        c_self_funded_cents: d.c_self_funded_cents,
        deductible_cents: split.deductible_cents,
        fund_cents: split.fund_cents,
        account_cents: split.account_cents,
        self_cents: split.self_cents,
        insured_region_code: d.insured_region_code.clone(),
        treatment_region_code: d.treatment_region_code.clone(),
        cross_region: d.cross_region,
        filing_id: d.filing_id.map(|id| id.to_string()).unwrap_or_default(),
        hospital_level: level_to_wire(d.hospital_level) as i32,
        ratio_bp: d.ratio_bp as i32,
        items: d
            .items
            .iter()
            .map(|i| pb::ReceiptItem {
                item: Some(pb::BillItem {
                    code: i.item.code.clone(),
                    quantity_milli: i.item.quantity_milli,
                    unit_price_cents: i.item.unit_price_cents,
                    department_code: i.item.department_code.clone(),
                    department_name: i.item.department_name.clone(),
                }),
                catalog_version: i.catalog_version.clone(),
                coverage_class: match i.class {
                    CoverageClass::A => pb::CoverageClass::A,
                    CoverageClass::B => pb::CoverageClass::B,
                    CoverageClass::C => pb::CoverageClass::C,
                } as i32,
                amount_cents: i.amount_cents,
                in_scope_cents: i.split.in_scope_cents,
                b_self_pay_cents: i.split.b_self_pay_cents,
                c_self_funded_cents: i.split.c_self_funded_cents,
                deductible_cents: i.split.deductible_cents,
                fund_cents: i.split.fund_cents,
                account_cents: i.split.account_cents,
                self_cents: i.split.self_cents,
            })
            .collect(),
        pre_settlement_id: d.pre_settlement_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// A bill's terms as a Settle or PreSettle request sends them, checked on their own.
fn terms_from_wire(
    total_cents: i64,
    category: i32,
    pay_from: PayFrom,
    items_summary: &str,
    items: &[pb::BillItem],
) -> ApiResult<SettleTerms> {
    let items = items
        .iter()
        .map(|i| BillItem {
            code: i.code.clone(),
            quantity_milli: i.quantity_milli,
            unit_price_cents: i.unit_price_cents,
            department_code: i.department_code.clone(),
            department_name: i.department_name.clone(),
        })
        .collect();
    settlement::settle_terms(total_cents, category_from_wire(category)?, pay_from, items_summary, items)
}

/// Where the calling partner gives care: its entry's region and level; without them, the
/// patient's insured region at UNGRADED (PHARMACY for a pharmacy) — see PartnerEntry.
fn site_of(caller: &medins_common::auth::Partner) -> Site {
    match &caller.care_site {
        Some(site) => Site {
            region_code: Some(site.region_code.clone()),
            level: site.level,
            unfiled: UnfiledCare::AsThePolicySays,
        },
        None => Site {
            region_code: None,
            level: if caller.kind == PartnerKind::Pharmacy { HospitalLevel::Pharmacy } else { HospitalLevel::Ungraded },
            unfiled: UnfiledCare::AsThePolicySays,
        },
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
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = access.caller.clone();
        let body = request.get_ref();
        let visit_id = require_uuid("visit_id", &body.visit_id)?;
        let pay_from = pay_from_from_wire(body.pay_from)?;
        let terms = terms_from_wire(body.total_cents, body.category, pay_from, &body.items_summary, &body.items)?;
        let binder = settlement::binder_of(pay_from, &body.binder_person_id)?;
        let pre_settlement_id = match body.pre_settlement_id.as_str() {
            "" => None,
            id => Some(require_uuid("pre_settlement_id", id)?),
        };
        let visit = state.visits.find(visit_id).await?.ok_or_else(visit_not_found)?;
        let inline = access.inline(state);
        let audited = OnceLock::new();
        let result = async {
            // Only the counter that opened the visit, for a bounded time, settles it; anyone else
            // gets the answer a missing visit gets.
            let counter_visit =
                access::counter_of_visit(&caller.id, &visit.partner_id, visit.opened_at, state.clock.stored_now());
            let standing = access
                .decide(state, visit.person_id, HandlerFacts { counter_visit, ..HandlerFacts::default() })
                .await?;
            state
                .idempotency
                .run(&caller.id, "Settle", request.metadata(), body, || async {
                    let call = SettleCall {
                        visit_id,
                        partner_id: caller.id.clone(),
                        site: site_of(&caller),
                        terms,
                        binder,
                        pre_settlement_id,
                        now: state.clock.stored_now(),
                    };
                    let (settled, audit) = state.settlements.settle(call, &inline).await?;
                    let _ = audited.set(audit);
                    tracing::info!(settlement_id = %settled.id, %visit_id, partner = %caller.id, "visit settled");
                    Ok(SettleResponse { settlement: Some(settlement_shown_to(standing, &settled)) })
                })
                .await
        }
        .await;
        access
            .record_unless(state, audited.get().copied().unwrap_or(Audited::No), Some(visit.person_id), &result)
            .await;
        result.map(Response::new)
    }

    async fn pre_settle(&self, request: Request<PreSettleRequest>) -> Result<Response<PreSettleResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = access.caller.clone();
        let body = request.get_ref();
        let visit_id = require_uuid("visit_id", &body.visit_id)?;
        let pay_from = pay_from_from_wire(body.pay_from)?;
        let terms = terms_from_wire(body.total_cents, body.category, pay_from, &body.items_summary, &body.items)?;
        let binder = settlement::binder_of(pay_from, &body.binder_person_id)?;
        let visit = state.visits.find(visit_id).await?.ok_or_else(visit_not_found)?;
        let result = async {
            // Settle's access, exactly: the counter that opened the visit, for a bounded time.
            let counter_visit =
                access::counter_of_visit(&caller.id, &visit.partner_id, visit.opened_at, state.clock.stored_now());
            access.decide(state, visit.person_id, HandlerFacts { counter_visit, ..HandlerFacts::default() }).await?;
            let call = SettleCall {
                visit_id,
                partner_id: caller.id.clone(),
                site: site_of(&caller),
                terms,
                binder,
                pre_settlement_id: None,
                now: state.clock.stored_now(),
            };
            let (new, pre) = state.settlements.pre_settle(call).await?;
            tracing::info!(pre_settlement_id = %pre.id, %visit_id, partner = %caller.id, "visit pre-settled");
            Ok(PreSettleResponse {
                pre_settlement_id: pre.id.to_string(),
                expires_at: Some(timestamp(pre.expires_at)),
                receipt: Some(receipt_message(pre.total_cents, &pre.split, new.details())),
            })
        }
        .await;
        access.record(state, Some(visit.person_id), &result).await;
        result.map(Response::new)
    }

    async fn reverse_settlement(
        &self,
        request: Request<ReverseSettlementRequest>,
    ) -> Result<Response<ReverseSettlementResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let caller = access.caller.clone();
        let body = request.get_ref();
        let settlement_id = require_uuid("settlement_id", &body.settlement_id)?;
        // Checked, not logged: free text may hold personal data.
        ledger::ops_reason(&body.reason)?;
        let found = state
            .settlements
            .find(settlement_id)
            .await?
            .ok_or_else(|| ApiError::not_found(Reason::SettlementNotFound, "no such settlement"))?;
        let result = async {
            access.decide(state, found.person_id, HandlerFacts::default()).await?;
            state
                .idempotency
                .run(&caller.id, "ReverseSettlement", request.metadata(), body, || async {
                    let reversed = state.settlements.reverse(settlement_id, state.clock.stored_now()).await?;
                    tracing::info!(%settlement_id, partner = %caller.id, "settlement reversed");
                    Ok(ReverseSettlementResponse { settlement: Some(settlement_message(&reversed)) })
                })
                .await
        }
        .await;
        access.record(state, Some(found.person_id), &result).await;
        result.map(Response::new)
    }

    async fn get_annual_expenses(
        &self,
        request: Request<GetAnnualExpensesRequest>,
    ) -> Result<Response<GetAnnualExpensesResponse>, Status> {
        let state = &self.state;
        let access = CallAccess::begin(state, &request).await?;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let year = settlement::expenses_year(body.year)?;
        // The person's token or an ACTIVE binder's (or operators): decided before anything is
        // read, so a refusal does not depend on the id.
        let standing = access.decide(state, person_id, HandlerFacts::default()).await?;
        let result: Result<GetAnnualExpensesResponse, Status> = async {
            let lines = state.settlements.expense_lines(person_id, year).await?;
            let expenses = settlement::annual_expenses(&lines);
            Ok(GetAnnualExpensesResponse {
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
                    .map(|(month, totals)| pb::MonthExpenses {
                        month: *month as i32,
                        totals: Some(totals_message(totals)),
                    })
                    .collect(),
            })
        }
        .await;
        // A token or binding proves the person exists; an operator may name any id, so its
        // call is recorded only for a person with an account.
        let known = match standing {
            Standing::Person | Standing::Binder => Some(person_id),
            _ => state.accounts.find_open_by_person(person_id).await.ok().flatten().map(|a| a.person_id),
        };
        access.record(state, known, &result).await;
        result.map(Response::new)
    }

    async fn list_settlements(
        &self,
        request: Request<pb::ListSettlementsRequest>,
    ) -> Result<Response<pb::ListSettlementsResponse>, Status> {
        super::settlement_records::list_settlements(&self.state, request).await
    }

    async fn get_settlement(
        &self,
        request: Request<pb::GetSettlementRequest>,
    ) -> Result<Response<pb::GetSettlementResponse>, Status> {
        super::settlement_records::get_settlement(&self.state, request).await
    }
}

fn visit_not_found() -> ApiError {
    ApiError::not_found(Reason::VisitNotFound, "no such visit")
}
