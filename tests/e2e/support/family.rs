//! Helpers of the family tests: binders with an ACTIVE voucher, insured members of a chosen
//! age, the three binding documents, AddFamilyMember, and waiting for a binding's status.

use std::time::Duration;

use chrono::{Months, NaiveDate};
use medins_proto::insurance::v1::{
    AddFamilyMemberRequest, AddFamilyMemberResponse, BindingStatus, DocumentKind, FamilyBinding,
    GetFamilyBindingRequest, GetVoucherRequest, PersonIdentity, Relationship, Scheme, Voucher,
    family_service_client::FamilyServiceClient,
};
use tonic::{Request, Status};

/// The family-binding notice version partners show (insurance-svc's constant).
pub const CURRENT_NOTICE_VERSION: &str = insurance_svc::domain::family::CURRENT_NOTICE_VERSION;

use super::{
    Intercepted, SeedPerson, Stack,
    documents::{sample_jpeg, sample_pdf},
    interceptor, with_person_token,
};

/// A binder: insured, ACTIVE voucher (through the bank), with a bank-issued person token.
#[derive(Clone, Debug)]
pub struct Binder {
    pub person_id: String,
    pub account_id: String,
    pub token: String,
    pub seed: SeedPerson,
}

impl Binder {
    /// The binder named as a member (to try binding themself).
    pub fn as_member(&self) -> Member {
        Member { person_id: self.person_id.clone(), account_id: self.account_id.clone(), seed: self.seed.clone() }
    }
}

/// An insured member (their account opened by the bank by name and ID number: no phone, no
/// real name needed, like an elderly parent).
#[derive(Clone, Debug)]
pub struct Member {
    pub person_id: String,
    pub account_id: String,
    pub seed: SeedPerson,
}

/// The three documents of a binding, uploaded by the binder.
#[derive(Clone, Debug)]
pub struct BindingDocuments {
    pub commitment_letter: String,
    pub owner_register: String,
    pub member_register: String,
}

impl Stack {
    /// insurance-svc family bindings, as the partner holding `key`.
    pub fn family(&self, key: Option<&str>) -> FamilyServiceClient<Intercepted> {
        FamilyServiceClient::with_interceptor(self.insurance_channel(), interceptor(key))
    }

    /// A new binder (born 1985, RESIDENT scheme) with `balance_cents` in the individual account.
    pub async fn binder(&self, balance_cents: i64) -> Binder {
        self.binder_in(Scheme::Resident, balance_cents).await
    }

    /// A new binder (born 1985) insured under `scheme`, with `balance_cents` in the account.
    pub async fn binder_in(&self, scheme: Scheme, balance_cents: i64) -> Binder {
        let (person, account) = self.insured_holder(scheme, balance_cents).await;
        Binder { person_id: account.person_id, account_id: account.account_id, token: person.token, seed: person.seed }
    }

    /// A new insured member born on `birth`.
    pub async fn insured_member(&self, birth: NaiveDate) -> Member {
        let seed = SeedPerson::born(birth);
        let account = self
            .open_account_by_identity(&self.keys.bank, &seed, Scheme::Resident, "")
            .await
            .expect("open the member's account");
        Member { person_id: account.person_id, account_id: account.account_id, seed }
    }

    /// A member who is `years` old today, less `days_short` days (0: today is the birthday).
    pub async fn member_aged(&self, years: u32, days_short: u64) -> Member {
        let birth =
            self.clock_today().checked_sub_months(Months::new(12 * years)).unwrap() + chrono::Days::new(days_short);
        self.insured_member(birth).await
    }

    /// The three documents of binding `member` as `relationship`, uploaded by `binder` as
    /// theirs: a letter naming the member and the relationship, the binder's own register page,
    /// and the member's page (naming the member).
    pub async fn binding_documents(
        &self,
        binder: &Binder,
        member: &Member,
        relationship: Relationship,
    ) -> BindingDocuments {
        let identity = PersonIdentity { name: member.seed.name.clone(), id_number: member.seed.id_number.clone() };
        let upload = |kind: DocumentKind, bytes: Vec<u8>, subject: Option<PersonIdentity>, relationship| async move {
            self.upload_document_about(
                &self.keys.bank,
                Some(&binder.token),
                &binder.person_id,
                kind,
                &bytes,
                subject,
                relationship,
            )
            .await
            .expect("upload a binding document")
            .document_id
        };
        BindingDocuments {
            commitment_letter: upload(
                DocumentKind::CommitmentLetter,
                sample_pdf(),
                Some(identity.clone()),
                relationship,
            )
            .await,
            owner_register: upload(DocumentKind::HouseholdRegister, sample_jpeg(), None, Relationship::Unspecified)
                .await,
            member_register: upload(
                DocumentKind::HouseholdRegister,
                sample_pdf(),
                Some(identity.clone()),
                Relationship::Unspecified,
            )
            .await,
        }
    }

