//! Views that cannot be unmasked: everything partners receive about a person from the views of
//! both services, taken together, leaves at least 10,000 candidate ID numbers (and phones), hides
//! every character of a name but the last, and never carries a birth date.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use identity_svc::domain::{
    disclosure::{MIN_CANDIDATES, PartnerReading, consistent_id_numbers},
    id_number::Sex,
};
use medins_common::clock::china_standard_time;
use medins_proto::{
    identity::v1::{self as ipb, GetPersonRequest},
    insurance::v1::{
        GetAccountRequest, GetFamilyBindingRequest, IssueCodeRequest, ListFamilyMembersRequest, Relationship,
        VerifyCodeRequest, get_account_request,
    },
};
use prost::Message;

use crate::support::{SeedPerson, Stack, privacy, with_person_token};

/// Everything partners were told about one person, field by field, and every response as bytes.
#[derive(Default)]
struct Seen {
    masked_id_numbers: Vec<String>,
    regions: Vec<String>,
    sexes: Vec<Sex>,
    ages: Vec<i32>,
    masked_names: Vec<String>,
    masked_phones: Vec<String>,
    /// China dates of every timestamp seen about the person.
    dates: Vec<NaiveDate>,
    /// Every response that said something about the person, encoded, with its debug text.
    responses: Vec<(Vec<u8>, String)>,
}

fn china_date(timestamp: &Option<prost_types::Timestamp>) -> Option<NaiveDate> {
    let t = timestamp.as_ref()?;
    let at = DateTime::<Utc>::from_timestamp(t.seconds, 0)?;
    Some(at.with_timezone(&china_standard_time()).date_naive())
}

impl Seen {
    fn response<M: Message + std::fmt::Debug>(&mut self, message: &M) {
        self.responses.push((message.encode_to_vec(), format!("{message:?}")));
    }

    fn person_view(&mut self, view: &ipb::PersonView) {
        self.masked_id_numbers.push(view.masked_id_number.clone());
        self.regions.push(view.region_code.clone());
        self.sexes.push(if view.sex == ipb::Sex::Male as i32 { Sex::Male } else { Sex::Female });
        self.ages.push(view.age);
        self.masked_names.push(view.masked_name.clone());
        if !view.masked_phone.is_empty() {
            self.masked_phones.push(view.masked_phone.clone());
        }
        self.dates.extend(china_date(&view.created_at));
        self.dates.extend(china_date(&view.real_name_verified_at));
    }

    /// What all of it leaves of the ID number, checked against the truth.
    fn assert_cannot_be_unmasked(&self, seed: &SeedPerson, today: NaiveDate) {
        let one = |values: &[String], what: &str| {
            assert!(!values.is_empty(), "no {what} seen");
            assert!(values.iter().all(|v| v == &values[0]), "one {what} everywhere: {values:?}");
            values[0].clone()
        };
        let masked = one(&self.masked_id_numbers, "masked ID number");
        let region = one(&self.regions, "region");
        assert!(self.sexes.iter().all(|s| *s == self.sexes[0]), "one sex everywhere");
        assert!(self.ages.iter().all(|a| *a == self.ages[0]), "one age everywhere: {:?}", self.ages);
        let registered_on = *self.dates.iter().min().expect("a timestamp seen");
        let candidates = consistent_id_numbers(&PartnerReading {
            masked_id_number: &masked,
            region_code: &region,
            sex: self.sexes[0],
            age: u32::try_from(self.ages[0]).unwrap(),
            read_on: today,
            registered_on,
        });
        assert!(candidates.len() >= MIN_CANDIDATES, "{} ID numbers left", candidates.len());
        assert!(candidates.contains(&seed.id_number), "the true number is among them");

        // Names: every character but the last hidden, wherever the name is shown.
        let name: Vec<char> = seed.name.chars().collect();
        assert!(!self.masked_names.is_empty());
        for masked_name in &self.masked_names {
            let shown: Vec<char> = masked_name.chars().collect();
            assert_eq!(shown.len(), name.len());
            assert!(shown[..shown.len() - 1].iter().all(|c| *c == '*'), "only the last character shows");
            assert_eq!(shown.last(), name.last());
        }
        // Phones: four digits hidden (10,000 candidates), and always the same four.
        for masked_phone in &self.masked_phones {
            assert_eq!(masked_phone, &format!("{}****{}", &seed.phone[..3], &seed.phone[7..]));
        }

        // No birth date in any form: no `Date` message, no digits, no field name.
        let birth = NaiveDate::parse_from_str(&seed.id_number[6..14], "%Y%m%d").unwrap();
        let as_message =
            ipb::Date { year: birth.year(), month: birth.month() as i32, day: birth.day() as i32 }.encode_to_vec();
        let as_text = [birth.format("%Y%m%d").to_string(), birth.format("%Y-%m-%d").to_string()];
        for (bytes, debug) in &self.responses {
            assert!(!bytes.windows(as_message.len()).any(|w| w == as_message.as_slice()), "a Date in {debug}");
            for text in &as_text {
                assert!(!bytes.windows(text.len()).any(|w| w == text.as_bytes()), "the birth date in {debug}");
            }
            assert!(!debug.contains("birth"), "a birth field in {debug}");
        }
    }
}

