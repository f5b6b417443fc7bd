//! The scenarios' calls, and the one-use items (codes, visits) some of them need made before
//! the measured window.

use std::sync::Arc;

use anyhow::Context as _;
use medins_proto::{
    bench::v1::{EchoRequest, echo_service_client::EchoServiceClient},
    identity::v1::{GetPersonRequest, person_service_client::PersonServiceClient},
    insurance::v1::{
        BillItem, Category, IssueCodeRequest, PayFrom, PreSettleRequest, SettleRequest, VerifyCodeRequest,
        code_service_client::CodeServiceClient, settlement_service_client::SettlementServiceClient,
    },
};
use tonic::{Status, metadata::AsciiMetadataValue, transport::Channel};

use super::{
    load::{Workload, for_each_concurrent},
    seed::{Insured, Seeder, authorized},
};

/// What a scenario measures.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A bare tonic echo server the bench starts itself: the ceiling of this machine and of the
    /// load generator, measured in the same run.
    Echo,
    /// identity-svc GetPerson of seeded persons, as OPS (decrypts the name, writes an audit row).
    GetPerson,
    /// insurance-svc IssueCode with person tokens, as the bank (token check, voucher lookup,
    /// Ed25519 signature; no database write).
    IssueCode,
    /// insurance-svc VerifyCode of fresh codes issued before the window, as a hospital (signature,
    /// voucher and account, one-use nonce row, visit row).
    VerifyCode,
    /// insurance-svc Settle of visits opened by VerifyCode before the window, as the hospital
    /// that opened them (policy, ledger entry, balance update, year-to-date totals).
    Settle,
    /// Settle of pre-opened visits with a 10-item bill (A, B and C items of the built-in
    /// catalogue): pricing, the per-item split and ten item rows besides the settle scenario's.
    SettleItems,
    /// PreSettle of pre-opened visits with the same 10-item bill: the same read and decision,
    /// one pre-settlement row written (no ledger entry, no totals).
    PreSettle,
}

impl Scenario {
    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Echo => "echo",
            Scenario::GetPerson => "get-person",
            Scenario::IssueCode => "issue-code",
            Scenario::VerifyCode => "verify-code",
            Scenario::Settle => "settle",
            Scenario::SettleItems => "settle-items",
            Scenario::PreSettle => "pre-settle",
        }
    }

    /// Needs persons with an ACTIVE voucher (the whole seeding flow, SMS codes included).
    pub fn needs_insured(self) -> bool {
        matches!(
            self,
            Scenario::IssueCode | Scenario::VerifyCode | Scenario::Settle | Scenario::SettleItems | Scenario::PreSettle
        )
    }
}

/// Echo of a fixed payload.
pub struct EchoLoad {
    /// The payload.
    pub payload: Vec<u8>,
}

impl Workload for EchoLoad {
    type Client = EchoServiceClient<Channel>;

    fn client(&self, channel: Channel) -> Self::Client {
        EchoServiceClient::new(channel)
    }

    async fn call(&self, client: &mut Self::Client, _n: u64) -> Result<(), Status> {
        client.echo(EchoRequest { payload: self.payload.clone() }).await.map(drop)
    }
}

/// GetPerson round-robin over the seeded persons.
pub struct GetPersonLoad {
    /// Person ids.
    pub person_ids: Vec<String>,
    /// The ops key.
    pub ops: AsciiMetadataValue,
}

impl Workload for GetPersonLoad {
    type Client = PersonServiceClient<Channel>;

    fn client(&self, channel: Channel) -> Self::Client {
        PersonServiceClient::new(channel)
    }

    fn call<'a>(
        &'a self,
        client: &'a mut Self::Client,
        n: u64,
    ) -> impl Future<Output = Result<(), Status>> + Send + 'a {
        let person_id = self.person_ids[(n % self.person_ids.len() as u64) as usize].clone();
        async move { client.get_person(authorized(GetPersonRequest { person_id }, &self.ops, None)).await.map(drop) }
    }
}

/// IssueCode round-robin over the insured persons, each with their own token.
pub struct IssueCodeLoad {
    /// Holders and their tokens.
    pub persons: Vec<Insured>,
    /// The bank's key.
    pub bank: AsciiMetadataValue,
}

impl Workload for IssueCodeLoad {
    type Client = CodeServiceClient<Channel>;

    fn client(&self, channel: Channel) -> Self::Client {
        CodeServiceClient::new(channel)
    }

    fn call<'a>(
        &'a self,
        client: &'a mut Self::Client,
        n: u64,
    ) -> impl Future<Output = Result<(), Status>> + Send + 'a {
        let person = &self.persons[(n % self.persons.len() as u64) as usize];
        let request = authorized(
            IssueCodeRequest { holder_person_id: person.person_id.clone(), include_png: false },
            &self.bank,
            Some(&person.token),
        );
        async move { client.issue_code(request).await.map(drop) }
    }
}

/// VerifyCode of pre-issued codes, each once.
pub struct VerifyCodeLoad {
    /// The codes.
    pub codes: Vec<String>,
    /// The hospital's key.
    pub hospital: AsciiMetadataValue,
}

impl Workload for VerifyCodeLoad {
    type Client = CodeServiceClient<Channel>;

    fn client(&self, channel: Channel) -> Self::Client {
        CodeServiceClient::new(channel)
    }

    fn items(&self) -> Option<u64> {
        Some(self.codes.len() as u64)
    }

    fn call<'a>(
        &'a self,
        client: &'a mut Self::Client,
        n: u64,
    ) -> impl Future<Output = Result<(), Status>> + Send + 'a {
        let code = self.codes[n as usize].clone();
        async move { client.verify_code(authorized(VerifyCodeRequest { code }, &self.hospital, None)).await.map(drop) }
    }
}

