//! DocumentService in the access table (issue 13 item 1; `domain::access`): the owner, a
//! guardian of a minor owner (an ACTIVE binder of a member under 16, who also applies for the
//! minor's card), and operators; everyone else learns nothing, the same for existing and missing
//! documents and owners. Each call that names a person is in that person's access history.

use medins_proto::insurance::v1::{
    BindingStatus, DocumentKind, GenerateCommitmentLetterRequest, GetDocumentRequest, Relationship,
};
use tonic::{Code, Request};

use crate::support::{
    Stack,
    documents::{sample_jpeg, sample_signature_png},
    family::Member,
    reason, with_person_token,
};

/// A caller: a partner key and maybe a person token.
struct Caller {
    name: &'static str,
    key: String,
    token: Option<String>,
}

fn request<T>(message: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(token) => with_person_token(message, token),
        None => Request::new(message),
    }
}

/// The outcome of a call: OK or (code, reason).
fn outcome<T>(result: Result<T, tonic::Status>) -> Result<(), (Code, String)> {
    result.map(|_| ()).map_err(|status| (status.code(), reason(&status)))
}

fn refused(code: Code, why: &str) -> Result<(), (Code, String)> {
    Err((code, why.to_owned()))
}

async fn audit_rows(stack: &Stack, person: &str, method: &'static str, outcome: &'static str) -> i64 {
    use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
    use medins_common::audit::schema::audit_log;
    let person = person.to_owned();
    stack
        .insurance_db
        .run(move |conn| {
            audit_log::table
                .filter(audit_log::person_id.eq(person))
                .filter(audit_log::method.eq(method))
                .filter(audit_log::outcome.eq(outcome))
                .count()
                .get_result::<i64>(conn)
                .map_err(medins_common::db::DbError::from)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn documents_answer_the_owner_a_guardian_of_a_minor_and_operators_and_nobody_else() {
    let stack = Stack::start().await;
    let bank = stack.keys.bank.clone();
    // A guardian: an ACTIVE binder of an 8-year-old.
    let guardian = stack.binder(0).await;
    let minor = stack.member_aged(8, 0).await;
    let documents = stack.binding_documents(&guardian, &minor, Relationship::Child).await;
    stack.add_member(&guardian, &minor, Relationship::Child, &documents).await.expect("bind the minor");
    // An adult owner with their own app, and an ACTIVE binder of that adult (no guardian).
    let adult = stack.front_door_person(&bank).await;
    let account = stack.open_account_for(&adult.person_id).await;
    let adult_member =
        Member { person_id: adult.person_id.clone(), account_id: account.account_id, seed: adult.seed.clone() };
    let adult_binder = stack.binder(0).await;
    let documents = stack.binding_documents(&adult_binder, &adult_member, Relationship::Sibling).await;
    let added = stack.add_member(&adult_binder, &adult_member, Relationship::Sibling, &documents).await.unwrap();
    let session_id = added.face_check.expect("an adult passes a face check").session_id;
    stack
        .faces(Some(&stack.keys.face_provider))
        .submit_face_result(medins_proto::identity::v1::SubmitFaceResultRequest {
            session_id,
            liveness_passed: true,
            similarity: 0.95,
            provider_reference: format!("prov-{}", uuid::Uuid::new_v4()),
        })
        .await
        .expect("face passes");
    stack.wait_for_binding(&added.binding.unwrap().binding_id, BindingStatus::Active).await;
    let stranger = stack.front_door_person(&bank).await;

    // The guardian uploads the minor's ID card (the online card application for a minor needs
    // it); the adult uploads their own.
    let minors = stack
        .upload_document(&bank, Some(&guardian.token), &minor.person_id, DocumentKind::IdCardFront, &sample_jpeg())
        .await
        .expect("a guardian uploads the minor's document");
    assert_eq!(minors.owner_person_id, minor.person_id);
    let adults = stack
        .upload_document(&bank, Some(&adult.token), &adult.person_id, DocumentKind::Photo, &sample_jpeg())
        .await
        .expect("the owner uploads");
    let rows = stack.count_insurance_rows("documents").await;

    let callers = [
        Caller { name: "guardian", key: bank.clone(), token: Some(guardian.token.clone()) },
        Caller { name: "adult owner", key: bank.clone(), token: Some(adult.token.clone()) },
        Caller { name: "binder of the adult", key: bank.clone(), token: Some(adult_binder.token.clone()) },
        Caller { name: "another person", key: bank.clone(), token: Some(stranger.token.clone()) },
        Caller { name: "mini program, no token", key: stack.keys.mini_program.clone(), token: None },
        Caller { name: "hospital", key: stack.keys.hospital.clone(), token: None },
        Caller { name: "pharmacy", key: stack.keys.pharmacy.clone(), token: None },
        Caller { name: "employer", key: stack.keys.employer.clone(), token: None },
        Caller { name: "ops", key: stack.keys.ops.clone(), token: None },
    ];
    let ok = Ok(());
    let not_found = refused(Code::NotFound, "DOCUMENT_NOT_FOUND");
    let token_required = refused(Code::Unauthenticated, "PERSON_TOKEN_REQUIRED");
    let scope = refused(Code::PermissionDenied, "PERMISSION_DENIED_SCOPE");
    let not_theirs = refused(Code::PermissionDenied, "PERSON_TOKEN_INVALID");
    // Reads: the minor's document, the adult's, and a missing one.
    let reads = |name: &str| match name {
        "guardian" => [ok.clone(), not_found.clone(), not_found.clone()],
        "adult owner" => [not_found.clone(), ok.clone(), not_found.clone()],
        "binder of the adult" | "another person" => [not_found.clone(), not_found.clone(), not_found.clone()],
        "mini program, no token" => [token_required.clone(), token_required.clone(), token_required.clone()],
        "ops" => [ok.clone(), ok.clone(), not_found.clone()],
        _ => [scope.clone(), scope.clone(), scope.clone()],
    };
    // Uploads: for the minor, for the adult, for a person that does not exist.
    let uploads = |name: &str| match name {
        "guardian" => [ok.clone(), not_theirs.clone(), not_theirs.clone()],
        "adult owner" => [not_theirs.clone(), ok.clone(), not_theirs.clone()],
        "binder of the adult" | "another person" => [not_theirs.clone(), not_theirs.clone(), not_theirs.clone()],
        "mini program, no token" => [token_required.clone(), token_required.clone(), token_required.clone()],
        "ops" => [ok.clone(), ok.clone(), refused(Code::NotFound, "PERSON_NOT_FOUND")],
        _ => [scope.clone(), scope.clone(), scope.clone()],
    };
    let missing_document = uuid::Uuid::now_v7().to_string();
    let missing_person = uuid::Uuid::now_v7().to_string();
    let mut stored = 0;
    for caller in &callers {
        let token = caller.token.as_deref();
        let expected = reads(caller.name);
        for ((document_id, which), expected) in
            [(&minors.document_id, "minor's"), (&adults.document_id, "adult's"), (&missing_document, "missing")]
                .into_iter()
                .zip(expected)
        {
            let got = outcome(
                stack
                    .documents(Some(&caller.key))
                    .get_document(request(GetDocumentRequest { document_id: document_id.clone() }, token))
                    .await,
            );
            assert_eq!(got, expected, "{} GetDocument {which}", caller.name);
            let got = outcome(stack.download_document(&caller.key, token, document_id).await);
            assert_eq!(got, expected, "{} DownloadDocument {which}", caller.name);
        }
        let expected = uploads(caller.name);
        for ((owner, which), expected) in
            [(&minor.person_id, "minor"), (&adult.person_id, "adult"), (&missing_person, "missing")]
                .into_iter()
                .zip(expected)
        {
            let got = outcome(
                stack
                    .upload_document(&caller.key, token, owner, DocumentKind::Signature, &sample_signature_png())
                    .await,
            );
            stored += i64::from(got.is_ok());
            assert_eq!(got, expected, "{} UploadDocument for the {which}", caller.name);
        }
    }
    assert_eq!(stack.count_insurance_rows("documents").await, rows + stored, "refused uploads store nothing");
    assert_eq!(stored, 4, "the guardian's, the owner's, and two by operators");

    // The letter is the owner's own commitment: a guardian does not sign it for the minor.
    let signature = stack
        .upload_document(
            &bank,
            Some(&guardian.token),
            &minor.person_id,
            DocumentKind::Signature,
            &sample_signature_png(),
        )
        .await
        .unwrap();
    let status = stack
        .documents(Some(&bank))
        .generate_commitment_letter(with_person_token(
            GenerateCommitmentLetterRequest {
                owner_person_id: minor.person_id.clone(),
                member_name: adult.seed.name.clone(),
                member_id_number: adult.seed.id_number.clone(),
                relationship: Relationship::Sibling as i32,
                signature_document_id: signature.document_id,
            },
            &guardian.token,
        ))
        .await
        .unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "PERSON_TOKEN_INVALID"));

    // The minor's access history holds the guardian's reads and uploads and the refusals.
    let upload = "/medins.insurance.v1.DocumentService/UploadDocument";
    let get = "/medins.insurance.v1.DocumentService/GetDocument";
    assert!(audit_rows(&stack, &minor.person_id, upload, "OK").await >= 3, "guardian and operator uploads");
    assert_eq!(audit_rows(&stack, &minor.person_id, get, "OK").await, 2, "the guardian's and the operator's reads");
    assert_eq!(audit_rows(&stack, &minor.person_id, get, "NOT_FOUND").await, 3, "three callers were refused");
    assert_eq!(audit_rows(&stack, &missing_person, upload, "PERMISSION_DENIED").await, 0, "never for nobody");
    assert_eq!(audit_rows(&stack, &missing_person, upload, "NOT_FOUND").await, 0, "nor an operator's miss");
    // The adult's history holds the refusals of those who tried (and the owner's own calls).
    assert_eq!(audit_rows(&stack, &adult.person_id, upload, "PERMISSION_DENIED").await, 3, "three refused uploads");
    stack.shutdown().await;
}
