//! The read API (`/v1/read/…`): what people and tools look at — deployments and their
//! machines, collections, update lists, the Update Repository, clients with their
//! per-update states — answered from the live site engine, plus the catalog versions and
//! status history from the store. Read tokens only (never a client's token): a bearer
//! token or the console's `patchops_read` cookie. The documents come from
//! [`crate::site::view`]; this module parses queries, checks tokens and maps answers.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ApiError, Shared, with_store};
use crate::site::SiteState;
use crate::site::view::{self, ClientQuery, MachineQuery, Page, UpdateQuery};

/// The cookie the console keeps a read token in.
pub const READ_COOKIE: &str = "patchops_read";
/// Status history entries answered when the caller names no limit.
const DEFAULT_HISTORY: usize = 100;
/// What a client is told to wait while the site engine derives its first state.
const FIRST_DERIVATION_RETRY_SECONDS: u32 = 5;

/// The read API's routes (merged into the management point's router).
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/read/site", get(site))
        .route("/v1/read/deployments", get(deployments))
        .route("/v1/read/deployments/{name}", get(deployment))
        .route("/v1/read/deployments/{name}/machines", get(machines))
        .route("/v1/read/deployments/{name}/history", get(history))
        .route("/v1/read/collections", get(collections))
        .route("/v1/read/collections/{name}/members", get(members))
        .route("/v1/read/update-lists", get(update_lists))
        .route("/v1/read/updates", get(updates))
        .route("/v1/read/updates/{id}", get(update))
        .route("/v1/read/clients", get(clients))
        .route("/v1/read/clients/{name}", get(client))
        .route("/v1/read/catalog/versions", get(catalog_versions))
}

type Params = Query<HashMap<String, String>>;

// ---------------------------------------------------------------------------------------
// Authorization.

/// The user an authenticating proxy (oauth2-proxy's `X-Auth-Request-User`, …) names in
/// the header `--ui-trusted-header` configures; None without that setting or header.
pub(super) fn proxy_user(config: &super::ServerConfig, headers: &HeaderMap) -> Option<String> {
    let name = config.ui_trusted_header.as_deref()?;
    let mut values = headers.get_all(name).iter();
    let user = values.next()?.to_str().ok()?.trim();
    // Two values: a proxy that appended its own to one the client sent. Trust neither.
    if values.next().is_some() {
        return None;
    }
    (!user.is_empty()).then(|| user.to_string())
}

/// The read token the request presents: its bearer token, else the console's cookie.
pub(super) fn presented_token(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string())
            .filter(|t| !t.is_empty());
        return match token {
            Some(t) => Ok(Some(t)),
            None => Err(ApiError::unauthorized(
                "the Authorization header is not \"Bearer <read token>\"; send a read token of this management point",
            )),
        };
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == READ_COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty());
    Ok(cookie)
}

/// Whether `hash` (sha256 hex) is one of `known`, without an early exit on the first
/// difference or the first match: every candidate is compared in full.
pub(super) fn known_hash(hash: &str, known: &[String]) -> bool {
    let wanted = hash.as_bytes();
    let mut found = 0u8;
    for k in known {
        let k = k.trim().to_ascii_lowercase();
        let k = k.as_bytes();
        let same_length = (k.len() == wanted.len()) as u8;
        let diff = k.iter().zip(wanted).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        found |= same_length & (diff == 0) as u8;
    }
    found == 1
}

/// A read token of this management point, or the answer that says what to send.
async fn authorize(state: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    if proxy_user(&state.config, headers).is_some() {
        return Ok(());
    }
    let Some(token) = presented_token(headers)? else {
        return Err(ApiError::unauthorized(
            "no read token; send \"Authorization: Bearer <read token>\" (a token listed in the management point's \
             --read-token-file) or the patchops_read cookie",
        ));
    };
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    if known_hash(&hash, &state.config.read_token_hashes) {
        return Ok(());
    }
    let lookup = hash.clone();
    let client = with_store(state, "cannot check the token", move |s| s.client_for_token(&lookup))
        .await?
        .map_err(|e| ApiError::unavailable("cannot check the token", &e))?;
    match client {
        Some(owner) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this is the client token of {}; the read API needs a read token (ask the operator for one from \
                 the management point's --read-token-file)",
                owner.client
            ),
        )),
        None if state.config.read_token_hashes.is_empty() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the read API is disabled on this management point: it has no read tokens; the operator starts it \
             with --read-token-file",
        )),
        None => Err(ApiError::unauthorized(
            "unknown read token; send a token listed in the management point's --read-token-file",
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Answers from the site engine.

/// Run `f` over the site as it is now, off the runtime threads (a listing walks the fleet).
async fn from_site<T, F>(state: &Shared, headers: &HeaderMap, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&SiteState) -> Result<T, ApiError> + Send + 'static,
{
    authorize(state, headers).await?;
    let Some(site) = state.config.site.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this management point runs no site engine, so it has no compliance picture to read; use the read API \
             of `patchops run` (or a `patchops serve` that runs the site engine)",
        ));
    };
    let answer = tokio::task::spawn_blocking(move || site.read(f)).await.map_err(|e| {
        tracing::error!(error = %e, "a read API view panicked");
        ApiError::internal("cannot read the site")
    })?;
    answer.unwrap_or_else(|| {
        if let Some(why) = state.config.site.as_ref().and_then(|s| s.waiting()) {
            return Err(ApiError {
                retry_after: Some(FIRST_DERIVATION_RETRY_SECONDS),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why)
            });
        }
        Err(ApiError {
            retry_after: Some(FIRST_DERIVATION_RETRY_SECONDS),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the site engine has not finished its first derivation yet; retry in \
                     {FIRST_DERIVATION_RETRY_SECONDS} seconds"
                ),
            )
        })
    })
}

