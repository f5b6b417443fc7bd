//! Helpers of the card tests: the card client, insured persons made by operators, verified SMS
//! challenges for card applications, fees, and uploaded documents.

use chrono::NaiveDate;
use medins_common::crypto::DataKeys;
use medins_proto::{
    identity::v1::{RegisterPersonRequest, SendSmsCodeRequest, SmsPurpose, VerifySmsCodeRequest},
    insurance::v1::{
        ApplyForCardRequest, Card, CardChannel, DocumentKind, OpenAccountRequest, PersonIdentity, RecordCardFeeRequest,
        Scheme, card_service_client::CardServiceClient, open_account_request,
    },
};
use uuid::Uuid;

use super::{Intercepted, SeedPerson, Stack, interceptor, privacy};

/// A person registered by operators, with an open account.
#[derive(Clone, Debug)]
pub struct InsuredPerson {
    pub person_id: String,
    pub seed: SeedPerson,
}

impl Stack {
    /// insurance-svc cards, as the partner holding `key`.
    pub fn cards(&self, key: Option<&str>) -> CardServiceClient<Intercepted> {
        CardServiceClient::with_interceptor(self.insurance_channel(), interceptor(key))
    }

    /// Registers `seed` as operators do at a counter; returns the person id.
    pub async fn register_as_ops(&self, seed: &SeedPerson) -> String {
        self.register_at(&self.keys.ops, seed).await
    }

    /// Registers `seed` as the partner holding `partner_key`; returns the person id.
    pub async fn register_at(&self, partner_key: &str, seed: &SeedPerson) -> String {
        self.persons(Some(partner_key))
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
            .person_id
    }

    /// A person born on `birth`, registered by operators, with a RESIDENT account.
    pub async fn insured_person_born(&self, birth: NaiveDate) -> InsuredPerson {
        let seed = SeedPerson::born(birth);
        let person_id = self.register_as_ops(&seed).await;
        self.open_account_for(&person_id).await;
        InsuredPerson { person_id, seed }
    }

    /// An adult registered by operators, with a RESIDENT account.
    pub async fn insured_adult(&self) -> InsuredPerson {
        self.insured_person_born(NaiveDate::from_ymd_opt(1984, 5, 17).unwrap()).await
    }

    /// An adult registered by operators with an EMPLOYEE account of `employer_code`.
    pub async fn employee_of(&self, employer_code: &str) -> InsuredPerson {
        let seed = SeedPerson::adult();
        let person_id = self.register_as_ops(&seed).await;
        self.accounts(Some(&self.keys.ops))
            .open_account(OpenAccountRequest {
                person: Some(open_account_request::Person::PersonId(person_id.clone())),
                scheme: Scheme::Employee as i32,
                region_code: "110105".into(),
                employer_code: employer_code.into(),
            })
            .await
            .expect("open employee account");
        InsuredPerson { person_id, seed }
    }

    /// A verified SMS challenge of purpose CARD_APPLICATION to the phone on record of
    /// `person_id` (which is `phone`), sent and verified through the partner holding `key`.
    /// Moves the clock 61 s first (the resend interval).
    pub async fn verified_card_sms(&self, key: &str, person_id: &str, phone: &str) -> String {
        self.clock.advance(chrono::Duration::seconds(61));
        let challenge = self.sent_sms(key, person_id, SmsPurpose::CardApplication).await;
        let code = self.sms.last_code(phone);
        self.sms_codes(Some(key))
            .verify_sms_code(VerifySmsCodeRequest { challenge_id: challenge.clone(), code })
            .await
            .expect("verify code");
        challenge
    }

    /// An SMS challenge of purpose CARD_APPLICATION sent to `person_id`'s phone on record but
    /// not verified. Moves the clock 61 s first.
    pub async fn unverified_card_sms(&self, key: &str, person_id: &str) -> String {
        self.clock.advance(chrono::Duration::seconds(61));
        self.sent_sms(key, person_id, SmsPurpose::CardApplication).await
    }

    /// An SMS challenge of `purpose` sent by the partner holding `key` to `person_id`'s phone on
    /// record; returns its id.
    pub async fn sent_sms(&self, key: &str, person_id: &str, purpose: SmsPurpose) -> String {
        self.sms_codes(Some(key))
            .send_sms_code(SendSmsCodeRequest {
                person_id: person_id.to_owned(),
                purpose: purpose as i32,
                ..Default::default()
            })
            .await
            .expect("send code")
            .into_inner()
            .challenge_id
    }

    /// A card fee of `person_id` recorded by the bank, the person (`payer`) at its counter;
    /// returns its id.
    pub async fn card_fee(&self, person_id: &str, payer: &SeedPerson) -> String {
        self.cards(Some(&self.keys.bank))
            .record_card_fee(RecordCardFeeRequest {
                person_id: person_id.to_owned(),
                amount_cents: 2000,
                reference: format!("FEE-{}", Uuid::now_v7().simple()),
                payer: Some(PersonIdentity { name: payer.name.clone(), id_number: payer.id_number.clone() }),
            })
            .await
            .expect("record fee")
            .into_inner()
            .fee
            .expect("fee")
            .fee_id
    }

    /// insurance-svc's personal-data keys, read from its key file.
    pub fn insurance_data_keys(&self) -> DataKeys {
        DataKeys::load(self.insurance_config.data_keys_file.as_deref().expect("tests give insurance-svc a key file"))
            .expect("load insurance-svc's data keys")
    }

    /// identity-svc's personal-data keys, read from its key file.
    pub fn identity_data_keys(&self) -> DataKeys {
        DataKeys::load(self.identity_config.data_keys_file.as_deref().expect("tests give identity-svc a key file"))
            .expect("load identity-svc's data keys")
    }

    /// `person_id`'s card, issued on the spot by operators at a service center (DELIVERED, VALID,
    /// functions INACTIVE); its number is registered as sensitive for the leak checks.
    pub async fn card_issued_on_the_spot(&self, person_id: &str) -> Card {
        let card = self
            .cards(Some(&self.keys.ops))
            .apply_for_card(ApplyForCardRequest {
                person_id: person_id.to_owned(),
                channel: CardChannel::ServiceCenter as i32,
                ..Default::default()
            })
            .await
            .expect("a card issued on the spot")
            .into_inner()
            .card
            .expect("a service center application carries its card");
        privacy::sensitive(&card.card_number);
        card
    }

    /// A document of `owner`, uploaded through DocumentService by operators (the applicant's app
    /// uploads the same way with the person's token). Returns its id.
    pub async fn uploaded_document(&self, owner: &str, kind: DocumentKind, bytes: &[u8]) -> String {
        self.upload_document(&self.keys.ops, None, owner, kind, bytes).await.expect("upload a document").document_id
    }
}