#[tokio::test]
async fn everything_partners_read_about_a_binder_and_a_member_leaves_at_least_10000_id_numbers() {
    let stack = Stack::start().await;
    let today = stack.clock_today();
    let binder = stack.binder(0).await;
    // Born on a leap day, the binder's parent.
    let member = stack.insured_member(NaiveDate::from_ymd_opt(1956, 2, 29).unwrap()).await;
    let (mut about_binder, mut about_member) = (Seen::default(), Seen::default());

    // identity-svc: the person views, as an operator and as the binder's own bank reads them.
    for (person_id, seen) in [(&binder.person_id, &mut about_binder), (&member.person_id, &mut about_member)] {
        let response = stack
            .persons(Some(&stack.keys.ops))
            .get_person(GetPersonRequest { person_id: person_id.clone() })
            .await
            .expect("get person")
            .into_inner();
        seen.person_view(response.person.as_ref().unwrap());
        seen.response(&response);
    }
    let response = stack
        .persons(Some(&stack.keys.bank))
        .get_person(with_person_token(GetPersonRequest { person_id: binder.person_id.clone() }, &binder.token))
        .await
        .expect("the bank reads its own customer")
        .into_inner();
    about_binder.person_view(response.person.as_ref().unwrap());
    about_binder.response(&response);

    // insurance-svc: accounts.
    for (account_id, seen) in [(&binder.account_id, &mut about_binder), (&member.account_id, &mut about_member)] {
        let response = stack
            .accounts(Some(&stack.keys.ops))
            .get_account(GetAccountRequest { key: Some(get_account_request::Key::AccountId(account_id.clone())) })
            .await
            .expect("get account")
            .into_inner();
        seen.dates.extend(china_date(&response.account.as_ref().unwrap().opened_at));
        seen.response(&response);
    }

    // insurance-svc: the family binding, as added, read and listed.
    let documents = stack.binding_documents(&binder, &member, Relationship::Parent).await;
    let added = stack.add_member(&binder, &member, Relationship::Parent, &documents).await.expect("add the parent");
    let mut bindings = vec![added.binding.clone().unwrap()];
    about_binder.response(&added);
    about_member.response(&added);
    let read = stack
        .family(Some(&stack.keys.ops))
        .get_family_binding(GetFamilyBindingRequest { binding_id: bindings[0].binding_id.clone() })
        .await
        .expect("get binding")
        .into_inner();
    about_member.response(&read);
    bindings.push(read.binding.unwrap());
    let listed = stack
        .family(Some(&stack.keys.bank))
        .list_family_members(with_person_token(
            ListFamilyMembersRequest { owner_person_id: binder.person_id.clone(), include_ended: true },
            &binder.token,
        ))
        .await
        .expect("list members")
        .into_inner();
    about_member.response(&listed);
    bindings.extend(listed.bindings);
    for binding in &bindings {
        about_member.masked_names.push(binding.member_masked_name.clone());
        about_member.ages.push(binding.member_age);
        about_member.dates.extend(china_date(&binding.created_at));
        about_binder.masked_names.push(binding.owner_masked_name.clone());
        about_binder.dates.extend(china_date(&binding.created_at));
    }

    // insurance-svc: the holder a hospital sees when it verifies the binder's code.
    let issued = stack
        .codes(Some(&stack.keys.bank))
        .issue_code(with_person_token(
            IssueCodeRequest { holder_person_id: binder.person_id.clone(), include_png: false },
            &binder.token,
        ))
        .await
        .expect("issue a code")
        .into_inner();
    privacy::sensitive_token(&issued.code);
    let verified = stack
        .codes(Some(&stack.keys.hospital))
        .verify_code(VerifyCodeRequest { code: issued.code })
        .await
        .expect("verify the code")
        .into_inner();
    let holder = verified.holder.clone().unwrap();
    about_binder.masked_names.push(holder.masked_name.clone());
    about_binder.sexes.push(if holder.sex == "MALE" { Sex::Male } else { Sex::Female });
    about_binder.ages.push(holder.age);
    about_binder.response(&verified);

    about_binder.assert_cannot_be_unmasked(&binder.seed, today);
    about_member.assert_cannot_be_unmasked(&member.seed, today);
    // The age is the calendar-year age, the same in both services.
    assert_eq!(about_member.ages[0], today.year() - 1956);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_newborn_registered_days_after_birth_still_leaves_at_least_10000_id_numbers() {
    let stack = Stack::start().await;
    // Early January (China time) of next year, a child born on 3 January and registered now:
    // with the true birth year beside the registration date only 7 days would be left.
    let next_year = stack.clock_today().year() + 1;
    stack.clock.set(NaiveDate::from_ymd_opt(next_year, 1, 10).unwrap().and_hms_opt(4, 0, 0).unwrap().and_utc());
    let today = stack.clock_today();
    let child = stack.insured_member(NaiveDate::from_ymd_opt(next_year, 1, 3).unwrap()).await;
    let mut seen = Seen::default();
    let response = stack
        .persons(Some(&stack.keys.ops))
        .get_person(GetPersonRequest { person_id: child.person_id.clone() })
        .await
        .expect("get person")
        .into_inner();
    seen.person_view(response.person.as_ref().unwrap());
    seen.response(&response);
    let account = stack
        .accounts(Some(&stack.keys.ops))
        .get_account(GetAccountRequest { key: Some(get_account_request::Key::AccountId(child.account_id.clone())) })
        .await
        .expect("get account")
        .into_inner();
    seen.dates.extend(china_date(&account.account.as_ref().unwrap().opened_at));
    seen.response(&account);
    assert_eq!(seen.dates.iter().min(), Some(&today), "registered today, seven days after birth");
    seen.assert_cannot_be_unmasked(&child.seed, today);
    assert_eq!(seen.ages[0], 1, "counted from the year before the birth year");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_partner_cannot_read_birth_dates_meant_for_medins_services() {
    use medins_proto::identity::v1::GetPersonFactsRequest;
    let stack = Stack::start().await;
    let person = stack.binder(0).await;
    for key in [&stack.keys.bank, &stack.keys.ops, &stack.keys.hospital, &stack.keys.mini_program] {
        let status = stack
            .person_facts(Some(key))
            .get_person_facts(GetPersonFactsRequest { person_id: person.person_id.clone() })
            .await
            .expect_err("not a medins service");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(crate::support::reason(&status), "PERMISSION_DENIED_SCOPE");
    }
    let facts = stack
        .person_facts(Some(&stack.keys.service))
        .get_person_facts(GetPersonFactsRequest { person_id: person.person_id.clone() })
        .await;
    // insurance-svc's own key at identity-svc may (it opened the person's account with it).
    let facts = facts.expect("a medins service reads the birth date").into_inner();
    let birth = facts.birth_date.unwrap();
    assert_eq!(format!("{:04}{:02}{:02}", birth.year, birth.month, birth.day), person.seed.id_number[6..14].to_owned());
    stack.shutdown().await;
}
