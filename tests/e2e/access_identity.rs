//! identity-svc's access table (docs/architecture.md#trust-model;
//! `identity-svc/src/domain/access.rs`), walked: every RPC of the table x every caller (the
//! person's own token, another person's token, the binder a face check names, every partner kind
//! without a token, OPS, SERVICE), each for an existing and a missing person (or face session),
//! checking code + ErrorInfo reason, that a refusal is the same for both, and the state afterwards.
//! Every partner here holds every identity-svc scope, so what answers is the access table, not the
//! scopes. Runs on SQLite and, with `MEDINS_TEST_POSTGRES_URL`, on PostgreSQL.

use std::{collections::BTreeSet, time::Duration};

use chrono::NaiveDate;
use medins_common::{
    audit::AuditEntry,
    auth::{PartnerKind, PartnersFile, RateLimit},
};
use medins_proto::{
    identity::v1::{
        ChangePhoneRequest, CompleteRealNameRequest, ConsumeSmsChallengeRequest, FacePurpose,
        GetFaceVerificationRequest, GetPersonFactsRequest, GetPersonRequest, IssuePersonTokenRequest,
        LinkPartnerAccountRequest, ListMyAccessHistoryRequest, ListPartnerLinksRequest, ListTokenRevocationsRequest,
        MatchPersonRequest, RegisterPersonRequest, ResolvePersonRequest, ResumePersonRequest, RevokePartnerLinkRequest,
        SendSmsCodeRequest, SmsPurpose, StartFaceVerificationRequest, SubmitFaceResultRequest, SuspendPersonRequest,
        UnlinkPartnerAccountRequest, VerifySmsCodeRequest, WatchFaceVerificationRequest, change_phone_request::Proof,
    },
    insurance::v1::Relationship,
};
use tonic::{Code, Request, Status};
use uuid::Uuid;

use crate::support::{SeedPerson, Stack, privacy, reason, vouchers::FrontDoorPerson, with_person_token};

type Answer = (Code, String);

fn answer<T>(result: &Result<T, Status>) -> Answer {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), reason(status)),
    }
}

fn ok() -> Answer {
    (Code::Ok, String::new())
}

fn refused(code: Code, reason: &str) -> Answer {
    (code, reason.to_owned())
}

fn kind_not_allowed() -> Answer {
    refused(Code::PermissionDenied, "PARTNER_KIND_NOT_ALLOWED")
}

fn token_invalid() -> Answer {
    refused(Code::PermissionDenied, "PERSON_TOKEN_INVALID")
}

fn token_required() -> Answer {
    refused(Code::Unauthenticated, "PERSON_TOKEN_REQUIRED")
}

fn person_not_found() -> Answer {
    refused(Code::NotFound, "PERSON_NOT_FOUND")
}

/// Who calls. The tokens are all issued to the bank (the person's front door).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Service,
    /// The bank, with another person's token.
    OthersToken,
    /// The bank, with the token of the binder who bound the elder (another person to the holder).
    BindersToken,
    Bank,
    MiniProgram,
    CityApp,
    Hospital,
    Pharmacy,
    Employer,
    FaceProvider,
    Terminal,
    Ops,
    /// The bank, with the holder's own token. Last: its UnlinkPartnerAccount ends the link.
    OwnToken,
}

const CALLERS: [Who; 13] = [
    Who::Service,
    Who::OthersToken,
    Who::BindersToken,
    Who::Bank,
    Who::MiniProgram,
    Who::CityApp,
    Who::Hospital,
    Who::Pharmacy,
    Who::Employer,
    Who::FaceProvider,
    Who::Terminal,
    Who::Ops,
    Who::OwnToken,
];

impl Who {
    /// A person's front door, whatever token it carries: BANK, MINI_PROGRAM, CITY_APP.
    fn front_door(self) -> bool {
        matches!(
            self,
            Who::OthersToken | Who::BindersToken | Who::Bank | Who::MiniProgram | Who::CityApp | Who::OwnToken
        )
    }

    /// The bank's key (the partner the holder is linked with).
    fn bank(self) -> bool {
        matches!(self, Who::OthersToken | Who::BindersToken | Who::Bank | Who::OwnToken)
    }
}

/// A caller: its key and the token it sends.
struct Caller {
    who: Who,
    key: String,
    token: Option<String>,
}