fn json<T: Serialize>(value: T) -> Response {
    axum::Json(value).into_response()
}

fn not_found(what: &str, name: &str, list: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no {what} {name:?}; GET {list} lists them"))
}

/// Query parameters: only the named ones are accepted (a typo is a 400, not ignored).
struct Fields<'a> {
    params: &'a HashMap<String, String>,
}

impl<'a> Fields<'a> {
    fn new(params: &'a HashMap<String, String>, allowed: &[&str]) -> Result<Fields<'a>, ApiError> {
        let mut unknown: Vec<&str> = params.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(bad(format!(
                "unknown query parameter(s) {}; this endpoint takes {}",
                unknown.join(", "),
                allowed.join(", ")
            )));
        }
        Ok(Fields { params })
    }

    fn text(&self, key: &str) -> Option<String> {
        self.params.get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>, ApiError> {
        self.text(key).map(|v| v.parse::<T>().map_err(|_| bad(format!("{key}={v:?} is not {expected}")))).transpose()
    }

    fn page(&self) -> Result<Page, ApiError> {
        let offset = self.parse::<usize>("offset", "a row number (0 or more)")?.unwrap_or(0);
        let limit = self.parse::<usize>("limit", "a number of rows")?.unwrap_or(view::DEFAULT_LIMIT);
        Page::new(offset, limit).map_err(bad)
    }

    fn sort(&self) -> Result<view::Sort, ApiError> {
        self.text("sort").map(|s| s.parse().map_err(bad)).transpose().map(Option::unwrap_or_default)
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.parse::<bool>(key, "true or false")
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

async fn site(State(state): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    from_site(&state, &headers, |s| Ok(json(view::site(s)))).await
}

async fn deployments(State(state): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    from_site(&state, &headers, |s| Ok(json(view::deployments(s)))).await
}

async fn deployment(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    from_site(&state, &headers, move |s| {
        view::deployment(s, &name).map(json).ok_or_else(|| not_found("deployment", &name, "/v1/read/deployments"))
    })
    .await
}

async fn machines(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let f = Fields::new(&params, &["state", "q", "sort", "offset", "limit"])?;
    let query = MachineQuery {
        state: f.text("state").map(|s| s.parse().map_err(bad)).transpose()?,
        q: f.text("q"),
        sort: f.sort()?,
        page: f.page()?,
    };
    from_site(&state, &headers, move |s| {
        view::machines(s, &name, &query).map(json).ok_or_else(|| not_found("deployment", &name, "/v1/read/deployments"))
    })
    .await
}

/// One recorded status of a resource.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryEntry {
    time: jiff::Timestamp,
    revision: String,
    catalog_version: u64,
    status: serde_json::Value,
}

async fn history(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let f = Fields::new(&params, &["limit"])?;
    let limit = f.parse::<usize>("limit", "a number of entries")?.unwrap_or(DEFAULT_HISTORY);
    if limit == 0 || limit > view::MAX_LIMIT {
        return Err(bad(format!("limit={limit} is out of range; ask for 1 to {} entries", view::MAX_LIMIT)));
    }
    authorize(&state, &headers).await?;
    let who = name.clone();
    let records = with_store(&state, "cannot read the status history", move |s| {
        s.status_history("UpdateDeployment", &who, limit)
    })
    .await?
    .map_err(|e| ApiError::unavailable("cannot read the status history", &e))?;
    let known = state.config.site.as_ref().and_then(|h| h.read(|s| s.desired.deployments.contains_key(&name)));
    if records.is_empty() && known != Some(true) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no status history for deployment {name:?}; GET /v1/read/deployments lists the deployments"),
        ));
    }
    let entries: Vec<HistoryEntry> = records
        .into_iter()
        .filter_map(|r| {
            let status = r.statuses.into_iter().next()?.status;
            Some(HistoryEntry { time: r.time, revision: r.revision, catalog_version: r.catalog_version, status })
        })
        .collect();
    Ok(json(serde_json::json!({ "name": name, "entries": entries })))
}

