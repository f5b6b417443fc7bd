//! `medins.insurance.v1.CatalogService`: the catalogue, read by any partner (public policy, no
//! personal data, nothing recorded).

use medins_common::{ApiError, ApiResult, Reason, auth::Caller};
use medins_proto::insurance::v1::{
    self as pb, LookupCatalogItemRequest, LookupCatalogItemResponse, SearchCatalogRequest, SearchCatalogResponse,
    catalog_service_server::CatalogService, search_catalog_request::Query as WireQuery,
};
use tonic::{Request, Response, Status};

use super::SharedState;
use crate::domain::catalog::{self, CoverageClass, Found, ItemKind, Query};

/// The CatalogService implementation.
pub struct CatalogApi {
    state: SharedState,
}

impl CatalogApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

/// The wire form of an item as found.
fn item_message(found: Found<'_>) -> pb::CatalogItem {
    let item = found.item;
    pb::CatalogItem {
        code: item.code.clone(),
        name: item.name.clone(),
        kind: match item.kind {
            ItemKind::Drug => pb::CatalogItemKind::Drug,
            ItemKind::Treatment => pb::CatalogItemKind::Treatment,
            ItemKind::Consumable => pb::CatalogItemKind::Consumable,
        } as i32,
        coverage_class: match item.class {
            CoverageClass::A => pb::CoverageClass::A,
            CoverageClass::B => pb::CoverageClass::B,
            CoverageClass::C => pb::CoverageClass::C,
        } as i32,
        unit: item.unit.clone(),
        price_cap_cents: item.price_cap_cents,
        catalog_version: found.version.to_owned(),
        source_region_code: found.region.unwrap_or_default().to_owned(),
    }
}

fn lookup(state: &SharedState, request: &LookupCatalogItemRequest) -> ApiResult<pb::CatalogItem> {
    let region = catalog::request_region(&request.region_code)?;
    let code = catalog::request_code("code", &request.code)?;
    state
        .catalog
        .lookup(region, code)
        .map(item_message)
        .ok_or_else(|| ApiError::of(Reason::CatalogItemNotFound, "no catalogue item with this code here"))
}

fn search(state: &SharedState, request: &SearchCatalogRequest) -> ApiResult<SearchCatalogResponse> {
    let region = catalog::request_region(&request.region_code)?;
    let query = match &request.query {
        Some(WireQuery::CodePrefix(prefix)) => catalog::request_query(Some(prefix), None)?,
        Some(WireQuery::NamePrefix(prefix)) => catalog::request_query(None, Some(prefix))?,
        None => catalog::request_query(None, None)?,
    };
    let limit = catalog::SEARCH_PAGE.check("page_size", request.page_size)?;
    // The token is the code of the previous page's last item; a name search continues after
    // that item's name, so it must still be in the catalogue as it applies here.
    let after = match request.page_token.as_str() {
        "" => None,
        token => {
            let code = catalog::request_code("page_token", token)?;
            if matches!(query, Query::NamePrefix(_)) && state.catalog.lookup(region, code).is_none() {
                return Err(ApiError::invalid_field(
                    Reason::InvalidArgument,
                    "page_token",
                    "not a page token of this search (was the catalogue reloaded?)",
                ));
            }
            Some(code)
        }
    };
    // One more than a page tells whether another page follows.
    let mut found = state.catalog.search(region, &query, after, limit + 1);
    let more = found.len() > limit;
    found.truncate(limit);
    let next_page_token = match (more, found.last()) {
        (true, Some(last)) => last.item.code.clone(),
        _ => String::new(),
    };
    Ok(SearchCatalogResponse { items: found.into_iter().map(item_message).collect(), next_page_token })
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn lookup_catalog_item(
        &self,
        request: Request<LookupCatalogItemRequest>,
    ) -> Result<Response<LookupCatalogItemResponse>, Status> {
        Caller::of(&request)?;
        let item = lookup(&self.state, request.get_ref())?;
        Ok(Response::new(LookupCatalogItemResponse { item: Some(item) }))
    }

    async fn search_catalog(
        &self,
        request: Request<SearchCatalogRequest>,
    ) -> Result<Response<SearchCatalogResponse>, Status> {
        Caller::of(&request)?;
        Ok(Response::new(search(&self.state, request.get_ref())?))
    }
}