impl Caller {
    fn request<T>(&self, message: T) -> Request<T> {
        match &self.token {
            Some(token) => with_person_token(message, token),
            None => Request::new(message),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Existing,
    Missing,
}

/// One probe of an RPC of the table (some RPCs are probed on several kinds of session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    RegisterPerson,
    GetPerson,
    ResolvePerson,
    MatchPerson,
    ChangePhone,
    CompleteRealName,
    ConsumeSmsChallenge,
    LinkPartnerAccount,
    ListPartnerLinks,
    RevokePartnerLink,
    IssuePersonToken,
    ListTokenRevocations,
    GetPersonFacts,
    SendSmsCode,
    VerifySmsCode,
    ListMyAccessHistory,
    StartFaceVerification,
    /// A FACE_PURPOSE_PHONE_CHANGE session: front doors start it without a token.
    StartPhoneChangeFace,
    SubmitFaceResult,
    /// The holder's own session, started by the bank with the holder's token.
    GetFace,
    /// The elder's family binding check, which names the binder.
    GetBindersFace,
    /// The holder's PHONE_CHANGE session the bank started without a token.
    GetPhoneChangeFace,
    WatchFace,
    WatchBindersFace,
    WatchPhoneChangeFace,
    // The three that change what later probes stand on come last.
    UnlinkPartnerAccount,
    SuspendPerson,
    ResumePerson,
}

const PROBES: [Probe; 28] = [
    Probe::RegisterPerson,
    Probe::GetPerson,
    Probe::ResolvePerson,
    Probe::MatchPerson,
    Probe::ChangePhone,
    Probe::CompleteRealName,
    Probe::ConsumeSmsChallenge,
    Probe::LinkPartnerAccount,
    Probe::ListPartnerLinks,
    Probe::RevokePartnerLink,
    Probe::IssuePersonToken,
    Probe::ListTokenRevocations,
    Probe::GetPersonFacts,
    Probe::SendSmsCode,
    Probe::VerifySmsCode,
    Probe::ListMyAccessHistory,
    Probe::StartFaceVerification,
    Probe::StartPhoneChangeFace,
    Probe::SubmitFaceResult,
    Probe::GetFace,
    Probe::GetBindersFace,
    Probe::GetPhoneChangeFace,
    Probe::WatchFace,
    Probe::WatchBindersFace,
    Probe::WatchPhoneChangeFace,
    Probe::UnlinkPartnerAccount,
    Probe::SuspendPerson,
    Probe::ResumePerson,
];

impl Probe {
    fn method(self) -> &'static str {
        match self {
            Probe::RegisterPerson => "/medins.identity.v1.PersonService/RegisterPerson",
            Probe::GetPerson => "/medins.identity.v1.PersonService/GetPerson",
            Probe::ResolvePerson => "/medins.identity.v1.PersonService/ResolvePerson",
            Probe::MatchPerson => "/medins.identity.v1.PersonService/MatchPerson",
            Probe::ChangePhone => "/medins.identity.v1.PersonService/ChangePhone",
            Probe::CompleteRealName => "/medins.identity.v1.PersonService/CompleteRealName",
            Probe::ConsumeSmsChallenge => "/medins.identity.v1.PersonService/ConsumeSmsChallenge",
            Probe::SuspendPerson => "/medins.identity.v1.PersonService/SuspendPerson",
            Probe::ResumePerson => "/medins.identity.v1.PersonService/ResumePerson",
            Probe::LinkPartnerAccount => "/medins.identity.v1.PartnerLinkService/LinkPartnerAccount",
            Probe::UnlinkPartnerAccount => "/medins.identity.v1.PartnerLinkService/UnlinkPartnerAccount",
            Probe::ListPartnerLinks => "/medins.identity.v1.PartnerLinkService/ListPartnerLinks",
            Probe::RevokePartnerLink => "/medins.identity.v1.PartnerLinkService/RevokePartnerLink",
            Probe::IssuePersonToken => "/medins.identity.v1.PersonTokenService/IssuePersonToken",
            Probe::ListTokenRevocations => "/medins.identity.v1.PersonTokenService/ListTokenRevocations",
            Probe::GetPersonFacts => "/medins.identity.v1.PersonFactsService/GetPersonFacts",
            Probe::SendSmsCode => "/medins.identity.v1.SmsService/SendSmsCode",
            Probe::VerifySmsCode => "/medins.identity.v1.SmsService/VerifySmsCode",
            Probe::ListMyAccessHistory => "/medins.identity.v1.AccessHistoryService/ListMyAccessHistory",
            Probe::StartFaceVerification | Probe::StartPhoneChangeFace => {
                "/medins.identity.v1.FaceVerificationService/StartFaceVerification"
            }
            Probe::SubmitFaceResult => "/medins.identity.v1.FaceVerificationService/SubmitFaceResult",
            Probe::GetFace | Probe::GetBindersFace | Probe::GetPhoneChangeFace => {
                "/medins.identity.v1.FaceVerificationService/GetFaceVerification"
            }
            Probe::WatchFace | Probe::WatchBindersFace | Probe::WatchPhoneChangeFace => {
                "/medins.identity.v1.FaceVerificationService/WatchFaceVerification"
            }
        }
    }
}

