//! FamilyService's rows of the access table (issue 13 item 1), walked as a table: every RPC x
//! caller, for an existing and a missing object, with code, reason and the state afterwards.
//! A caller with no relationship gets the same answer for both.

use medins_proto::insurance::v1::{
    AddFamilyMemberRequest, GetFamilyBindingRequest, ListFamilyBindingReviewsRequest, ListFamilyMembersRequest,
    ListWhoBoundMeRequest, Relationship, RemoveFamilyMemberRequest, ReviewDecision, ReviewFamilyBindingRequest,
    SetFamilyAidRequest, StartCounterOwnerCheckRequest,
};
use tonic::{Code, Request, Status};

use crate::support::{Stack, family::add_request, reason, with_person_token};

/// Who calls: a partner key and, maybe, a person token.
#[derive(Clone)]
struct Caller {
    name: &'static str,
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

type Outcome = (Code, String);

fn outcome<T>(result: Result<T, Status>) -> Outcome {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), reason(&status)),
    }
}

fn ok() -> Outcome {
    (Code::Ok, String::new())
}

fn refused(code: Code, why: &str) -> Outcome {
    (code, why.to_owned())
}

#[tokio::test]
async fn family_service_answers_by_relationship_and_a_stranger_learns_nothing() {
    let stack = Stack::start().await;
    let owner = stack.binder(0).await;
    let child = stack.member_aged(8, 0).await;
    stack.confirm_household(&owner, &child, Relationship::Child);
    let documents = stack.binding_documents(&owner, &child, Relationship::Child).await;
    let binding = stack.add_member(&owner, &child, Relationship::Child, &documents).await.unwrap().binding.unwrap();
    // Another ACTIVE binder of the same child: a binder of the member, not of this binding.
    let grandparent = stack.binder(0).await;
    stack.bind_confirmed(&grandparent, &child, Relationship::Grandchild).await;
    let stranger = stack.binder(0).await;
    let missing = uuid::Uuid::now_v7().to_string();

    let person = |name, token: &str| Caller { name, key: stack.keys.bank.clone(), token: Some(token.to_owned()) };
    let partner = |name, key: &str| Caller { name, key: key.to_owned(), token: None };
    let owner_c = person("owner", &owner.token);
    let binder_c = person("binder of the member", &grandparent.token);
    let stranger_c = person("stranger", &stranger.token);
    let bank = partner("bank without token", &stack.keys.bank);
    let mini = partner("mini program without token", &stack.keys.mini_program);
    let hospital = partner("hospital", &stack.keys.hospital);
    let pharmacy = partner("pharmacy", &stack.keys.pharmacy);
    let employer = partner("employer", &stack.keys.employer);
    let ops = partner("ops", &stack.keys.ops);

    let not_found = refused(Code::NotFound, "BINDING_NOT_FOUND");
    let token_required = refused(Code::Unauthenticated, "PERSON_TOKEN_REQUIRED");
    let token_invalid = refused(Code::PermissionDenied, "PERSON_TOKEN_INVALID");
    let scope = refused(Code::PermissionDenied, "PERMISSION_DENIED_SCOPE");

    // Calls on a binding: (caller, answer for the existing binding, answer for a missing id).
    let on_binding = [
        (&owner_c, ok(), not_found.clone()),
        (&binder_c, not_found.clone(), not_found.clone()),
        (&stranger_c, not_found.clone(), not_found.clone()),
        (&bank, token_required.clone(), token_required.clone()),
        (&mini, token_required.clone(), token_required.clone()),
        (&hospital, scope.clone(), scope.clone()),
        (&pharmacy, scope.clone(), scope.clone()),
        (&employer, scope.clone(), scope.clone()),
        (&ops, ok(), not_found.clone()),
    ];
    let audit_before = stack.count_insurance_rows("audit_log").await;
    for (caller, existing, absent) in &on_binding {
        for (id, expected) in [(&binding.binding_id, existing), (&missing, absent)] {
            let got = outcome(
                stack
                    .family(Some(&caller.key))
                    .get_family_binding(caller.request(GetFamilyBindingRequest { binding_id: id.clone() }))
                    .await,
            );
            assert_eq!(
                &got,
                expected,
                "GetFamilyBinding by {} of {}",
                caller.name,
                if id == &missing { "missing" } else { "existing" }
            );
        }
        // Mutations by anyone but the owner and an operator: the refusal, nothing changed.
        if caller.name != "owner" && caller.name != "ops" {
            for id in [&binding.binding_id, &missing] {
                let expected = if id == &missing { absent } else { existing };
                let aid = outcome(
                    stack
                        .family(Some(&caller.key))
                        .set_family_aid(caller.request(SetFamilyAidRequest { binding_id: id.clone(), enabled: true }))
                        .await,
                );
                assert_eq!(&aid, expected, "SetFamilyAid by {}", caller.name);
                let remove = outcome(
                    stack
                        .family(Some(&caller.key))
                        .remove_family_member(caller.request(RemoveFamilyMemberRequest { binding_id: id.clone() }))
                        .await,
                );
                assert_eq!(&remove, expected, "RemoveFamilyMember by {}", caller.name);
            }
        }
        // Reviews are for operators only.
        let review = outcome(
            stack
                .family(Some(&caller.key))
                .review_family_binding(caller.request(ReviewFamilyBindingRequest {
                    binding_id: binding.binding_id.clone(),
                    decision: ReviewDecision::Approve as i32,
                    rejection_reason: String::new(),
                }))
                .await,
        );
        let expected_review = if caller.name == "ops" {
            refused(Code::FailedPrecondition, "BINDING_NOT_IN_REVIEW")
        } else {
            scope.clone()
        };
        assert_eq!(review, expected_review, "ReviewFamilyBinding by {}", caller.name);
        let queue = outcome(
            stack
                .family(Some(&caller.key))
                .list_family_binding_reviews(caller.request(ListFamilyBindingReviewsRequest::default()))
                .await,
        );
        assert_eq!(queue, if caller.name == "ops" { ok() } else { scope.clone() }, "reviews by {}", caller.name);
    }
    let after = stack.binding(&binding.binding_id).await;
    assert_eq!((after.status, after.family_aid), (binding.status, false), "no refused call changed the binding");
    assert!(stack.count_insurance_rows("audit_log").await > audit_before, "reads are recorded");

    // Calls naming a person: the owner's own list, the member's own list, binding for an owner.
    let random_person = uuid::Uuid::now_v7().to_string();
    for caller in [&owner_c, &binder_c, &stranger_c, &bank, &hospital, &pharmacy, &employer, &ops] {
        for (person_id, existing) in [(&owner.person_id, true), (&random_person, false)] {
            let expected = match caller.name {
                "owner" if existing => ok(),
                "ops" => ok(),
                "owner" | "binder of the member" | "stranger" => token_invalid.clone(),
                "bank without token" => token_required.clone(),
                _ => scope.clone(),
            };
            let list =
                outcome(
                    stack
                        .family(Some(&caller.key))
                        .list_family_members(caller.request(ListFamilyMembersRequest {
                            owner_person_id: person_id.clone(),
                            include_ended: true,
                        }))
                        .await,
                );
            assert_eq!(list, expected, "ListFamilyMembers by {} (existing {existing})", caller.name);
        }
        for person_id in [&child.person_id, &random_person] {
            let expected = match caller.name {
                "ops" => ok(),
                "owner" | "binder of the member" | "stranger" => token_invalid.clone(),
                "bank without token" => token_required.clone(),
                _ => scope.clone(),
            };
            let list = outcome(
                stack
                    .family(Some(&caller.key))
                    .list_who_bound_me(caller.request(ListWhoBoundMeRequest { member_person_id: person_id.clone() }))
                    .await,
            );
            assert_eq!(list, expected, "ListWhoBoundMe by {}", caller.name);
        }
    }
    // Binding for someone else: refused before the member is looked up, for real and made-up owners.
    let rows = stack.count_insurance_rows("family_bindings").await;
    let other_child = stack.member_aged(5, 0).await;
    for owner_id in [&owner.person_id, &random_person] {
        let mut message: AddFamilyMemberRequest =
            add_request(&owner, &other_child, Relationship::Child, &documents).into_inner();
        message.owner_person_id = owner_id.clone();
        let got =
            outcome(stack.family(Some(&stack.keys.bank)).add_family_member(stranger_c.request(message.clone())).await);
        assert_eq!(got, token_invalid, "AddFamilyMember by a stranger");
        let got = outcome(stack.family(Some(&stack.keys.bank)).add_family_member(Request::new(message.clone())).await);
        assert_eq!(got, token_required);
        let got = outcome(stack.family(Some(&stack.keys.hospital)).add_family_member(Request::new(message)).await);
        assert_eq!(got, scope);
    }
    assert_eq!(stack.count_insurance_rows("family_bindings").await, rows, "nothing bound");
    // Counter calls: only counters (and operators); an unknown card names no one.
    let counter = |key: &str| {
        let key = key.to_owned();
        let stack = &stack;
        async move {
            outcome(
                stack
                    .family(Some(&key))
                    .start_counter_owner_check(StartCounterOwnerCheckRequest {
                        owner_card_number: "8611000000000000".into(),
                    })
                    .await,
            )
        }
    };
    assert_eq!(counter(&stack.keys.bank).await, scope);
    assert_eq!(counter(&stack.keys.pharmacy).await, scope);
    assert_eq!(counter(&stack.keys.hospital).await, refused(Code::PermissionDenied, "OWNER_NOT_PRESENT"));
    stack.shutdown().await;
}
