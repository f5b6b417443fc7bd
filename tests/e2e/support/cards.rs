//! Helpers of the card tests: the card client, insured persons made by operators, verified SMS
//! challenges for card applications, fees, and two clearly marked stand-ins (document rows and
//! family bindings written straight into the database) until the upload and binding helpers of
//! the documents branch are merged here.

use chrono::NaiveDate;
use diesel::RunQueryDsl;
use insurance_svc::{
    domain::document::{ContentType, DocumentKind},
    store::document::{Document, DocumentStore},
};
use medins_common::db::DbError;
use medins_proto::{
    identity::v1::{RegisterPersonRequest, SendSmsCodeRequest, SmsPurpose, VerifySmsCodeRequest},
    insurance::v1::{
        OpenAccountRequest, RecordCardFeeRequest, Scheme, card_service_client::CardServiceClient, open_account_request,
    },
};
use uuid::Uuid;

use super::{Intercepted, SeedPerson, Stack, interceptor};

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
        self.persons(Some(&self.keys.ops))
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

    /// A verified SMS challenge of purpose CARD_APPLICATION for `phone`, sent and verified through
    /// the partner holding `key`. Moves the clock 61 s first (the resend interval).
    pub async fn verified_card_sms(&self, key: &str, phone: &str) -> String {
        self.clock.advance(chrono::Duration::seconds(61));
        let challenge = self.sent_card_sms(key, phone).await;
        let code = self.sms.last_code(phone);
        self.sms_codes(Some(key))
            .verify_sms_code(VerifySmsCodeRequest { challenge_id: challenge.clone(), code })
            .await
            .expect("verify code");
        challenge
    }

    /// An SMS challenge of purpose CARD_APPLICATION sent to `phone` but not verified. Moves the
    /// clock 61 s first.
    pub async fn unverified_card_sms(&self, key: &str, phone: &str) -> String {
        self.clock.advance(chrono::Duration::seconds(61));
        self.sent_card_sms(key, phone).await
    }

    async fn sent_card_sms(&self, key: &str, phone: &str) -> String {
        self.sms_codes(Some(key))
            .send_sms_code(SendSmsCodeRequest { phone: phone.to_owned(), purpose: SmsPurpose::CardApplication as i32 })
            .await
            .expect("send code")
            .into_inner()
            .challenge_id
    }

    /// A card fee of `person_id` recorded by the bank; returns its id.
    pub async fn card_fee(&self, person_id: &str) -> String {
        self.cards(Some(&self.keys.bank))
            .record_card_fee(RecordCardFeeRequest {
                person_id: person_id.to_owned(),
                amount_cents: 2000,
                reference: format!("FEE-{}", Uuid::now_v7().simple()),
            })
            .await
            .expect("record fee")
            .into_inner()
            .fee
            .expect("fee")
            .fee_id
    }

    /// STAND-IN until the documents branch's `stack.upload_document(..)` is merged: writes the
    /// metadata row of a document of `owner` directly (no bytes in an object store). The card
    /// rules read only owner, kind and content type, which this row carries as an upload would.
    pub async fn stand_in_document(&self, owner: &str, kind: DocumentKind, content_type: ContentType) -> String {
        let id = Uuid::now_v7();
        let document = Document {
            id,
            owner_person_id: Uuid::parse_str(owner).unwrap(),
            kind,
            content_type,
            size_bytes: 1024,
            sha256: "0".repeat(64),
            object_key: format!("stand-in/{id}"),
            uploaded_by: "test-stand-in".into(),
            created_at: chrono::Utc::now().naive_utc(),
        };
        DocumentStore::new(self.insurance_db.clone()).insert(document).await.expect("insert stand-in document");
        id.to_string()
    }

    /// STAND-IN for AddFamilyMember in card tests: writes an ACTIVE family binding of `member` by
    /// `owner` directly (with stand-in documents), so a guardian rule can be exercised without
    /// running the whole family flow here.
    pub async fn stand_in_active_binding(&self, owner: &str, member: &str, member_birth: NaiveDate) {
        let letter = self.stand_in_document(owner, DocumentKind::CommitmentLetter, ContentType::Pdf).await;
        let owner_page = self.stand_in_document(owner, DocumentKind::HouseholdRegister, ContentType::Png).await;
        let member_page = self.stand_in_document(owner, DocumentKind::HouseholdRegister, ContentType::Png).await;
        let (owner, member) = (owner.to_owned(), member.to_owned());
        self.insurance_db
            .run(move |conn| {
                use diesel::ExpressionMethods;
                use insurance_svc::store::schema::family_bindings as fb;
                diesel::insert_into(fb::table)
                    .values((
                        fb::id.eq(Uuid::now_v7().to_string()),
                        fb::owner_person_id.eq(owner),
                        fb::member_person_id.eq(member),
                        fb::relationship.eq("CHILD"),
                        fb::status.eq("ACTIVE"),
                        fb::quota_slot.eq(Some(1)),
                        fb::member_birth_date.eq(member_birth),
                        fb::commitment_letter_id.eq(letter),
                        fb::owner_register_id.eq(owner_page),
                        fb::member_register_id.eq(member_page),
                        fb::family_aid.eq(false),
                        fb::created_at.eq(chrono::Utc::now().naive_utc()),
                        fb::activated_at.eq(Some(chrono::Utc::now().naive_utc())),
                    ))
                    .execute(conn)
                    .map_err(DbError::from)
            })
            .await
            .expect("insert stand-in binding");
    }
}