/// The table, as a partner sees it: what `who` gets from `probe` about an existing or a missing
/// person (or session). Every answer that is a refusal must be the same for both targets.
fn expected(probe: Probe, who: Who, target: Target) -> Answer {
    let existing = target == Target::Existing;
    // Rows of the person's token, operators and (where `service`) medins services.
    let by_token = |service: bool, missing_for_standing: Answer| match who {
        Who::Ops => {
            if existing {
                ok()
            } else {
                missing_for_standing.clone()
            }
        }
        Who::Service if service => {
            if existing {
                ok()
            } else {
                missing_for_standing.clone()
            }
        }
        Who::Service => token_invalid(),
        Who::OwnToken if existing => ok(),
        Who::OwnToken | Who::OthersToken | Who::BindersToken => token_invalid(),
        _ => token_required(),
    };
    // Rows of front doors and operators, by kind.
    let front_doors = |existing_answer: Answer, missing_answer: Answer| {
        if who.front_door() || who == Who::Ops {
            if existing { existing_answer } else { missing_answer }
        } else {
            kind_not_allowed()
        }
    };
    let only = |allowed: Who, existing_answer: Answer, missing_answer: Answer| {
        if who != allowed {
            kind_not_allowed()
        } else if existing {
            existing_answer
        } else {
            missing_answer
        }
    };
    let no_session = || refused(Code::NotFound, "FACE_SESSION_NOT_FOUND");
    match probe {
        Probe::RegisterPerson => front_doors(ok(), ok()),
        Probe::GetPerson => by_token(true, person_not_found()),
        Probe::ResolvePerson | Probe::MatchPerson => {
            if matches!(who, Who::Ops | Who::Service) {
                ok()
            } else {
                kind_not_allowed()
            }
        }
        Probe::ChangePhone => {
            front_doors(refused(Code::FailedPrecondition, "FACE_VERIFICATION_REQUIRED"), person_not_found())
        }
        Probe::CompleteRealName => front_doors(ok(), person_not_found()),
        Probe::ConsumeSmsChallenge => {
            only(Who::Service, refused(Code::NotFound, "SMS_CHALLENGE_NOT_FOUND"), person_not_found())
        }
        Probe::LinkPartnerAccount => {
            // The bank is linked already (another user ref); the others have no code.
            let existing_answer = if who.bank() {
                refused(Code::AlreadyExists, "PARTNER_LINK_CONFLICT")
            } else {
                refused(Code::NotFound, "SMS_CHALLENGE_NOT_FOUND")
            };
            front_doors(existing_answer, person_not_found())
        }
        Probe::UnlinkPartnerAccount | Probe::ListPartnerLinks | Probe::RevokePartnerLink => by_token(true, ok()),
        Probe::IssuePersonToken => {
            if who.bank() && existing {
                ok()
            } else {
                refused(Code::FailedPrecondition, "PARTNER_LINK_REQUIRED")
            }
        }
        Probe::ListTokenRevocations => only(Who::Service, ok(), ok()),
        Probe::GetPersonFacts => only(Who::Service, ok(), person_not_found()),
        Probe::SendSmsCode => front_doors(ok(), person_not_found()),
        Probe::VerifySmsCode => {
            // The challenge was asked for by operators: to every other partner it does not exist.
            let existing_answer = if who == Who::Ops {
                refused(Code::FailedPrecondition, "SMS_CODE_INVALID")
            } else {
                refused(Code::NotFound, "SMS_CHALLENGE_NOT_FOUND")
            };
            front_doors(existing_answer, refused(Code::NotFound, "SMS_CHALLENGE_NOT_FOUND"))
        }
        Probe::ListMyAccessHistory => by_token(false, ok()),
        Probe::StartFaceVerification => by_token(true, person_not_found()),
        // Any front door, with or without a token, for any person id.
        Probe::StartPhoneChangeFace if who.front_door() => {
            if existing {
                ok()
            } else {
                person_not_found()
            }
        }
        Probe::StartPhoneChangeFace => by_token(true, person_not_found()),
        Probe::SubmitFaceResult => only(Who::FaceProvider, ok(), no_session()),
        Probe::GetFace | Probe::WatchFace => by_token(true, no_session()),
        Probe::GetBindersFace | Probe::WatchBindersFace => match who {
            Who::BindersToken if existing => ok(),
            Who::OwnToken | Who::OthersToken => token_invalid(),
            _ => by_token(true, no_session()),
        },
        Probe::GetPhoneChangeFace => {
            // The bank started it without a token: the bank reads it, whatever token it sends.
            if who.bank() && existing { ok() } else { by_token(true, no_session()) }
        }
        Probe::WatchPhoneChangeFace => by_token(true, no_session()),
        Probe::SuspendPerson | Probe::ResumePerson => only(Who::Ops, ok(), person_not_found()),
    }
}

