//! Seeding through the public gRPC API, the way partners do it: a bank registers persons, each
//! completes real name with an SMS code, is linked to the bank with another SMS code (the codes
//! come from the bench's SMS webhook), gets a person token, an account opened through the bank
//! with that token and credited by an operator, a face session passed at the face provider, and an ACTIVE voucher.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use medins_proto::{
    identity::v1::{
        CompleteRealNameRequest, FacePurpose, IssuePersonTokenRequest, LinkPartnerAccountRequest,
        RegisterPersonRequest, SendSmsCodeRequest, SmsPurpose, StartFaceVerificationRequest, SubmitFaceResultRequest,
        VerifySmsCodeRequest, face_verification_service_client::FaceVerificationServiceClient,
        partner_link_service_client::PartnerLinkServiceClient, person_service_client::PersonServiceClient,
        person_token_service_client::PersonTokenServiceClient, sms_service_client::SmsServiceClient,
    },
    insurance::v1::{
        ActivateVoucherRequest, ActivationChannel, CreditContributionRequest, OpenAccountRequest, Scheme,
        account_service_client::AccountServiceClient, open_account_request,
        voucher_service_client::VoucherServiceClient,
    },
};
use tonic::{Request, metadata::AsciiMetadataValue, transport::Channel};

use super::{load::for_each_concurrent, target::Target};

/// Seeding calls in flight.
const SEED_CONCURRENCY: usize = 16;

/// What each account is credited with (cents): enough that settlements never drain it.
pub const SEED_BALANCE_CENTS: i64 = 50_000_000;

/// A request with the partner's API key and, optionally, a person token.
pub fn authorized<T>(message: T, key: &AsciiMetadataValue, token: Option<&AsciiMetadataValue>) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", key.clone());
    if let Some(token) = token {
        request.metadata_mut().insert("x-person-token", token.clone());
    }
    request
}

/// `Bearer <key>` as a metadata value.
pub fn bearer(key: &str) -> anyhow::Result<AsciiMetadataValue> {
    format!("Bearer {key}").parse().context("an API key must be ASCII")
}

/// The parsed keys and one channel to each service, for seeding.
pub struct Seeder {
    identity: Channel,
    insurance: Channel,
    ops: AsciiMetadataValue,
    bank: AsciiMetadataValue,
    face_provider: AsciiMetadataValue,
    hospital: AsciiMetadataValue,
    /// Per-run randomness so ID numbers and phones do not collide with earlier runs.
    run: u64,
}

/// A registered person.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Person id.
    pub person_id: String,
    /// Phone on record.
    pub phone: String,
}

/// A person with an ACTIVE voucher and a credited account.
#[derive(Debug, Clone)]
pub struct Insured {
    /// Person id.
    pub person_id: String,
    /// Person token issued to the bank (15 minutes).
    pub token: AsciiMetadataValue,
}

impl Seeder {
    /// Over `target`'s services.
    pub fn new(target: &Target) -> anyhow::Result<Seeder> {
        let channel = |addr| {
            super::load::endpoint(addr, target.client_tls.as_ref())
                .map(|e| e.timeout(Duration::from_secs(10)).connect_lazy())
        };
        Ok(Seeder {
            identity: channel(target.identity_addr)?,
            insurance: channel(target.insurance_addr)?,
            ops: bearer(&target.keys.ops)?,
            bank: bearer(&target.keys.bank)?,
            face_provider: bearer(&target.keys.face_provider)?,
            hospital: bearer(&target.keys.hospital)?,
            run: uuid::Uuid::new_v4().as_u128() as u64,
        })
    }

    /// The bank's key.
    pub fn bank(&self) -> &AsciiMetadataValue {
        &self.bank
    }

    /// The hospital's key.
    pub fn hospital(&self) -> &AsciiMetadataValue {
        &self.hospital
    }

    /// The ops key.
    pub fn ops(&self) -> &AsciiMetadataValue {
        &self.ops
    }

    /// A channel to insurance-svc.
    pub fn insurance(&self) -> Channel {
        self.insurance.clone()
    }

    /// Name, valid resident ID number and phone of seed person `i` of this run.
    fn identity_of(&self, i: usize) -> (String, String, String) {
        seed_identity(self.run, i)
    }

    /// Registers `count` persons as the bank.
    pub async fn register(self: &Arc<Self>, count: usize) -> anyhow::Result<Vec<Registered>> {
        let this = self.clone();
        for_each_concurrent(count, SEED_CONCURRENCY, move |i| {
            let this = this.clone();
            async move {
                let (name, id_number, phone) = this.identity_of(i);
                let person = PersonServiceClient::new(this.identity.clone())
                    .register_person(authorized(
                        RegisterPersonRequest { name, id_number, phone: phone.clone() },
                        &this.bank,
                        None,
                    ))
                    .await
                    .context("RegisterPerson")?
                    .into_inner()
                    .person
                    .context("RegisterPerson answered no person")?;
                Ok(Registered { person_id: person.person_id, phone })
            }
        })
        .await
    }

