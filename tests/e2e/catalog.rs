//! The catalogue (CatalogService): any partner looks items up and searches them, as they apply
//! in a region (its own book, its prefecture's, its province's, then the national one); bad
//! requests are INVALID_ARGUMENT naming the field; a call without a key is refused.

use medins_proto::insurance::v1::{
    CatalogItemKind, CoverageClass, LookupCatalogItemRequest, SearchCatalogRequest,
    catalog_service_client::CatalogServiceClient, search_catalog_request::Query,
};
use tonic::Code;

use crate::support::{Intercepted, Stack, bad_fields, interceptor, reason};

fn catalog(stack: &Stack, key: Option<&str>) -> CatalogServiceClient<Intercepted> {
    CatalogServiceClient::with_interceptor(stack.insurance_channel(), interceptor(key))
}

fn lookup(region_code: &str, code: &str) -> LookupCatalogItemRequest {
    LookupCatalogItemRequest { region_code: region_code.to_owned(), code: code.to_owned() }
}

fn by_code(region_code: &str, prefix: &str, page_size: i32, page_token: &str) -> SearchCatalogRequest {
    SearchCatalogRequest {
        region_code: region_code.to_owned(),
        query: Some(Query::CodePrefix(prefix.to_owned())),
        page_size,
        page_token: page_token.to_owned(),
    }
}

#[tokio::test]
async fn every_partner_kind_looks_items_up_as_they_apply_in_a_region() {
    let stack = Stack::start().await;
    let keys = stack.keys.clone();
    for key in [&keys.hospital, &keys.pharmacy, &keys.bank, &keys.mini_program, &keys.employer, &keys.ops] {
        let item = catalog(&stack, Some(key))
            .lookup_catalog_item(lookup("", "XB05AAR040B002010101"))
            .await
            .expect("lookup")
            .into_inner()
            .item
            .expect("an item");
        assert_eq!(item.name, "人血白蛋白注射液");
        assert_eq!(item.kind, CatalogItemKind::Drug as i32);
        assert_eq!(item.coverage_class, CoverageClass::B as i32);
        assert_eq!((item.price_cap_cents, item.catalog_version.as_str()), (Some(45000), "NATIONAL-2026-12"));
        assert_eq!(item.source_region_code, "");
    }

    let mut client = catalog(&stack, Some(&keys.hospital));
    // A Shanghai district gets its province's price cap; Beijing the national one.
    let shanghai = client.lookup_catalog_item(lookup("310115", "110200001")).await.unwrap().into_inner().item.unwrap();
    assert_eq!((shanghai.price_cap_cents, shanghai.source_region_code.as_str()), (Some(1400), "310000"));
    assert_eq!(shanghai.catalog_version, "310000-2026-12");
    let beijing = client.lookup_catalog_item(lookup("110105", "110200001")).await.unwrap().into_inner().item.unwrap();
    assert_eq!((beijing.price_cap_cents, beijing.source_region_code.as_str()), (Some(1000), ""));
    let self_funded = client.lookup_catalog_item(lookup("", "XA11HAX001A001010101")).await.unwrap().into_inner();
    let self_funded = self_funded.item.unwrap();
    assert_eq!((self_funded.coverage_class, self_funded.price_cap_cents), (CoverageClass::C as i32, None));

    // A region's own item is unknown elsewhere.
    let elsewhere = client.lookup_catalog_item(lookup("110105", "310000-T-0001")).await.unwrap_err();
    assert_eq!((elsewhere.code(), reason(&elsewhere).as_str()), (Code::NotFound, "CATALOG_ITEM_NOT_FOUND"));
    assert!(client.lookup_catalog_item(lookup("310104", "310000-T-0001")).await.is_ok());

    let anonymous = catalog(&stack, None).lookup_catalog_item(lookup("", "110200001")).await.unwrap_err();
    assert_eq!((anonymous.code(), reason(&anonymous).as_str()), (Code::Unauthenticated, "UNAUTHENTICATED"));
    stack.shutdown().await;
}

#[tokio::test]
async fn searches_page_by_code_and_by_name_without_repeating_or_skipping() {
    let stack = Stack::start().await;
    let mut client = catalog(&stack, Some(&stack.keys.pharmacy));
    let mut codes = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = client.search_catalog(by_code("", "X", 3, &token)).await.expect("search").into_inner();
        assert!(page.items.len() <= 3);
        codes.extend(page.items.into_iter().map(|item| item.code));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        codes,
        ["XA11HAX001A001010101", "XB05AAR040B002010101", "XJ01CAA040A001010101", "XM01AEB020A001010101"],
        "every drug once, in code order, over two pages"
    );

    let named = client
        .search_catalog(SearchCatalogRequest {
            region_code: "310000".to_owned(),
            query: Some(Query::NamePrefix("普通".to_owned())),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("search by name")
        .into_inner();
    assert_eq!(named.items.len(), 1, "the national item the region overrides is hidden");
    assert_eq!(named.items[0].price_cap_cents, Some(1400));
    assert!(named.next_page_token.is_empty());
    stack.shutdown().await;
}

#[tokio::test]
async fn bad_catalogue_requests_name_the_field() {
    let stack = Stack::start().await;
    let mut client = catalog(&stack, Some(&stack.keys.hospital));
    for (request, field) in [
        (lookup("31011", "110200001"), "region_code"),
        (lookup("", ""), "code"),
        (lookup("", "drop table"), "code"),
        (lookup("", &"X".repeat(41)), "code"),
    ] {
        let status = client.lookup_catalog_item(request).await.unwrap_err();
        assert_eq!((status.code(), bad_fields(&status)), (Code::InvalidArgument, vec![field.to_owned()]));
    }
    let name_query = |prefix: &str, token: &str| SearchCatalogRequest {
        region_code: String::new(),
        query: Some(Query::NamePrefix(prefix.to_owned())),
        page_size: 0,
        page_token: token.to_owned(),
    };
    for (request, field) in [
        (SearchCatalogRequest { query: None, ..by_code("", "X", 0, "") }, "query"),
        (by_code("", "", 0, ""), "code_prefix"),
        (by_code("", "X", 101, ""), "page_size"),
        (by_code("", "X", -1, ""), "page_size"),
        (by_code("", "X", 0, "not a token"), "page_token"),
        (name_query("", ""), "name_prefix"),
        (name_query("\u{7}", ""), "name_prefix"),
        (name_query(&"药".repeat(101), ""), "name_prefix"),
        (name_query("阿", "NO-SUCH-ITEM"), "page_token"),
    ] {
        let status = client.search_catalog(request).await.unwrap_err();
        assert_eq!((status.code(), bad_fields(&status)), (Code::InvalidArgument, vec![field.to_owned()]), "{field}");
    }
    stack.shutdown().await;
}