/// Everyone and everything the matrix needs.
struct World {
    /// Real name, linked with the bank, a level-2 token issued to the bank.
    holder: FrontDoorPerson,
    callers: Vec<Caller>,
    /// A PENDING session of the holder, started by the bank with the holder's token.
    holder_session: String,
    /// Another PENDING session of the holder, for the provider's submission.
    submit_session: String,
    /// The elder's FAMILY_BINDING check, started by insurance-svc naming the binder.
    binders_session: String,
    /// A PHONE_CHANGE session of the holder, started by the bank without a token.
    phone_change_session: String,
    /// A challenge operators asked for (to a person registered for it), and a wrong code for it.
    ops_challenge: String,
    wrong_code: String,
}

/// Every identity-svc scope.
fn identity_scopes() -> BTreeSet<String> {
    identity_svc::METHOD_SCOPES.iter().map(|(_, scope)| (*scope).to_owned()).collect()
}

/// Adds a CITY_APP and a TERMINAL partner, gives every partner every identity-svc scope (so that
/// the access table, not the scopes, answers), and reloads both services. Their keys.
fn widen_partners(stack: &Stack) -> (String, String) {
    let mut file = PartnersFile::load(&stack.partners_file).expect("partners file");
    let fast = RateLimit { per_second: 100_000.0, burst: 100_000 };
    let mut add = |id: &str, kind| {
        file.add_partner(id, id, kind, None, fast, "2026-11-23T00:00:00Z").expect("add partner").expose().to_owned()
    };
    let city = add("city-app", PartnerKind::CityApp);
    let terminal = add("terminal", PartnerKind::Terminal);
    for partner in &mut file.partners {
        partner.scopes.extend(identity_scopes());
    }
    file.save(&stack.partners_file).expect("save partners");
    stack.identity_partners.reload().expect("reload identity-svc's partners");
    stack.insurance_partners.reload().expect("reload insurance-svc's partners");
    (city, terminal)
}

/// A person registered by operators, with a phone.
async fn registered(stack: &Stack) -> (String, SeedPerson) {
    let seed = SeedPerson::adult();
    (stack.register_as_ops(&seed).await, seed)
}

