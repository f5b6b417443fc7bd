//! Names as people write them: one rule in both services (NFC, trimmed, 1-64 characters, no
//! invisible or private-use characters), refused with INVALID_NAME and nothing created.

use medins_proto::{
    identity::v1::RegisterPersonRequest,
    insurance::v1::{
        DocumentKind, GenerateCommitmentLetterRequest, OpenAccountRequest, PersonIdentity, Relationship, Scheme,
        open_account_request,
    },
};
use tonic::{Code, Status};

use crate::support::{
    SeedPerson, Stack, bad_fields,
    documents::sample_signature_png,
    family::{Member, add_request},
    reason, with_person_token,
};

/// Zero width space, right-to-left override, private use: each hides or reorders what is shown.
const INVISIBLE: [char; 3] = ['\u{200B}', '\u{202E}', '\u{E000}'];

/// `name` with `c` after its first character.
fn with_inside(name: &str, c: char) -> String {
    let mut chars = name.chars();
    let first = chars.next().unwrap();
    format!("{first}{c}{}", chars.as_str())
}

fn assert_invalid_name(result: Result<impl std::fmt::Debug, Status>, field: &str, case: &str) {
    let status = result.expect_err(case);
    assert_eq!((status.code(), reason(&status).as_str()), (Code::InvalidArgument, "INVALID_NAME"), "{case}");
    assert_eq!(bad_fields(&status), vec![field.to_owned()], "{case}");
}

/// Persons, accounts, bindings and documents.
async fn counts(stack: &Stack) -> (i64, i64, i64, i64) {
    (
        stack.count_identity_rows("persons").await,
        stack.count_insurance_rows("accounts").await,
        stack.count_insurance_rows("family_bindings").await,
        stack.count_insurance_rows("documents").await,
    )
}

#[tokio::test]
async fn invisible_characters_in_a_name_are_refused_everywhere_and_nothing_is_created() {
    let stack = Stack::start().await;
    let binder = stack.binder(0).await;
    let sibling = stack.member_aged(30, 0).await;
    let documents = stack.binding_documents(&binder, &sibling, Relationship::Sibling).await;
    let signature = stack
        .upload_document(
            &stack.keys.bank,
            Some(&binder.token),
            &binder.person_id,
            DocumentKind::Signature,
            &sample_signature_png(),
        )
        .await
        .expect("signature upload")
        .document_id;
    let before = counts(&stack).await;

    for c in INVISIBLE {
        let case = format!("U+{:04X}", u32::from(c));
        let seed = SeedPerson::adult();
        let name = with_inside(&seed.name, c);

        let registered = stack
            .persons(Some(&stack.keys.bank))
            .register_person(RegisterPersonRequest {
                name: name.clone(),
                id_number: seed.id_number.clone(),
                phone: seed.phone.clone(),
            })
            .await;
        assert_invalid_name(registered, "name", &format!("RegisterPerson {case}"));

        let opened = stack
            .accounts(Some(&stack.keys.bank))
            .open_account(OpenAccountRequest {
                person: Some(open_account_request::Person::Identity(PersonIdentity {
                    name: name.clone(),
                    id_number: seed.id_number.clone(),
                })),
                scheme: Scheme::Resident as i32,
                region_code: "110105".into(),
                employer_code: String::new(),
            })
            .await;
        assert_invalid_name(opened, "identity.name", &format!("OpenAccount {case}"));

        let member = Member { person_id: String::new(), account_id: String::new(), seed: seed.clone() };
        let mut request = add_request(&binder, &member, Relationship::Sibling, &documents);
        request.get_mut().member_name = name.clone();
        let added = stack.family(Some(&stack.keys.bank)).add_family_member(request).await;
        assert_invalid_name(added, "member_name", &format!("AddFamilyMember {case}"));

        let letter = stack
            .documents(Some(&stack.keys.bank))
            .generate_commitment_letter(with_person_token(
                GenerateCommitmentLetterRequest {
                    owner_person_id: binder.person_id.clone(),
                    member_name: name.clone(),
                    member_id_number: seed.id_number.clone(),
                    relationship: Relationship::Sibling as i32,
                    signature_document_id: signature.clone(),
                },
                &binder.token,
            ))
            .await;
        assert_invalid_name(letter, "member_name", &format!("GenerateCommitmentLetter {case}"));
    }
    assert_eq!(counts(&stack).await, before, "no person, account, binding or letter was created");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_name_written_decomposed_registers_as_the_composed_person() {
    let stack = Stack::start().await;
    let seed = SeedPerson::adult();
    // The same name twice: `é` as one character (NFC) and as `e` + combining acute (NFD).
    let composed = format!("{}\u{e9}", seed.name);
    let decomposed = format!("{}e\u{301}", seed.name);
    crate::support::privacy::sensitive(&composed);
    crate::support::privacy::sensitive(&decomposed);
    let register = |name: String| {
        let mut persons = stack.persons(Some(&stack.keys.bank));
        let request = RegisterPersonRequest { name, id_number: seed.id_number.clone(), phone: seed.phone.clone() };
        async move { persons.register_person(request).await.map(tonic::Response::into_inner) }
    };
    let before = stack.count_identity_rows("persons").await;
    let first = register(decomposed.clone()).await.expect("the decomposed name registers");
    assert!(first.created);
    let again = register(composed.clone()).await.expect("the composed name is the same name");
    assert!(!again.created, "the same person, not a name mismatch");
    assert_eq!(again.person.as_ref().unwrap().person_id, first.person.as_ref().unwrap().person_id);
    assert_eq!(stack.count_identity_rows("persons").await, before + 1);
    // The stored name is the composed one: its last character shows as one `é`.
    assert_eq!(first.person.unwrap().masked_name.chars().last(), Some('\u{e9}'));
    // And an account opened by the decomposed spelling is for that person too.
    let account = stack
        .accounts(Some(&stack.keys.bank))
        .open_account(OpenAccountRequest {
            person: Some(open_account_request::Person::Identity(PersonIdentity {
                name: decomposed,
                id_number: seed.id_number.clone(),
            })),
            scheme: Scheme::Resident as i32,
            region_code: "110105".into(),
            employer_code: String::new(),
        })
        .await
        .expect("open by the decomposed name")
        .into_inner()
        .account
        .unwrap();
    assert_eq!(account.person_id, again.person.unwrap().person_id);
    stack.shutdown().await;
}
