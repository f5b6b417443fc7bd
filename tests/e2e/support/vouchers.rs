//! Helpers of the voucher and code tests: a person who came through a partner's front door for
//! real (register, SMS real name, SMS link, person token: all through identity-svc's RPCs), an
//! insured account, face sessions that passed or failed, and more insurance-svc replicas on the
//! same database.

use std::{path::Path, sync::Arc, time::Duration};

use insurance_svc::{InsuranceService, domain::code::CODE_KEY_RING};
use medins_common::keyring::SigningKeyRing;
use medins_proto::{
    identity::v1::{
        CompleteRealNameRequest, FacePurpose, IssuePersonTokenRequest, LinkPartnerAccountRequest,
        RegisterPersonRequest, SendSmsCodeRequest, SmsPurpose, StartFaceVerificationRequest, SubmitFaceResultRequest,
        VerifySmsCodeRequest,
    },
    insurance::v1::{
        Account, OpenAccountRequest, PersonIdentity, Scheme, code_service_client::CodeServiceClient,
        open_account_request, voucher_service_client::VoucherServiceClient,
    },
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use super::{Intercepted, SeedPerson, Stack, channel, interceptor, privacy, stopped, with_person_token};

/// insurance-svc's settings in tests: a code key file in the stack's folder (created once),
/// rotations and unknown person-token keys picked up within a fraction of a second.
pub fn insurance_config(config: insurance_svc::Config, dir: &Path) -> insurance_svc::Config {
    let path = dir.join("code-signing-keys.toml");
    if !path.exists() {
        SigningKeyRing::generate(CODE_KEY_RING, chrono::Utc::now()).save_new(&path).expect("save code keys");
    }
    let mut config = config.with_code_keys_file(path);
    config.code_keys_check_interval = Duration::from_millis(50);
    config.person_token_keys_min_refresh = Duration::from_millis(100);
    // The development relationship authority confirms what tests write here
    // (`Stack::confirm_household`); the review sweeper runs often so expiry shows quickly.
    config.relationship_households_file = Some(dir.join("households.txt"));
    config.family_review_sweep_interval = Duration::from_millis(50);
    config
}

/// A real-name verified person linked to a partner, with a person token issued to it.
#[derive(Clone, Debug)]
pub struct FrontDoorPerson {
    pub person_id: String,
    /// `x-person-token` for the partner it was issued to.
    pub token: String,
    pub seed: SeedPerson,
}

/// Another insurance-svc on the stack's database and code keys.
pub struct InsuranceReplica {
    pub addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InsuranceReplica {
    /// Stops it and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("replica stops within the drain bound")
            .expect("replica task")
            .expect("replica result");
    }
}

impl Stack {
    /// insurance-svc vouchers, as the partner holding `key`.
    pub fn vouchers(&self, key: Option<&str>) -> VoucherServiceClient<Intercepted> {
        VoucherServiceClient::with_interceptor(self.insurance_channel(), interceptor(key))
    }

    /// insurance-svc codes, as the partner holding `key`.
    pub fn codes(&self, key: Option<&str>) -> CodeServiceClient<Intercepted> {
        CodeServiceClient::with_interceptor(self.insurance_channel(), interceptor(key))
    }

    /// Codes of the insurance-svc at `addr` (a replica), as the partner holding `key`.
    pub fn codes_at(&self, addr: std::net::SocketAddr, key: Option<&str>) -> CodeServiceClient<Intercepted> {
        CodeServiceClient::with_interceptor(channel(addr), interceptor(key))
    }

    /// Settlements of the insurance-svc at `addr` (a replica), as the partner holding `key`.
    pub fn settlements_at(
        &self,
        addr: std::net::SocketAddr,
        key: Option<&str>,
    ) -> medins_proto::insurance::v1::settlement_service_client::SettlementServiceClient<Intercepted> {
        medins_proto::insurance::v1::settlement_service_client::SettlementServiceClient::with_interceptor(
            channel(addr),
            interceptor(key),
        )
    }

    /// Family bindings of the insurance-svc at `addr` (a replica), as the partner holding `key`.
    pub fn family_at(
        &self,
        addr: std::net::SocketAddr,
        key: Option<&str>,
    ) -> medins_proto::insurance::v1::family_service_client::FamilyServiceClient<Intercepted> {
        medins_proto::insurance::v1::family_service_client::FamilyServiceClient::with_interceptor(
            channel(addr),
            interceptor(key),
        )
    }

    /// insurance-svc's code key file (rotate it to test rotation).
    pub fn code_keys_file(&self) -> std::path::PathBuf {
        self.insurance_config.code_keys_file.clone().expect("tests always have a code key file")
    }

    /// A new adult who came through the front door of the partner holding `partner_key` (id
    /// `partner_id`): registered, real name completed with an SMS code, linked with another SMS
    /// code, and a person token issued to that partner. Moves the clock 61 s (the SMS resend
    /// interval).
    pub async fn front_door_person(&self, partner_key: &str) -> FrontDoorPerson {
        let seed = SeedPerson::adult();
        let person_id = self.register_at(partner_key, &seed).await;
        let challenge = self.verified_sms_challenge(partner_key, &person_id, &seed.phone, SmsPurpose::RealName).await;
        self.persons(Some(partner_key))
            .complete_real_name(CompleteRealNameRequest { person_id: person_id.clone(), challenge_id: challenge })
            .await
            .expect("real name");
        self.clock.advance(chrono::Duration::seconds(61));
        let challenge =
            self.verified_sms_challenge(partner_key, &person_id, &seed.phone, SmsPurpose::LinkAccount).await;
        let user_ref = format!("user-{}", uuid::Uuid::new_v4().simple());
        privacy::sensitive(&user_ref);
        self.links(Some(partner_key))
            .link_partner_account(LinkPartnerAccountRequest {
                person_id: person_id.clone(),
                partner_user_ref: user_ref,
                challenge_id: challenge,
            })
            .await
            .expect("link");
        let token = self.fresh_person_token(partner_key, &person_id).await;
        let mut person = FrontDoorPerson { person_id, token, seed };
        // Level 2 (binding others, paying for them, card applications): a REAL_NAME face session
        // passed after real name, then a new token, which carries the new level.
        self.passed_face_session(partner_key, &person, FacePurpose::RealName).await;
        person.token = self.fresh_person_token(partner_key, &person.person_id).await;
        person
    }

    /// [`Stack::front_door_person`] stopped at assurance level 1: real name and link, but no
    /// REAL_NAME face session; its token is level 1.
    pub async fn level_1_person(&self, partner_key: &str) -> FrontDoorPerson {
        let seed = SeedPerson::adult();
        let person_id = self
            .persons(Some(partner_key))
            .register_person(RegisterPersonRequest {
                name: seed.name.clone(),
                id_number: seed.id_number.clone(),
                phone: seed.phone.clone(),
            })
            .await
            .expect("register")
            .into_inner()
            .person
            .expect("person")
            .person_id;
        let challenge = self.verified_sms_challenge(partner_key, &person_id, &seed.phone, SmsPurpose::RealName).await;
        self.persons(Some(partner_key))
            .complete_real_name(CompleteRealNameRequest { person_id: person_id.clone(), challenge_id: challenge })
            .await
            .expect("real name");
        self.link_with_sms(partner_key, &person_id, &seed.phone).await;
        let token = self.fresh_person_token(partner_key, &person_id).await;
        FrontDoorPerson { person_id, token, seed }
    }

    /// Links the partner holding `partner_key` to the person with a fresh SMS code to `phone`
    /// (moves the clock 61 s first, the SMS resend interval).
    pub async fn link_with_sms(&self, partner_key: &str, person_id: &str, phone: &str) {
        self.clock.advance(chrono::Duration::seconds(61));
        let challenge = self.verified_sms_challenge(partner_key, person_id, phone, SmsPurpose::LinkAccount).await;
        let user_ref = format!("user-{}", uuid::Uuid::new_v4().simple());
        privacy::sensitive(&user_ref);
        self.links(Some(partner_key))
            .link_partner_account(LinkPartnerAccountRequest {
                person_id: person_id.to_owned(),
                partner_user_ref: user_ref,
                challenge_id: challenge,
            })
            .await
            .expect("link");
    }

    /// A new person token for a linked, verified person.
    pub async fn fresh_person_token(&self, partner_key: &str, person_id: &str) -> String {
        let token = self
            .person_tokens(Some(partner_key))
            .issue_person_token(IssuePersonTokenRequest { person_id: person_id.to_owned() })
            .await
            .expect("issue token")
            .into_inner()
            .token;
        privacy::sensitive_token(&token);
        token
    }

    /// Sends a code to `person_id`'s phone on record (`phone`) and verifies it, as the partner
    /// holding `partner_key`; the challenge id.
    async fn verified_sms_challenge(
        &self,
        partner_key: &str,
        person_id: &str,
        phone: &str,
        purpose: SmsPurpose,
    ) -> String {
        let mut sms = self.sms_codes(Some(partner_key));
        let sent = sms
            .send_sms_code(SendSmsCodeRequest {
                person_id: person_id.to_owned(),
                purpose: purpose as i32,
                ..Default::default()
            })
            .await
            .expect("send code")
            .into_inner();
        let code = self.sms.last_code(phone);
        sms.verify_sms_code(VerifySmsCodeRequest { challenge_id: sent.challenge_id.clone(), code })
            .await
            .expect("verify code");
        sent.challenge_id
    }

    /// Opens a RESIDENT account in region 110105 for a known person, as operators (a bank
    /// names a person by id only with their token).
    pub async fn open_account_for(&self, person_id: &str) -> Account {
        self.accounts(Some(&self.keys.ops))
            .open_account(OpenAccountRequest {
                person: Some(open_account_request::Person::PersonId(person_id.to_owned())),
                scheme: Scheme::Resident as i32,
                region_code: "110105".into(),
                employer_code: String::new(),
            })
            .await
            .expect("open account")
            .into_inner()
            .account
            .expect("account")
    }

    /// Opens an account in region 110105 as the partner holding `key`, naming the person by
    /// name and ID number (insurance-svc resolves them at identity-svc).
    pub async fn open_account_by_identity(
        &self,
        key: &str,
        seed: &SeedPerson,
        scheme: Scheme,
        employer_code: &str,
    ) -> Result<Account, tonic::Status> {
        let opened = self
            .accounts(Some(key))
            .open_account(OpenAccountRequest {
                person: Some(open_account_request::Person::Identity(PersonIdentity {
                    name: seed.name.clone(),
                    id_number: seed.id_number.clone(),
                })),
                scheme: scheme as i32,
                region_code: "110105".into(),
                employer_code: employer_code.into(),
            })
            .await?;
        Ok(opened.into_inner().account.expect("account"))
    }

    /// A face session the partner started for the person with its token, and the face provider
    /// then ended: PASSED with one good submission, or FAILED with three bad ones. Returns its
    /// id.
    pub async fn face_session(
        &self,
        partner_key: &str,
        person: &FrontDoorPerson,
        purpose: FacePurpose,
        pass: bool,
    ) -> String {
        let session_id = self.start_face_session(partner_key, Some(&person.token), &person.person_id, purpose).await;
        let submissions = if pass { 1 } else { 3 };
        for _ in 0..submissions {
            self.faces(Some(&self.keys.face_provider))
                .submit_face_result(SubmitFaceResultRequest {
                    session_id: session_id.clone(),
                    liveness_passed: true,
                    similarity: if pass { 0.93 } else { 0.41 },
                    provider_reference: format!("prov-{}", uuid::Uuid::new_v4()),
                })
                .await
                .expect("submit face result");
        }
        session_id
    }

    /// A face session of `purpose` for `person_id`, started by the partner holding `partner_key`
    /// (with a person token, or without one as partners whose kind starts sessions for anyone);
    /// returns its id. Nothing is submitted: it is PENDING.
    pub async fn start_face_session(
        &self,
        partner_key: &str,
        token: Option<&str>,
        person_id: &str,
        purpose: FacePurpose,
    ) -> String {
        let request = StartFaceVerificationRequest {
            person_id: person_id.to_owned(),
            purpose: purpose as i32,
            ..Default::default()
        };
        let request = match token {
            Some(token) => with_person_token(request, token),
            None => tonic::Request::new(request),
        };
        self.faces(Some(partner_key))
            .start_face_verification(request)
            .await
            .expect("start face session")
            .into_inner()
            .session
            .expect("session")
            .session_id
    }

    /// A PASSED face session (see [`Stack::face_session`]).
    pub async fn passed_face_session(
        &self,
        partner_key: &str,
        person: &FrontDoorPerson,
        purpose: FacePurpose,
    ) -> String {
        self.face_session(partner_key, person, purpose, true).await
    }

    /// Starts another insurance-svc on the same database, code keys and identity-svc.
    pub async fn start_insurance_replica(&self) -> InsuranceReplica {
        self.start_insurance_replica_with(|_| {}).await
    }

    /// [`Stack::start_insurance_replica`] with its configuration changed by `configure` (another
    /// policy file, say).
    pub async fn start_insurance_replica_with(
        &self,
        configure: impl FnOnce(&mut insurance_svc::Config),
    ) -> InsuranceReplica {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let mut config = self.insurance_config.clone();
        configure(&mut config);
        let service =
            InsuranceService::build(config, insurance_svc::Dependencies { clock: Arc::new(self.clock.clone()) })
                .await
                .expect("build insurance-svc replica");
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(service.serve(listener, stopped(rx)));
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(addr));
        for attempt in 0.. {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                .await
                .map(|r| r.into_inner().status)
                .ok();
            if status == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
                break;
            }
            assert!(attempt < 200, "the replica never became SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        InsuranceReplica { addr, stop, task }
    }
}