async fn world(stack: &Stack) -> World {
    let (city, terminal) = widen_partners(stack);
    // The binder and the elder first: their flows move the clock; the holder's token and the
    // sessions below are then the freshest.
    let binder = stack.binder(0).await;
    let elder = stack.insured_member(NaiveDate::from_ymd_opt(1950, 6, 1).unwrap()).await;
    let documents = stack.binding_documents(&binder, &elder, Relationship::Parent).await;
    let added = stack.add_member(&binder, &elder, Relationship::Parent, &documents).await.expect("bind the parent");
    let binders_session = added.face_check.expect("a face check of the elder").session_id;
    let other = stack.front_door_person(&stack.keys.bank).await;
    let holder = stack.front_door_person(&stack.keys.bank).await;

    let keys = &stack.keys;
    let holder_session =
        stack.start_face_session(&keys.bank, Some(&holder.token), &holder.person_id, FacePurpose::RealName).await;
    let submit_session =
        stack.start_face_session(&keys.bank, Some(&holder.token), &holder.person_id, FacePurpose::RealName).await;
    let phone_change_session =
        stack.start_face_session(&keys.bank, None, &holder.person_id, FacePurpose::PhoneChange).await;

    let (person_id, seed) = registered(stack).await;
    let ops_challenge = stack.sent_sms(&keys.ops, &person_id, SmsPurpose::RealName).await;
    let code = stack.sms.last_code(&seed.phone);
    let wrong_code = if code == "000000" { "111111" } else { "000000" }.to_owned();

    let caller =
        |who, key: &str, token: Option<&str>| Caller { who, key: key.to_owned(), token: token.map(str::to_owned) };
    let callers = CALLERS
        .iter()
        .map(|who| match who {
            Who::Service => caller(*who, &keys.service, None),
            Who::OthersToken => caller(*who, &keys.bank, Some(&other.token)),
            Who::BindersToken => caller(*who, &keys.bank, Some(&binder.token)),
            Who::Bank => caller(*who, &keys.bank, None),
            Who::MiniProgram => caller(*who, &keys.mini_program, None),
            Who::CityApp => caller(*who, &city, None),
            Who::Hospital => caller(*who, &keys.hospital, None),
            Who::Pharmacy => caller(*who, &keys.pharmacy, None),
            Who::Employer => caller(*who, &keys.employer, None),
            Who::FaceProvider => caller(*who, &keys.face_provider, None),
            Who::Terminal => caller(*who, &terminal, None),
            Who::Ops => caller(*who, &keys.ops, None),
            Who::OwnToken => caller(*who, &keys.bank, Some(&holder.token)),
        })
        .collect();
    World {
        holder,
        callers,
        holder_session,
        submit_session,
        binders_session,
        phone_change_session,
        ops_challenge,
        wrong_code,
    }
}

/// Whether a fresh seed became a person (operators match it).
async fn is_person(stack: &Stack, seed: &SeedPerson) -> bool {
    stack
        .persons(Some(&stack.keys.ops))
        .match_person(MatchPersonRequest {
            name: seed.name.clone(),
            id_number: seed.id_number.clone(),
            person_id: String::new(),
        })
        .await
        .expect("operators match")
        .into_inner()
        .matched
}