/// The bill every settle call sends: an outpatient visit of 123.45 yuan paid from the holder's
/// account.
pub const SETTLE_TOTAL_CENTS: i64 = 12_345;

/// The 10-item bill of the settle-items and pre-settle scenarios: (code, quantity in thousandths,
/// unit price), all within the built-in catalogue's caps, nationally and in Shanghai.
const BENCH_ITEMS: [(&str, i64, i64); 10] = [
    ("XJ01CAA040A001010101", 1_000, 1_500),
    ("XM01AEB020A001010101", 1_000, 2_000),
    ("XB05AAR040B002010101", 1_000, 30_000),
    ("XA11HAX001A001010101", 1_000, 1_700),
    ("110200001", 1_000, 1_000),
    ("250101001", 1_000, 2_000),
    ("210300001", 1_000, 25_000),
    ("C0301010010000000000000001", 5_000, 150),
    ("XJ01CAA040A001010101", 2_000, 1_500),
    ("250101001", 1_000, 2_500),
];

/// The total of [`BENCH_ITEMS`].
pub const BENCH_ITEMS_TOTAL_CENTS: i64 = 69_450;

fn bench_items() -> Vec<BillItem> {
    BENCH_ITEMS
        .iter()
        .map(|&(code, quantity_milli, unit_price_cents)| BillItem {
            code: code.into(),
            quantity_milli,
            unit_price_cents,
            department_code: "BENCH-01".into(),
            department_name: String::new(),
        })
        .collect()
}

/// What a [`SettleLoad`] sends for each visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleKind {
    /// Settle of the bare total.
    Bare,
    /// Settle of the 10-item bill.
    Items,
    /// PreSettle of the 10-item bill.
    PreSettle,
}

/// Settle (or PreSettle) of pre-opened visits, each once.
pub struct SettleLoad {
    /// Visit ids.
    pub visits: Vec<String>,
    /// The hospital's key (it opened the visits).
    pub hospital: AsciiMetadataValue,
    /// What is sent.
    pub kind: SettleKind,
}

impl Workload for SettleLoad {
    type Client = SettlementServiceClient<Channel>;

    fn client(&self, channel: Channel) -> Self::Client {
        SettlementServiceClient::new(channel)
    }

    fn items(&self) -> Option<u64> {
        Some(self.visits.len() as u64)
    }

    fn call<'a>(
        &'a self,
        client: &'a mut Self::Client,
        n: u64,
    ) -> impl Future<Output = Result<(), Status>> + Send + 'a {
        let visit_id = self.visits[n as usize].clone();
        let (total_cents, items) = match self.kind {
            SettleKind::Bare => (SETTLE_TOTAL_CENTS, Vec::new()),
            SettleKind::Items | SettleKind::PreSettle => (BENCH_ITEMS_TOTAL_CENTS, bench_items()),
        };
        let request = SettleRequest {
            visit_id,
            total_cents,
            category: Category::Outpatient as i32,
            pay_from: PayFrom::HolderAccount as i32,
            items_summary: "bench: consultation".into(),
            binder_person_id: String::new(),
            items,
            pre_settlement_id: String::new(),
        };
        async move {
            if self.kind == SettleKind::PreSettle {
                let pre = PreSettleRequest {
                    visit_id: request.visit_id,
                    total_cents: request.total_cents,
                    category: request.category,
                    pay_from: request.pay_from,
                    items_summary: request.items_summary,
                    binder_person_id: request.binder_person_id,
                    items: request.items,
                };
                return client.pre_settle(authorized(pre, &self.hospital, None)).await.map(drop);
            }
            client.settle(authorized(request, &self.hospital, None)).await.map(drop)
        }
    }
}

/// Calls in flight while making codes and visits.
const PREPARE_CONCURRENCY: usize = 64;

/// Issues `count` codes round-robin over `persons`, as the bank.
pub async fn issue_codes(
    seeder: &Arc<Seeder>,
    persons: &Arc<Vec<Insured>>,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let (seeder, persons) = (seeder.clone(), persons.clone());
    let channel = seeder.insurance();
    for_each_concurrent(count, PREPARE_CONCURRENCY, move |i| {
        let (seeder, persons, channel) = (seeder.clone(), persons.clone(), channel.clone());
        async move {
            let person = &persons[i % persons.len()];
            Ok(CodeServiceClient::new(channel)
                .issue_code(authorized(
                    IssueCodeRequest { holder_person_id: person.person_id.clone(), include_png: false },
                    seeder.bank(),
                    Some(&person.token),
                ))
                .await
                .context("IssueCode (preparing codes)")?
                .into_inner()
                .code)
        }
    })
    .await
}

/// Opens `count` visits the way a counter does (IssueCode by the bank, VerifyCode by the
/// hospital), in batches so every code is verified well within its 60 s.
pub async fn open_visits(
    seeder: &Arc<Seeder>,
    persons: &Arc<Vec<Insured>>,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    const BATCH: usize = 5_000;
    let mut visits = Vec::with_capacity(count);
    while visits.len() < count {
        let codes = Arc::new(issue_codes(seeder, persons, BATCH.min(count - visits.len())).await?);
        let (seeder, channel) = (seeder.clone(), seeder.insurance());
        let opened = for_each_concurrent(codes.len(), PREPARE_CONCURRENCY, move |i| {
            let (seeder, channel, codes) = (seeder.clone(), channel.clone(), codes.clone());
            async move {
                Ok(CodeServiceClient::new(channel)
                    .verify_code(authorized(VerifyCodeRequest { code: codes[i].clone() }, seeder.hospital(), None))
                    .await
                    .context("VerifyCode (opening visits)")?
                    .into_inner()
                    .visit_id)
            }
        })
        .await?;
        visits.extend(opened);
    }
    Ok(visits)
}