    /// Sends an SMS code to the person's phone on record (`phone`), reads it from the webhook,
    /// verifies it; the verified challenge id.
    async fn verified_challenge(
        &self,
        target: &Target,
        person: &Registered,
        purpose: SmsPurpose,
    ) -> anyhow::Result<String> {
        let phone = person.phone.as_str();
        let sms = target.sms.as_ref().context(
            "seeding needs SMS codes: with --target remote, pass --sms-webhook-listen and start identity-svc with \
             --sms-webhook-url pointing there",
        )?;
        let mut client = SmsServiceClient::new(self.identity.clone());
        let sent = client
            .send_sms_code(authorized(
                SendSmsCodeRequest {
                    person_id: person.person_id.clone(),
                    purpose: purpose as i32,
                    ..Default::default()
                },
                &self.bank,
                None,
            ))
            .await
            .context("SendSmsCode")?
            .into_inner();
        // identity-svc answers once the gateway accepted the message; allow a little slack.
        let mut code = None;
        for _ in 0..100 {
            code = sms.last_code(phone);
            if code.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let code = code.context("no SMS code reached the webhook")?;
        client
            .verify_sms_code(authorized(
                VerifySmsCodeRequest { challenge_id: sent.challenge_id.clone(), code },
                &self.bank,
                None,
            ))
            .await
            .context("VerifySmsCode")?;
        Ok(sent.challenge_id)
    }

    /// Takes registered persons through real name, link, token, account, face and activation.
    /// Takes a little over a minute: a phone gets one SMS code per 60 s, and each person needs
    /// two (real name, then link).
    pub async fn insure(
        self: &Arc<Self>,
        target: &Arc<Target>,
        persons: &[Registered],
    ) -> anyhow::Result<Vec<Insured>> {
        let started = Instant::now();
        let (this, list, tgt) = (self.clone(), Arc::new(persons.to_vec()), target.clone());
        for_each_concurrent(persons.len(), SEED_CONCURRENCY, move |i| {
            let (this, list, tgt) = (this.clone(), list.clone(), tgt.clone());
            async move {
                let person = &list[i];
                let challenge = this.verified_challenge(&tgt, person, SmsPurpose::RealName).await?;
                PersonServiceClient::new(this.identity.clone())
                    .complete_real_name(authorized(
                        CompleteRealNameRequest { person_id: person.person_id.clone(), challenge_id: challenge },
                        &this.bank,
                        None,
                    ))
                    .await
                    .context("CompleteRealName")?;
                Ok(())
            }
        })
        .await?;
        let resend_at = Instant::now() + Duration::from_secs(61);
        eprintln!(
            "  real name done for {} persons in {:.1} s; waiting for the SMS resend interval (60 s) before linking",
            persons.len(),
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep_until(resend_at.into()).await;
        let (this, list, tgt) = (self.clone(), Arc::new(persons.to_vec()), target.clone());
        for_each_concurrent(persons.len(), SEED_CONCURRENCY, move |i| {
            let (this, list, tgt) = (this.clone(), list.clone(), tgt.clone());
            async move { this.link_and_activate(&tgt, &list[i], i).await }
        })
        .await
    }

    async fn link_and_activate(&self, target: &Target, person: &Registered, i: usize) -> anyhow::Result<Insured> {
        let person_id = person.person_id.clone();
        let challenge = self.verified_challenge(target, person, SmsPurpose::LinkAccount).await?;
        PartnerLinkServiceClient::new(self.identity.clone())
            .link_partner_account(authorized(
                LinkPartnerAccountRequest {
                    person_id: person_id.clone(),
                    partner_user_ref: format!("bench-{:x}-{i}", self.run),
                    challenge_id: challenge,
                },
                &self.bank,
                None,
            ))
            .await
            .context("LinkPartnerAccount")?;
        let token = self.person_token(&person_id).await?;
        let account = AccountServiceClient::new(self.insurance.clone())
            .open_account(authorized(
                OpenAccountRequest {
                    person: Some(open_account_request::Person::PersonId(person_id.clone())),
                    scheme: Scheme::Resident as i32,
                    region_code: "110105".into(),
                    employer_code: String::new(),
                },
                // The person, through the bank, with their token: a RESIDENT account has no
                // employer to open it (docs/architecture.md#trust-model).
                &self.bank,
                Some(&token),
            ))
            .await
            .context("OpenAccount")?
            .into_inner()
            .account
            .context("OpenAccount answered no account")?;
        let session = FaceVerificationServiceClient::new(self.identity.clone())
            .start_face_verification(authorized(
                StartFaceVerificationRequest {
                    person_id: person_id.clone(),
                    purpose: FacePurpose::VoucherActivation as i32,
                    reference: String::new(),
                    ..Default::default()
                },
                &self.bank,
                Some(&token),
            ))
            .await
            .context("StartFaceVerification")?
            .into_inner()
            .session
            .context("StartFaceVerification answered no session")?
            .session_id;
        FaceVerificationServiceClient::new(self.identity.clone())
            .submit_face_result(authorized(
                SubmitFaceResultRequest {
                    session_id: session.clone(),
                    liveness_passed: true,
                    similarity: 0.93,
                    provider_reference: format!("bench-face-{:x}-{i}", self.run),
                },
                &self.face_provider,
                None,
            ))
            .await
            .context("SubmitFaceResult")?;
        VoucherServiceClient::new(self.insurance.clone())
            .activate_voucher(authorized(
                ActivateVoucherRequest {
                    person_id: person_id.clone(),
                    channel: ActivationChannel::BankApp as i32,
                    face_session_id: session,
                },
                &self.bank,
                Some(&token),
            ))
            .await
            .context("ActivateVoucher")?;
        AccountServiceClient::new(self.insurance.clone())
            .credit_contribution(authorized(
                CreditContributionRequest {
                    account_id: account.account_id,
                    amount_cents: SEED_BALANCE_CENTS,
                    reference: format!("bench-{:x}-{i}", self.run),
                },
                // Operators credit RESIDENT accounts; employers only their own employees'.
                &self.ops,
                None,
            ))
            .await
            .context("CreditContribution")?;
        Ok(Insured { person_id, token })
    }

    /// A new person token for a linked person, issued to the bank.
    async fn person_token(&self, person_id: &str) -> anyhow::Result<AsciiMetadataValue> {
        let token = PersonTokenServiceClient::new(self.identity.clone())
            .issue_person_token(authorized(
                IssuePersonTokenRequest { person_id: person_id.to_owned() },
                &self.bank,
                None,
            ))
            .await
            .context("IssuePersonToken")?
            .into_inner()
            .token;
        token.parse().context("a person token must be ASCII")
    }

    /// New tokens for every person (tokens live 15 minutes; each scenario starts with fresh ones).
    pub async fn refresh_tokens(self: &Arc<Self>, persons: &mut [Insured]) -> anyhow::Result<()> {
        let (this, ids) = (self.clone(), Arc::new(persons.iter().map(|p| p.person_id.clone()).collect::<Vec<_>>()));
        let tokens = for_each_concurrent(ids.len(), SEED_CONCURRENCY, move |i| {
            let (this, ids) = (this.clone(), ids.clone());
            async move { this.person_token(&ids[i]).await }
        })
        .await?;
        for (person, token) in persons.iter_mut().zip(tokens) {
            person.token = token;
        }
        Ok(())
    }
}

/// Name, valid resident ID number and phone of seed person `i` of run `run`.
fn seed_identity(run: u64, i: usize) -> (String, String, String) {
    let i = i as u64;
    let region = 110101 + (run % 50);
    let base =
        chrono::NaiveDate::from_ymd_opt(1950, 1, 1).expect("date") + chrono::Days::new((run >> 8) % 15_000 + i / 900);
    let first17 = format!("{region:06}{}{:03}", base.format("%Y%m%d"), 100 + i % 900);
    let id_number = format!("{first17}{}", identity_svc::domain::id_number::check_character(&first17));
    const SURNAMES: [&str; 8] = ["赵", "钱", "孙", "李", "周", "吴", "郑", "王"];
    const GIVEN: [&str; 8] = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "艳"];
    let name = format!(
        "{}{}{}",
        SURNAMES[(i % 8) as usize],
        GIVEN[(i / 8 % 8) as usize],
        GIVEN[((i / 64 + run) % 8) as usize]
    );
    // 7919 is prime to 10^8: distinct phones for the first 10^8 persons of a run.
    let phone = format!("139{:08}", ((run >> 20) + i * 7919) % 100_000_000);
    (name, id_number, phone)
}

#[cfg(test)]
mod tests {
    #[test]
    fn seed_identities_are_valid_and_distinct() {
        let mut ids = std::collections::HashSet::new();
        let mut phones = std::collections::HashSet::new();
        for i in 0..3000 {
            let (name, id_number, phone) = super::seed_identity(0x1234_5678_9abc_def0, i);
            assert_eq!(name.chars().count(), 3);
            assert_eq!(id_number.len(), 18);
            let first17 = &id_number[..17];
            assert_eq!(id_number.chars().last(), Some(identity_svc::domain::id_number::check_character(first17)));
            assert!(ids.insert(id_number));
            assert!(phones.insert(phone));
        }
    }
}