/// Calls `probe` as `caller` about the world's holder (or session), or about a missing one, and
/// checks what a refusal must have left unchanged.
async fn call(stack: &Stack, w: &World, probe: Probe, caller: &Caller, target: Target) -> Answer {
    let existing = target == Target::Existing;
    let missing = Uuid::now_v7().to_string();
    let person = if existing { w.holder.person_id.clone() } else { missing.clone() };
    let key = Some(caller.key.as_str());
    let session = |id: &str| if existing { id.to_owned() } else { missing.clone() };
    match probe {
        Probe::RegisterPerson | Probe::ResolvePerson | Probe::MatchPerson => {
            // A missing person: a name and ID number nobody registered.
            let seed = if existing { w.holder.seed.clone() } else { SeedPerson::adult() };
            let mut persons = stack.persons(key);
            let got = match probe {
                Probe::RegisterPerson => answer(
                    &persons
                        .register_person(caller.request(RegisterPersonRequest {
                            name: seed.name.clone(),
                            id_number: seed.id_number.clone(),
                            phone: seed.phone.clone(),
                        }))
                        .await,
                ),
                Probe::ResolvePerson => answer(
                    &persons
                        .resolve_person(caller.request(ResolvePersonRequest {
                            name: seed.name.clone(),
                            id_number: seed.id_number.clone(),
                        }))
                        .await,
                ),
                _ => answer(
                    &persons
                        .match_person(caller.request(MatchPersonRequest {
                            name: seed.name.clone(),
                            id_number: seed.id_number.clone(),
                            person_id: String::new(),
                        }))
                        .await,
                ),
            };
            if got.0 != Code::Ok && !existing {
                assert!(!is_person(stack, &seed).await, "{probe:?} refused to {:?} created nobody", caller.who);
            }
            got
        }
        Probe::GetPerson => {
            answer(&stack.persons(key).get_person(caller.request(GetPersonRequest { person_id: person })).await)
        }
        Probe::ChangePhone => {
            let new_phone = SeedPerson::adult().phone;
            answer(
                &stack
                    .persons(key)
                    .change_phone(caller.request(ChangePhoneRequest {
                        person_id: person,
                        new_phone,
                        challenge_id: Uuid::now_v7().to_string(),
                        proof: Some(Proof::FaceSessionId(Uuid::now_v7().to_string())),
                    }))
                    .await,
            )
        }
        Probe::CompleteRealName => {
            answer(
                &stack
                    .persons(key)
                    .complete_real_name(caller.request(CompleteRealNameRequest {
                        person_id: person,
                        challenge_id: Uuid::now_v7().to_string(),
                    }))
                    .await,
            )
        }
        Probe::ConsumeSmsChallenge => answer(
            &stack
                .persons(key)
                .consume_sms_challenge(caller.request(ConsumeSmsChallengeRequest {
                    person_id: person,
                    challenge_id: Uuid::now_v7().to_string(),
                    purpose: SmsPurpose::RealName as i32,
                    on_behalf_of_partner_id: String::new(),
                }))
                .await,
        ),
        Probe::SuspendPerson => {
            let got = stack
                .persons(key)
                .suspend_person(
                    caller.request(SuspendPersonRequest { person_id: person, reason: "access matrix".into() }),
                )
                .await;
            if let Ok(response) = &got
                && existing
            {
                assert!(response.get_ref().changed, "no refused caller suspended the holder before operators");
            }
            answer(&got)
        }
        Probe::ResumePerson => answer(
            &stack
                .persons(key)
                .resume_person(
                    caller.request(ResumePersonRequest { person_id: person, reason: "access matrix".into() }),
                )
                .await,
        ),
        Probe::LinkPartnerAccount => answer(
            &stack
                .links(key)
                .link_partner_account(caller.request(LinkPartnerAccountRequest {
                    person_id: person,
                    partner_user_ref: format!("matrix-{}", Uuid::new_v4().simple()),
                    challenge_id: Uuid::now_v7().to_string(),
                }))
                .await,
        ),
        Probe::UnlinkPartnerAccount => {
            let got = stack
                .links(key)
                .unlink_partner_account(caller.request(UnlinkPartnerAccountRequest { person_id: person }))
                .await;
            if let Ok(response) = &got {
                // Only the holder's own token at the bank ends a live link: the bank's.
                let expected = existing && caller.who == Who::OwnToken;
                assert_eq!(response.get_ref().unlinked, expected, "unlinked, as {:?}", caller.who);
            }
            answer(&got)
        }
        Probe::ListPartnerLinks => answer(
            &stack
                .links(key)
                .list_partner_links(caller.request(ListPartnerLinksRequest {
                    person_id: person,
                    page_size: 10,
                    page_token: String::new(),
                }))
                .await,
        ),
        Probe::RevokePartnerLink => {
            // A partner the holder is not linked with: nothing to revoke, nothing changes.
            answer(
                &stack
                    .links(key)
                    .revoke_partner_link(
                        caller.request(RevokePartnerLinkRequest { person_id: person, partner_id: "pharmacy".into() }),
                    )
                    .await,
            )
        }
        Probe::IssuePersonToken => {
            let got = stack
                .person_tokens(key)
                .issue_person_token(caller.request(IssuePersonTokenRequest { person_id: person }))
                .await;
            if let Ok(issued) = &got {
                privacy::sensitive_token(&issued.get_ref().token);
            }
            answer(&got)
        }
        Probe::ListTokenRevocations => answer(
            &stack.person_tokens(key).list_token_revocations(caller.request(ListTokenRevocationsRequest {})).await,
        ),
        Probe::GetPersonFacts => answer(
            &stack
                .person_facts(key)
                .get_person_facts(caller.request(GetPersonFactsRequest { person_id: person }))
                .await,
        ),
        Probe::SendSmsCode => {
            // An existing person of their own each time: no resend interval between callers.
            let person = if existing { registered(stack).await.0 } else { missing.clone() };
            let sent_before = stack.sms.sent().len();
            let got = stack
                .sms_codes(key)
                .send_sms_code(caller.request(SendSmsCodeRequest {
                    person_id: person,
                    purpose: SmsPurpose::RealName as i32,
                    ..Default::default()
                }))
                .await;
            if got.is_err() {
                assert_eq!(stack.sms.sent().len(), sent_before, "a refused code is not sent");
            }
            answer(&got)
        }
        Probe::VerifySmsCode => answer(
            &stack
                .sms_codes(key)
                .verify_sms_code(caller.request(VerifySmsCodeRequest {
                    challenge_id: if existing { w.ops_challenge.clone() } else { missing.clone() },
                    code: w.wrong_code.clone(),
                }))
                .await,
        ),
        Probe::ListMyAccessHistory => answer(
            &stack
                .access_history(key)
                .list_my_access_history(caller.request(ListMyAccessHistoryRequest {
                    person_id: person,
                    page_size: 5,
                    page_token: String::new(),
                }))
                .await,
        ),
        Probe::StartFaceVerification | Probe::StartPhoneChangeFace => {
            let purpose =
                if probe == Probe::StartPhoneChangeFace { FacePurpose::PhoneChange } else { FacePurpose::RealName };
            answer(
                &stack
                    .faces(key)
                    .start_face_verification(caller.request(StartFaceVerificationRequest {
                        person_id: person,
                        purpose: purpose as i32,
                        ..Default::default()
                    }))
                    .await,
            )
        }
        Probe::SubmitFaceResult => answer(
            &stack
                .faces(key)
                .submit_face_result(caller.request(SubmitFaceResultRequest {
                    session_id: session(&w.submit_session),
                    liveness_passed: false,
                    similarity: 0.5,
                    provider_reference: format!("matrix-{}", Uuid::new_v4().simple()),
                }))
                .await,
        ),
        Probe::GetFace | Probe::GetBindersFace | Probe::GetPhoneChangeFace => {
            let id = match probe {
                Probe::GetFace => &w.holder_session,
                Probe::GetBindersFace => &w.binders_session,
                _ => &w.phone_change_session,
            };
            answer(
                &stack
                    .faces(key)
                    .get_face_verification(caller.request(GetFaceVerificationRequest { session_id: session(id) }))
                    .await,
            )
        }
        Probe::WatchFace | Probe::WatchBindersFace | Probe::WatchPhoneChangeFace => {
            let id = match probe {
                Probe::WatchFace => &w.holder_session,
                Probe::WatchBindersFace => &w.binders_session,
                _ => &w.phone_change_session,
            };
            // The stream is dropped at once: the answer is the call's own.
            answer(
                &stack
                    .faces(key)
                    .watch_face_verification(caller.request(WatchFaceVerificationRequest { session_id: session(id) }))
                    .await,
            )
        }
    }
}