    /// AddFamilyMember as `binder` through the bank.
    pub async fn add_member(
        &self,
        binder: &Binder,
        member: &Member,
        relationship: Relationship,
        documents: &BindingDocuments,
    ) -> Result<AddFamilyMemberResponse, Status> {
        self.family(Some(&self.keys.bank))
            .add_family_member(add_request(binder, member, relationship, documents))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Binds `member` to `binder` as `relationship`, the household register confirming it (for
    /// a member under 16 the binding is ACTIVE at once: no face check); returns the binding.
    pub async fn bind_confirmed(&self, binder: &Binder, member: &Member, relationship: Relationship) -> FamilyBinding {
        self.confirm_household(binder, member, relationship);
        let documents = self.binding_documents(binder, member, relationship).await;
        self.add_member(binder, member, relationship, &documents).await.expect("bind").binding.expect("binding")
    }

    /// Writes in the development relationship authority's households file that `member` is
    /// `relationship` of `binder` (the household register confirms it).
    pub fn confirm_household(&self, binder: &Binder, member: &Member, relationship: Relationship) {
        use std::io::Write;
        let path = self.households_file();
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("households file");
        let name = relationship.as_str_name().trim_start_matches("RELATIONSHIP_");
        writeln!(file, "{} {} {name}", binder.seed.id_number, member.seed.id_number).expect("write household");
    }

    /// The development relationship authority's households file.
    pub fn households_file(&self) -> std::path::PathBuf {
        self.data_dir().join("households.txt")
    }

    /// The binding as an operator sees it.
    pub async fn binding(&self, binding_id: &str) -> FamilyBinding {
        self.family(Some(&self.keys.ops))
            .get_family_binding(GetFamilyBindingRequest { binding_id: binding_id.to_owned() })
            .await
            .expect("get binding")
            .into_inner()
            .binding
            .expect("binding")
    }

    /// A person's voucher as an operator sees it.
    pub async fn voucher_of(&self, person_id: &str) -> Voucher {
        self.vouchers(Some(&self.keys.ops))
            .get_voucher(GetVoucherRequest { person_id: person_id.to_owned() })
            .await
            .expect("get voucher")
            .into_inner()
            .voucher
            .expect("voucher")
    }

    /// Waits (at most 10 s) until the binding has `status`, as identity-svc's outbox delivers
    /// face outcomes asynchronously; panics otherwise.
    pub async fn wait_for_binding(&self, binding_id: &str, status: BindingStatus) -> FamilyBinding {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let binding = self.binding(binding_id).await;
            if binding.status == status as i32 {
                return binding;
            }
            assert!(tokio::time::Instant::now() < deadline, "binding stayed {:?}", binding.status);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The AddFamilyMember request of `binder` for `member`, with the binder's token.
pub fn add_request(
    binder: &Binder,
    member: &Member,
    relationship: Relationship,
    documents: &BindingDocuments,
) -> Request<AddFamilyMemberRequest> {
    with_person_token(
        AddFamilyMemberRequest {
            owner_person_id: binder.person_id.clone(),
            member_name: member.seed.name.clone(),
            member_id_number: member.seed.id_number.clone(),
            relationship: relationship as i32,
            commitment_letter_document_id: documents.commitment_letter.clone(),
            owner_household_register_document_id: documents.owner_register.clone(),
            member_household_register_document_id: documents.member_register.clone(),
            accepted_notice_version: CURRENT_NOTICE_VERSION.into(),
            owner_name: binder.seed.name.clone(),
            owner_id_number: binder.seed.id_number.clone(),
        },
        &binder.token,
    )
}