async fn collections(State(state): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    from_site(&state, &headers, |s| Ok(json(view::collections(s)))).await
}

async fn members(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let f = Fields::new(&params, &["q", "offset", "limit"])?;
    let (q, page) = (f.text("q"), f.page()?);
    from_site(&state, &headers, move |s| {
        view::members(s, &name, q.as_deref(), page)
            .map(json)
            .ok_or_else(|| not_found("collection", &name, "/v1/read/collections"))
    })
    .await
}

async fn update_lists(State(state): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    from_site(&state, &headers, |s| Ok(json(view::update_lists(s)))).await
}

async fn updates(State(state): State<Shared>, headers: HeaderMap, Query(params): Params) -> Result<Response, ApiError> {
    let f = Fields::new(
        &params,
        &[
            "q",
            "cve",
            "kb",
            "advisory",
            "product",
            "classification",
            "severity",
            "superseded",
            "expired",
            "sort",
            "offset",
            "limit",
        ],
    )?;
    let severity = f
        .text("severity")
        .map(|v| {
            serde_json::from_value::<crate::catalog::Severity>(serde_json::Value::String(v.clone())).map_err(|_| {
                bad(format!("severity={v:?} is not known; ask for Critical, Important, Moderate, Low or Unspecified"))
            })
        })
        .transpose()?;
    let query = UpdateQuery {
        q: f.text("q"),
        cve: f.text("cve"),
        kb: f.text("kb"),
        advisory: f.text("advisory"),
        product: f.text("product"),
        classification: f.text("classification"),
        severity,
        superseded: f.flag("superseded")?,
        expired: f.flag("expired")?,
        sort: f.text("sort").map(|v| v.parse().map_err(bad)).transpose()?.unwrap_or_default(),
        page: f.page()?,
    };
    from_site(&state, &headers, move |s| Ok(json(view::updates(s, &query)))).await
}

async fn update(State(state): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    from_site(&state, &headers, move |s| {
        view::update(s, &id).map(json).ok_or_else(|| not_found("update", &id, "/v1/read/updates?q=…"))
    })
    .await
}

async fn clients(State(state): State<Shared>, headers: HeaderMap, Query(params): Params) -> Result<Response, ApiError> {
    let f = Fields::new(&params, &["q", "selector", "sort", "offset", "limit"])?;
    let query = ClientQuery {
        q: f.text("q"),
        selector: f.text("selector").map(|s| view::parse_selector(&s)).transpose().map_err(bad)?.unwrap_or_default(),
        sort: f.sort()?,
        page: f.page()?,
    };
    from_site(&state, &headers, move |s| Ok(json(view::clients(s, &query)))).await
}

async fn client(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    from_site(&state, &headers, move |s| {
        view::client(s, &name).map(json).ok_or_else(|| not_found("client", &name, "/v1/read/clients"))
    })
    .await
}

async fn catalog_versions(State(state): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers).await?;
    let versions = with_store(&state, "cannot read the catalog versions", |s| s.catalog_versions())
        .await?
        .map_err(|e| ApiError::unavailable("cannot read the catalog versions", &e))?;
    Ok(json(versions))
}

#[cfg(test)]
mod test {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_read_token_comes_from_the_bearer_header_or_the_console_cookie() {
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer abc")]);
        assert_eq!(presented_token(&bearer).unwrap().as_deref(), Some("abc"));
        let cookie = headers(&[(header::COOKIE, "theme=dark; patchops_read=xyz ; other=1")]);
        assert_eq!(presented_token(&cookie).unwrap().as_deref(), Some("xyz"));
        assert_eq!(presented_token(&HeaderMap::new()).unwrap(), None);
        assert!(presented_token(&headers(&[(header::AUTHORIZATION, "Basic abc")])).is_err());
    }

    #[test]
    fn a_token_hash_matches_only_a_listed_hash_in_full() {
        let h = hex::encode(Sha256::digest(b"secret"));
        let known = vec![hex::encode(Sha256::digest(b"other")), h.to_uppercase()];
        assert!(known_hash(&h, &known));
        assert!(!known_hash(&h[..63], &known), "a prefix is not a match");
        assert!(!known_hash(&h, &[]));
    }
}