/// The identity-svc audit entries of `person`, once there are at least `count`.
async fn history(stack: &Stack, person: &str, count: usize) -> Vec<AuditEntry> {
    let store = stack.audit_replica("identity-svc");
    let person = Uuid::parse_str(person).unwrap();
    for _ in 0..200 {
        let entries = store.history(person, None, 1000).await.expect("read the history");
        if entries.len() >= count {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.history(person, None, 1000).await.expect("read the history")
}

#[tokio::test]
async fn every_identity_rpc_answers_every_caller_as_the_access_table_says_and_refusals_tell_nothing() {
    let stack = Stack::start().await;
    let w = world(&stack).await;

    // Every row of the table is probed.
    for rule in identity_svc::domain::access::RULES {
        assert!(PROBES.iter().any(|probe| probe.method() == rule.method), "{} is not probed", rule.method);
    }
    let masked_phone_before = stack
        .persons(Some(&stack.keys.ops))
        .get_person(GetPersonRequest { person_id: w.holder.person_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .person
        .unwrap()
        .masked_phone;

    let mut checked = 0;
    for probe in PROBES {
        for caller in &w.callers {
            // The missing target first: the holder's own unlink ends the link its token needs.
            let on_missing = call(&stack, &w, probe, caller, Target::Missing).await;
            let on_existing = call(&stack, &w, probe, caller, Target::Existing).await;
            let want_existing = expected(probe, caller.who, Target::Existing);
            let want_missing = expected(probe, caller.who, Target::Missing);
            assert_eq!(on_existing, want_existing, "{probe:?} as {:?}, existing", caller.who);
            assert_eq!(on_missing, want_missing, "{probe:?} as {:?}, missing", caller.who);
            // A caller without standing learns nothing, not even existence.
            let refusal = matches!(
                on_existing.1.as_str(),
                "PARTNER_KIND_NOT_ALLOWED" | "PERSON_TOKEN_INVALID" | "PERSON_TOKEN_REQUIRED" | "PARTNER_LINK_REQUIRED"
            );
            if refusal {
                assert_eq!(
                    on_existing, on_missing,
                    "{probe:?} as {:?}: the same refusal for a missing one",
                    caller.who
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, PROBES.len() * CALLERS.len());

    // State afterwards: no phone changed, the provider's one submission is the only one, and
    // the refused calls about the holder are in the holder's history under their partners.
    let ops = &stack.keys.ops;
    let holder_now = stack
        .persons(Some(ops))
        .get_person(GetPersonRequest { person_id: w.holder.person_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .person
        .unwrap();
    assert_eq!(holder_now.masked_phone, masked_phone_before);
    let submitted = stack
        .faces(Some(ops))
        .get_face_verification(GetFaceVerificationRequest { session_id: w.submit_session.clone() })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(submitted.submissions, 1, "only the face provider's submission counted");
    let entries = history(&stack, &w.holder.person_id, 50).await;
    for (partner, method, outcome) in [
        ("hospital", "/medins.identity.v1.PersonService/GetPerson", "UNAUTHENTICATED"),
        ("employer", "/medins.identity.v1.PersonService/ChangePhone", "PERMISSION_DENIED"),
        ("insurance-svc", "/medins.identity.v1.PersonService/SuspendPerson", "PERMISSION_DENIED"),
        ("ops", "/medins.identity.v1.PersonService/SuspendPerson", "OK"),
        ("pharmacy", "/medins.identity.v1.FaceVerificationService/GetFaceVerification", "UNAUTHENTICATED"),
        ("mini-program", "/medins.identity.v1.PersonTokenService/IssuePersonToken", "FAILED_PRECONDITION"),
    ] {
        assert!(
            entries.iter().any(|e| e.partner_id == partner && e.method == method && e.outcome == outcome),
            "{partner} {method} {outcome} is not in the holder's history"
        );
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn a_partner_without_a_link_gets_no_token_and_cannot_tell_a_person_from_a_missing_id() {
    let stack = Stack::start().await;
    let holder = stack.front_door_person(&stack.keys.bank).await;
    let mut mini = stack.person_tokens(Some(&stack.keys.mini_program));
    let existing = mini.issue_person_token(IssuePersonTokenRequest { person_id: holder.person_id.clone() }).await;
    let missing = mini.issue_person_token(IssuePersonTokenRequest { person_id: Uuid::now_v7().to_string() }).await;
    assert_eq!(answer(&existing), refused(Code::FailedPrecondition, "PARTNER_LINK_REQUIRED"));
    assert_eq!(answer(&existing), answer(&missing));
    // The linked bank still gets one, and a suspended person's token is refused only to it.
    let issued = stack
        .person_tokens(Some(&stack.keys.bank))
        .issue_person_token(IssuePersonTokenRequest { person_id: holder.person_id.clone() })
        .await
        .expect("the linked bank gets a token");
    privacy::sensitive_token(&issued.get_ref().token);
    stack
        .persons(Some(&stack.keys.ops))
        .suspend_person(SuspendPersonRequest { person_id: holder.person_id.clone(), reason: "fraud report".into() })
        .await
        .expect("operators suspend");
    let suspended = stack
        .person_tokens(Some(&stack.keys.bank))
        .issue_person_token(IssuePersonTokenRequest { person_id: holder.person_id.clone() })
        .await;
    assert_eq!(answer(&suspended), refused(Code::FailedPrecondition, "PERSON_SUSPENDED"));
    let unlinked = mini.issue_person_token(IssuePersonTokenRequest { person_id: holder.person_id.clone() }).await;
    assert_eq!(answer(&unlinked), refused(Code::FailedPrecondition, "PARTNER_LINK_REQUIRED"), "no link: nothing else");
    stack.shutdown().await;
}
