//! The management point: the HTTP/JSON API (`/v1`) agents talk to. A client registers
//! with the enrollment secret and gets a bearer token; with it, it reads its own policy
//! (ETag / If-None-Match), reads the catalog in full or as a delta since a version (O2),
//! and posts batches of state messages (S6) that are acknowledged only after the store
//! committed them. `/healthz`, `/readyz` and `/metrics` (Prometheus) are for operators.
//!
//! The store is synchronous: it is shared behind a mutex and only called from
//! `spawn_blocking`, never on a runtime thread. State batches that arrive together are
//! committed together (`commit`).

use crate::content;
mod commit;
mod listen;
mod metrics;
mod read;
mod ui;

pub use listen::{bind, raise_open_file_limit};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::catalog::delta::CatalogDelta;
use crate::compliance::messages::StateBatch;
use crate::store::{BatchOutcome, ClientInfo, Enrollment, Store, StoreError, TokenOwner};
use metrics::Metrics;

/// The store as the server shares it between requests.
pub type SharedStore = Arc<Mutex<Box<dyn Store>>>;

/// Default largest state batch body: 8 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Default most state messages in one batch.
pub const DEFAULT_MAX_BATCH_MESSAGES: usize = 10_000;
/// Largest registration body.
const MAX_REGISTER_BYTES: usize = 64 * 1024;
/// Default time a token → client lookup is trusted without asking the store again. A
/// token replaced or revoked through another management point sharing the store stops
/// working for reads within this time, and for state batches at once (the batch's
/// transaction confirms the token generation).
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Default time a client has to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a client has to send a request's whole body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default most connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Failed enrollments an address may make before it is slowed down.
const FREE_ENROLL_FAILURES: u32 = 5;
/// Longest wait imposed on an address that keeps failing to enroll.
const MAX_ENROLL_PENALTY: Duration = Duration::from_secs(300);
/// Addresses whose failed enrollments are remembered (the oldest are forgotten).
const MAX_TRACKED_ADDRESSES: usize = 10_000;
/// What a client is told to wait before retrying when the store is unavailable.
const RETRY_AFTER_SECONDS: u32 = 30;
/// How long `/readyz` waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the management point.
#[derive(Clone)]
pub struct ServerConfig {
    /// Shared secret a client presents to register. Empty: registration is refused.
    pub enroll_secret: String,
    /// Largest state batch body in bytes (default 8 MiB); larger batches get 413.
    pub max_batch_bytes: usize,
    /// Most state messages in one batch (default 10 000); more get 413.
    pub max_batch_messages: usize,
    /// The content library served at `/v1/content/{sha256}`; None serves no content.
    pub content: Option<content::ContentLibrary>,
    /// How long a token check is trusted before the store is asked again.
    pub token_cache_ttl: Duration,
    /// Time a client has to send a request's headers (slow or half-open connections).
    pub header_timeout: Duration,
    /// Time a client has to send a request's whole body (a body trickled byte by byte).
    pub body_timeout: Duration,
    /// Most connections open at once; more wait in the listen queue.
    pub max_connections: usize,
    /// The live site engine of this process, when it runs one: policies, tokens and the
    /// read API are answered from it.
    pub site: Option<crate::site::SiteHandle>,
    /// sha256 (hex) of the read tokens that may use the read API and the console (never
    /// a client token). Empty: the read API answers nobody.
    pub read_token_hashes: Vec<String>,
    /// Behind an authenticating proxy (oauth2-proxy): the request header (e.g.
    /// `X-Auth-Request-User`) whose presence signs a user in to the console and the read
    /// API. With [`ServerConfig::ui_listen`] it is honoured only there (the main
    /// listener drops the header from every request, so an agent cannot send it).
    pub ui_trusted_header: Option<String>,
    /// A second listener for the console and the read API only (what an authenticating
    /// proxy forwards to); agents keep the main one.
    pub ui_listen: Option<SocketAddr>,
}

impl ServerConfig {
    /// The defaults, with the given enrollment secret.
    pub fn new(enroll_secret: impl Into<String>) -> Self {
        ServerConfig {
            enroll_secret: enroll_secret.into(),
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_messages: DEFAULT_MAX_BATCH_MESSAGES,
            content: None,
            token_cache_ttl: DEFAULT_TOKEN_CACHE_TTL,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            site: None,
            read_token_hashes: Vec::new(),
            ui_trusted_header: None,
            ui_listen: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("enroll_secret", &if self.enroll_secret.is_empty() { "(none)" } else { "(set)" })
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_batch_messages", &self.max_batch_messages)
            .field("content", &self.content.as_ref().map(|c| c.dir().to_path_buf()))
            .field("token_cache_ttl", &self.token_cache_ttl)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .field("site", &self.site.is_some())
            .field("read_tokens", &self.read_token_hashes.len())
            .finish()
    }
}

struct AppState {
    store: SharedStore,
    config: ServerConfig,
    metrics: Metrics,
    /// sha256(token) → (owner, when looked up).
    tokens: Mutex<HashMap<String, (TokenOwner, Instant)>>,
    /// Failed enrollments by address: how many in a row, the last one, the last logged.
    enroll_failures: Mutex<HashMap<IpAddr, EnrollFailures>>,
    /// Policy documents as sent, by ETag (a document never changes under its ETag).
    documents: Mutex<HashMap<String, Bytes>>,
    /// State batches waiting for the store, applied together (group commit).
    commits: commit::GroupCommit,
}

/// Most policy documents kept serialised (they are shared: a site has few).
const MAX_CACHED_DOCUMENTS: usize = 4096;
/// How long a registration waits for the site engine to assign the new client's policy.
const REGISTRATION_POLICY_WAIT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug)]
struct EnrollFailures {
    count: u32,
    last: Instant,
    logged: Option<Instant>,
}

impl EnrollFailures {
    /// How long the address still has to wait before its next attempt is heard.
    fn wait(&self) -> Option<Duration> {
        let over = self.count.checked_sub(FREE_ENROLL_FAILURES)?;
        let penalty = Duration::from_secs(1u64 << over.min(16)).min(MAX_ENROLL_PENALTY);
        penalty.checked_sub(self.last.elapsed()).filter(|d| !d.is_zero())
    }
}

type Shared = Arc<AppState>;

/// The router (for tests and for `patchops serve`).
pub fn router(store: SharedStore, config: ServerConfig) -> Router {
    routers(store, config).0
}

/// The main listener's router and, with [`ServerConfig::ui_listen`], the console
/// listener's (the console, the read API and the health checks), over one state.
pub fn routers(store: SharedStore, config: ServerConfig) -> (Router, Option<Router>) {
    let separate = config.ui_listen.is_some();
    let strip = config.ui_trusted_header.clone().filter(|_| separate);
    let metrics = Metrics::new();
    let commits = commit::GroupCommit::new(metrics.commits.clone(), metrics.pending.clone());
    let state = Arc::new(AppState {
        store,
        config,
        metrics,
        tokens: Mutex::new(HashMap::new()),
        enroll_failures: Mutex::new(HashMap::new()),
        documents: Mutex::new(HashMap::new()),
        commits,
    });
    let console = || {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .merge(read::routes())
            .merge(ui::routes())
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(state.clone(), count_requests))
            .with_state(state.clone())
    };
    let mut main = Router::new()
        .route("/v1/register", post(register))
        .route("/v1/rotate", post(rotate))
        .route("/v1/policy", get(policy))
        .route("/v1/catalog", get(catalog))
        .route("/v1/states", post(states))
        .route("/v1/content/{sha256}", get(content_file))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state.clone())
        .merge(console());
    if let Some(name) = strip {
        // Only the console listener is behind the proxy: here the header is anyone's.
        main = main.layer(middleware::from_fn(move |mut request: Request, next: Next| {
            request.headers_mut().remove(name.as_str());
            next.run(request)
        }));
    }
    (main, separate.then(console))
}

/// Bind `addr` and serve until `shutdown` resolves; requests in flight are finished.
pub async fn serve(
    addr: SocketAddr,
    store: SharedStore,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let listener = listen::bind(addr).await.map_err(|e| {
        crate::Error::Usage(format!("cannot listen on {addr}: {e}; choose another address or stop what uses it"))
    })?;
    serve_listener(listener, store, config, shutdown).await
}

/// Serve on a listener already bound (tests bind port 0 and read the port back).
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    store: SharedStore,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let location = store.lock().unwrap_or_else(|p| p.into_inner()).location();
    let (max_connections, header_timeout) = (config.max_connections, config.header_timeout);
    static RAISE: std::sync::Once = std::sync::Once::new();
    RAISE.call_once(|| {
        raise_open_file_limit();
    });
    let ui_listen = config.ui_listen;
    let console_listener = match ui_listen {
        Some(addr) => Some(listen::bind(addr).await.map_err(|e| {
            crate::Error::Usage(format!(
                "cannot listen on {addr} (--ui-listen): {e}; choose another address or stop what uses it"
            ))
        })?),
        None => None,
    };
    let (main, console) = routers(store, config);
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    tracing::info!(address = %local, store = %location, max_connections, "management point listening");
    let console = async {
        if let (Some(listener), Some(app)) = (console_listener, console) {
            let at = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
            tracing::info!(address = %at, "console and read API listening");
            listen::serve_bounded(listener, app, max_connections, header_timeout, shutdown.clone()).await;
        }
    };
    tokio::join!(listen::serve_bounded(listener, main, max_connections, header_timeout, shutdown.clone()), console);
    tracing::info!(address = %local, "management point stopped");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Errors.

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
    www_authenticate: bool,
    /// Answered before the request body was read: the connection is closed, and says so
    /// (`Connection: close`), so a client does not send its next request on it.
    close: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry_after: None, www_authenticate: false, close: false }
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        ApiError { www_authenticate: true, ..ApiError::new(StatusCode::UNAUTHORIZED, message) }
    }

    /// The store failed: the client should keep what it has and retry.
    fn unavailable(what: &str, e: &crate::Error) -> Self {
        tracing::warn!(error = %e, "{what}");
        ApiError {
            retry_after: Some(RETRY_AFTER_SECONDS),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{what}: {}; retry in {RETRY_AFTER_SECONDS} seconds", store_message(e)),
            )
        }
    }

    fn internal(what: &str) -> Self {
        ApiError {
            retry_after: Some(RETRY_AFTER_SECONDS),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{what}: the server failed internally (see its log); retry in {RETRY_AFTER_SECONDS} seconds"),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.www_authenticate {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The store's message without its location (clients need not know where the store is).
fn store_message(e: &crate::Error) -> String {
    match e {
        crate::Error::Store { error, .. } => error.to_string(),
        other => other.to_string(),
    }
}

/// Run a store call off the runtime threads.
async fn with_store<T, F>(state: &Shared, what: &'static str, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Store) -> T + Send + 'static,
{
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard: MutexGuard<'_, Box<dyn Store>> = store.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.as_mut())
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "{what}: the store call panicked");
        ApiError::internal(what)
    })
}

/// Read a body of at most `limit` bytes, within `timeout` (a body trickled in slowly is
/// cut off rather than holding a connection and its memory indefinitely).
async fn read_body(body: Body, limit: usize, timeout: Duration, what: &str) -> Result<Bytes, ApiError> {
    let read = tokio::time::timeout(timeout, collect_limited(body, limit)).await.map_err(|_| {
        tracing::warn!(timeout_seconds = timeout.as_secs_f64(), "{what} not received in time; the request is cut off");
        ApiError {
            close: true,
            ..ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the {what} did not arrive within {} seconds; send it again", timeout.as_secs_f64()),
            )
        }
    })?;
    read.map_err(|e| {
        let error = match e {
            BodyError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the {what} is larger than the limit of {limit} bytes; send it in smaller parts"),
            ),
            BodyError::Read(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read the {what}: {e}; send it again"))
            }
        };
        // The rest of the body is not read: the connection cannot carry another request.
        ApiError { close: true, ..error }
    })
}

/// Why a body was not read whole.
enum BodyError {
    /// It is longer than the limit (what was read so far is dropped).
    TooLarge,
    Read(axum::Error),
}

/// The body's bytes, stopping as soon as more than `limit` arrived.
async fn collect_limited(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut out: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        if out.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

// ---------------------------------------------------------------------------------------
// Authentication.

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Compare two secrets without leaking where they differ (compares their digests).
fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

/// 32 random bytes from the operating system, hex.
fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The sha256 of the request's bearer token; None without an Authorization header.
fn bearer_hash(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "the Authorization header is not \"Bearer <token>\"; send the token from POST /v1/register",
            )
        })?;
    Ok(Some(sha256_hex(token.as_bytes())))
}

/// The client the request's bearer token belongs to (with the token's hash and
/// generation, which a write confirms in its own transaction).
async fn authenticate(state: &Shared, headers: &HeaderMap) -> Result<(TokenOwner, String), ApiError> {
    let Some(hash) = bearer_hash(headers)? else {
        return Err(ApiError::unauthorized(
            "no Authorization header; send \"Authorization: Bearer <token>\" with the token from POST /v1/register",
        ));
    };
    if let Some((owner, at)) = state.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&hash)
        && at.elapsed() < state.config.token_cache_ttl
    {
        return Ok((owner.clone(), hash));
    }
    let lookup = hash.clone();
    let found = with_store(state, "cannot check the token", move |s| s.client_for_token(&lookup))
        .await?
        .map_err(|e| ApiError::unavailable("cannot check the token", &e))?;
    let mut tokens = state.tokens.lock().unwrap_or_else(|p| p.into_inner());
    match found {
        Some(owner) => {
            if tokens.len() >= MAX_TRACKED_ADDRESSES {
                let ttl = state.config.token_cache_ttl;
                tokens.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            tokens.insert(hash.clone(), (owner.clone(), Instant::now()));
            Ok((owner, hash))
        }
        None => {
            tokens.remove(&hash);
            Err(ApiError::unauthorized(
                "unknown token (replaced, rotated or revoked); register again, or ask the operator if the name was revoked",
            ))
        }
    }
}

/// Forget every cached token of `client` (its token changed here).
fn forget_tokens(state: &Shared, client: &str) {
    state.tokens.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, (owner, _)| owner.client != client);
}

// ---------------------------------------------------------------------------------------
// Handlers.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterRequest {
    name: String,
    #[serde(default)]
    facts: BTreeMap<String, String>,
    #[serde(default)]
    agent_version: Option<String>,
    enroll_secret: String,
}

/// `POST /v1/register`: a new token for the client. A name that already holds a token is
/// re-registered only with that token in the Authorization header (or after the operator
/// released it): a second host under the same name, or anyone holding just the
/// enrollment secret, gets 409 instead of taking the name over. An address that keeps
/// presenting a wrong secret is slowed down (429 with Retry-After).
async fn register(State(state): State<Shared>, request: Request) -> Result<Response, ApiError> {
    let address = listen::peer(request.extensions()).map(|p| p.ip());
    let presented = bearer_hash(request.headers())?;
    // The (bounded) body is read before any answer, so the connection stays usable.
    let raw = read_body(request.into_body(), MAX_REGISTER_BYTES, state.config.body_timeout, "registration").await?;
    if let Some(wait) = address.and_then(|a| enroll_wait(&state, a)) {
        state.metrics.enrollment_failure("throttled");
        let seconds = wait.as_secs().max(1) as u32;
        return Err(ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed enrollments from this address; retry in {seconds} seconds"),
            )
        });
    }
    let request: RegisterRequest = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the registration is not valid: {e}; send {{\"name\": \"<client>\", \"facts\": {{\"<name>\": \"<value>\"}}, \
                 \"agentVersion\": \"<version>\", \"enrollSecret\": \"<secret>\"}}"
            ),
        )
    })?;
    if state.config.enroll_secret.is_empty() {
        return Err(ApiError::unauthorized(
            "registration is disabled: the server has no enrollment secret; ask the operator to set one",
        ));
    }
    if !same_secret(&request.enroll_secret, &state.config.enroll_secret) {
        enroll_failed(&state, address, &request.name, "wrong_secret");
        return Err(ApiError::unauthorized("wrong enrollment secret; ask the operator for the current one"));
    }
    if let Some(a) = address {
        state.enroll_failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&a);
    }
    let name = request.name.trim().to_string();
    if name.is_empty() || name.len() > 253 || name.chars().any(|c| c.is_control()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the client name must be 1 to 253 characters without control characters; send the host name",
        ));
    }
    let token = new_token().map_err(|e| {
        tracing::error!(error = %e, "cannot read /dev/urandom for a token");
        ApiError::internal("cannot make a token")
    })?;
    let hash = sha256_hex(token.as_bytes());
    let info = ClientInfo { name: name.clone(), facts: request.facts, agent_version: request.agent_version };
    let stored = hash.clone();
    let outcome = with_store(&state, "cannot register the client", move |s| {
        s.enroll_client(&info, &stored, presented.as_deref(), Timestamp::now())
    })
    .await?
    .map_err(|e| ApiError::unavailable("cannot register the client", &e))?;
    match outcome {
        Enrollment::Enrolled => {}
        Enrollment::NameTaken => {
            enroll_failed(&state, address, &name, "name_taken");
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "client name {name:?} is already registered by another host; register with its current token \
                     (Authorization: Bearer), choose another --name, or ask the operator to run \
                     `patchops client release {name}` if the host was reinstalled"
                ),
            ));
        }
        Enrollment::Revoked { at } => {
            enroll_failed(&state, address, &name, "revoked");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "client {name:?} was revoked at {at}; it cannot register until the operator runs \
                     `patchops client release {name}`"
                ),
            ));
        }
    }
    // The client's earlier token no longer works here.
    forget_tokens(&state, &name);
    tracing::info!(client = %name, "client registered");
    await_policy(&state, &name).await;
    Ok((StatusCode::CREATED, axum::Json(json!({ "token": token }))).into_response())
}

/// How long an address must still wait after failed enrollments.
fn enroll_wait(state: &Shared, address: IpAddr) -> Option<Duration> {
    state.enroll_failures.lock().unwrap_or_else(|p| p.into_inner()).get(&address).and_then(EnrollFailures::wait)
}

/// Count a failed enrollment (`reason`: wrong_secret, name_taken, revoked): metric, a
/// log line (at most one a minute per address), and the address's count that slows it.
fn enroll_failed(state: &Shared, address: Option<IpAddr>, name: &str, reason: &'static str) {
    state.metrics.enrollment_failure(reason);
    let Some(address) = address else {
        tracing::warn!(client = %name, reason, "registration refused");
        return;
    };
    let mut failures = state.enroll_failures.lock().unwrap_or_else(|p| p.into_inner());
    if failures.len() >= MAX_TRACKED_ADDRESSES
        && !failures.contains_key(&address)
        && let Some(oldest) = failures.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a)
    {
        failures.remove(&oldest);
    }
    let entry = failures.entry(address).or_insert(EnrollFailures { count: 0, last: Instant::now(), logged: None });
    entry.count += 1;
    entry.last = Instant::now();
    if entry.logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
        tracing::warn!(
            address = %address, client = %name, reason, failures = entry.count,
            "registration refused (logged at most once a minute per address)"
        );
        entry.logged = Some(Instant::now());
    }
}

/// `POST /v1/rotate`: a new token for the caller; the one it authenticated with stops
/// working (on every management point sharing the store).
async fn rotate(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    // Read the (empty) body before answering, so the connection stays usable.
    read_body(body, MAX_REGISTER_BYTES, state.config.body_timeout, "rotation request").await?;
    let (owner, old) = authenticate(&state, &headers).await?;
    let token = new_token().map_err(|e| {
        tracing::error!(error = %e, "cannot read /dev/urandom for a token");
        ApiError::internal("cannot make a token")
    })?;
    let new = sha256_hex(token.as_bytes());
    let client = owner.client.clone();
    let rotated = with_store(&state, "cannot rotate the token", move |s| s.rotate_token(&client, &old, &new))
        .await?
        .map_err(|e| ApiError::unavailable("cannot rotate the token", &e))?;
    forget_tokens(&state, &owner.client);
    if !rotated {
        return Err(ApiError::unauthorized("the token was replaced or revoked meanwhile; register again"));
    }
    tracing::info!(client = %owner.client, "token rotated");
    Ok(axum::Json(json!({ "token": token })).into_response())
}

/// Whether an `If-None-Match` header names `etag` (or is `*`).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |candidate| {
            let c = candidate.trim();
            let c = c.strip_prefix("W/").unwrap_or(c);
            c == "*" || c.trim_matches('"') == etag
        },
    )
}

/// Wait (briefly) until the new client has a policy: from the site engine of this
/// process, or else in the store (an engine elsewhere follows the change feed). The
/// agent's first poll, right after registering, then finds it.
async fn await_policy(state: &Shared, name: &str) {
    if let Some(site) = state.config.site.as_ref().filter(|s| s.started()) {
        let who = name.to_string();
        if !site.wait_until(REGISTRATION_POLICY_WAIT, move |s| s.client(&who).is_some()).await {
            tracing::debug!(client = %name, "the site engine has not assigned a policy yet");
        }
        return;
    }
    // Only where an engine has ever published to this store (it marks every publish):
    // otherwise nobody is going to assign a policy.
    let published =
        with_store(state, "cannot read the settings", |s| s.setting(crate::pipeline::PUBLISHED_SETTING)).await;
    if !matches!(published, Ok(Ok(Some(_)))) {
        return;
    }
    let deadline = Instant::now() + REGISTRATION_POLICY_WAIT;
    while Instant::now() < deadline {
        let who = name.to_string();
        match with_store(state, "cannot read the policy", move |s| s.client_policy(&who)).await {
            Ok(Ok(Some(_))) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(None)) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A client's policy: its ETag and document, from the site engine when it knows the
/// client, else from the store (a management point without an engine asks the store each
/// time: the engine elsewhere may have changed the assignment).
async fn find_policy(state: &Shared, client: &str) -> Result<Option<(String, Bytes)>, ApiError> {
    if let Some(site) = &state.config.site
        && let Some(Some((etag, policy))) = site.policy(client)
    {
        let cached = state.documents.lock().unwrap_or_else(|p| p.into_inner()).get(&etag).cloned();
        let body = match cached {
            Some(body) => body,
            None => {
                let body = Bytes::from(serde_json::to_vec(policy.as_ref()).map_err(|e| {
                    tracing::error!(error = %e, "cannot serialise a policy");
                    ApiError::internal("cannot send the policy")
                })?);
                remember_document(state, &etag, body.clone());
                body
            }
        };
        return Ok(Some((etag, body)));
    }
    let who = client.to_string();
    let found = with_store(state, "cannot read the policy", move |s| s.client_policy(&who))
        .await?
        .map_err(|e| ApiError::unavailable("cannot read the policy", &e))?;
    let Some((etag, document)) = found else { return Ok(None) };
    let body = Bytes::from(serde_json::to_vec(&document).map_err(|_| ApiError::internal("cannot send the policy"))?);
    Ok(Some((etag, body)))
}

fn remember_document(state: &Shared, etag: &str, body: Bytes) {
    let mut documents = state.documents.lock().unwrap_or_else(|p| p.into_inner());
    if documents.len() >= MAX_CACHED_DOCUMENTS {
        documents.clear();
    }
    documents.insert(etag.to_string(), body);
}

/// `GET /v1/policy`: the caller's policy document, with its ETag.
async fn policy(State(state): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let client = authenticate(&state, &headers).await?.0.client;
    let Some((etag, body)) = find_policy(&state, &client).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no policy yet for client {client}; the site engine (`patchops run` or the controller) assigns one \
                 as soon as it sees the registration"
            ),
        ));
    };
    let etag_header = HeaderValue::from_str(&format!("\"{etag}\""))
        .map_err(|_| ApiError::internal("the stored policy has an ETag that cannot be sent"))?;
    if none_match(&headers, &etag) {
        state.metrics.policy_fetch("hit");
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response());
    }
    state.metrics.policy_fetch("miss");
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::ETAG, etag_header);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// `GET /v1/catalog[?since=M]`: the current catalog, or what changed since version M (O2).
async fn catalog(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    authenticate(&state, &headers).await?;
    let since = match query.get("since") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("since={v:?} is not a catalog version; send the version number your catalog has (0 for none)"),
            )
        })?),
    };
    enum Answer {
        Full(crate::catalog::Catalog),
        Delta(CatalogDelta),
        Future { since: u64, newest: u64 },
    }
    let answer = with_store(&state, "cannot read the catalog", move |s| -> crate::Result<Answer> {
        let Some(since) = since else { return Ok(Answer::Full(s.load_catalog()?)) };
        let newest = s.catalog_versions()?.last().map(|v| v.version).unwrap_or(0);
        if since > newest {
            Ok(Answer::Future { since, newest })
        } else if since == newest {
            Ok(Answer::Delta(CatalogDelta { from: since, to: newest, ..Default::default() }))
        } else {
            Ok(Answer::Delta(s.catalog_delta(since, newest)?))
        }
    })
    .await?
    .map_err(|e| ApiError::unavailable("cannot read the catalog", &e))?;
    match answer {
        Answer::Full(c) => Ok(axum::Json(json!({ "version": c.version, "updates": c.updates })).into_response()),
        Answer::Delta(d) => Ok(axum::Json(d).into_response()),
        Answer::Future { since, newest } => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "catalog version {since} is from the future; the newest is {newest}; fetch the full catalog (without since)"
            ),
        )),
    }
}

/// `GET /v1/content/{sha256}`: one content file of the library, by the sha256 the catalog
/// names (D5: clients fetch single files, never a whole package). Range requests resume
/// an interrupted download; the ETag is the sha256, so a client can check what it got.
async fn content_file(
    State(state): State<Shared>,
    axum::extract::Path(sha256): axum::extract::Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    authenticate(&state, request.headers()).await?;
    if !content::is_sha256(&sha256) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{sha256:?} is not a sha256; ask for a file by the 64 lower-case hex digits the catalog lists"),
        ));
    }
    let Some(library) = &state.config.content else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this management point serves no content; start it with --content-dir or download from the update's URL",
        ));
    };
    if !library.contains(&sha256) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("content {sha256} is not in the content library; the operator adds it with `patchops content add`"),
        ));
    }
    use tower::ServiceExt;
    let mut response = tower_http::services::ServeFile::new(library.path(&sha256))
        .oneshot(request)
        .await
        .map_err(|_| ApiError::internal("cannot read the content file"))?
        .map(Body::new);
    if let Ok(v) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    Ok(response)
}

/// `POST /v1/states`: apply a batch of the caller's state messages (S6); answered only
/// after the store committed it.
async fn states(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    // Refused before the body is read (an unknown client may not make the server read
    // 8 MiB): such answers close the connection.
    let unread = |e: ApiError| ApiError { close: true, ..e };
    let (owner, _) = authenticate(&state, &headers).await.map_err(unread)?;
    let client = owner.client.clone();
    let limit = state.config.max_batch_bytes;
    if let Some(length) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && length > limit as u64
    {
        state.metrics.batch("too_large");
        return Err(unread(too_large_bytes(length, limit)));
    }
    let raw = read_body(body, limit, state.config.body_timeout, "state batch").await.inspect_err(|e| {
        state.metrics.batch(if e.status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "unread" })
    })?;
    let batch: StateBatch = match serde_json::from_slice(&raw) {
        Ok(b) => b,
        Err(e) => {
            state.metrics.batch("malformed");
            let error = format!("the state batch is not valid JSON for a batch: {e}");
            // The store keeps the size and a bounded prefix only (REJECTED_PREFIX_BYTES).
            state.metrics.rejected(raw.len() as u64);
            let text = String::from_utf8_lossy(&raw).into_owned();
            let (who, what) = (client.clone(), error.clone());
            let kept = with_store(&state, "cannot keep the rejected batch", move |s| {
                s.record_rejected(&who, &text, &what, Timestamp::now())
            })
            .await?;
            if let Err(e) = kept {
                return Err(ApiError::unavailable("the batch is malformed and cannot be kept as rejected", &e));
            }
            tracing::warn!(client = %client, error = %error, "state batch rejected");
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{error}; it was kept as rejected (the client's states show Unknown until a valid batch)"),
            ));
        }
    };
    if batch.client != client {
        state.metrics.batch("forbidden");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("client {client} may not write states for client {}; send only your own states", batch.client),
        ));
    }
    if batch.messages.len() > state.config.max_batch_messages {
        state.metrics.batch("too_large");
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the state batch has {} messages, more than the limit of {}; split it into smaller batches",
                batch.messages.len(),
                state.config.max_batch_messages
            ),
        ));
    }
    let messages = batch.messages.len() as u64;
    let sequence = batch.sequence;
    let generation = Some(owner.generation);
    let outcome = state.commits.apply(&state.store, batch, generation).await?;
    match outcome {
        Ok(BatchOutcome::Applied) => {
            if let Some(site) = &state.config.site {
                site.wake();
            }
            state.metrics.batch("applied");
            state.metrics.messages(messages);
            tracing::debug!(client = %client, sequence, messages, "state batch applied");
            Ok(axum::Json(json!({ "outcome": "applied" })).into_response())
        }
        Ok(BatchOutcome::Duplicate) => {
            state.metrics.batch("duplicate");
            tracing::debug!(client = %client, sequence, "state batch replayed");
            Ok(axum::Json(json!({ "outcome": "duplicate" })).into_response())
        }
        Ok(BatchOutcome::TokenReplaced) => {
            state.metrics.batch("forbidden");
            forget_tokens(&state, &client);
            Err(ApiError::unauthorized(
                "the token was replaced, rotated or revoked (possibly through another management point); \
                 nothing was applied; register again",
            ))
        }
        Err(crate::Error::Store { error: error @ StoreError::UnknownUpdate { .. }, .. }) => {
            state.metrics.batch("unknown_update");
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{error}; nothing was applied; fetch the catalog, scan again and send a new batch"),
            ))
        }
        Err(crate::Error::Store { error: error @ StoreError::SequenceTooLarge { .. }, .. }) => {
            state.metrics.batch("invalid");
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{error}; nothing was applied")))
        }
        Err(crate::Error::Store { error: error @ StoreError::NotRegistered { .. }, .. }) => {
            state.metrics.batch("forbidden");
            forget_tokens(&state, &client);
            Err(ApiError::unauthorized(format!("{error}; nothing was applied")))
        }
        // Unreachable, failing or unreadable: the client keeps the batch and retries.
        Err(e) => {
            state.metrics.batch("store_error");
            Err(ApiError::unavailable("cannot apply the batch now (keep it spooled)", &e))
        }
    }
}

fn too_large_bytes(length: u64, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the state batch is {length} bytes, more than the limit of {limit}; split it into smaller batches"),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: ready when the store answers.
async fn readyz(State(state): State<Shared>) -> Response {
    let check = with_store(&state, "the store does not answer", |s| s.catalog_versions().map(|_| ()));
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(Ok(()))) => "ready".into_response(),
        Ok(Ok(Err(e))) => ApiError::unavailable("not ready: the store does not answer", &e).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store did not answer within {} seconds", READY_TIMEOUT.as_secs()),
        )
        .into_response(),
    }
}

async fn metrics_text(State(state): State<Shared>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(_) => ApiError::internal("cannot encode the metrics").into_response(),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} {}; the API is /v1/register, /v1/policy, /v1/catalog, /v1/states, /v1/content/{{sha256}} (openapi/patchops-v1.yaml)",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Count every request by route template and status.
async fn count_requests(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let response = next.run(request).await;
    state.metrics.request(route.as_deref().unwrap_or("unmatched"), response.status().as_u16());
    response
}

/// A management point on its own runtime thread (`simulate`, tests): started on an
/// address (port 0 picks one), stopped gracefully, restartable on the same address.
pub struct BackgroundServer {
    pub base: String,
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<crate::Result<()>>>,
}

impl BackgroundServer {
    pub fn start(
        addr: SocketAddr,
        store: &str,
        secret: &str,
        content_dir: Option<std::path::PathBuf>,
    ) -> crate::Result<Self> {
        let mut config = ServerConfig::new(secret);
        config.content = content_dir.as_deref().map(content::ContentLibrary::open).transpose()?;
        Self::start_with(addr, store, config)
    }

    /// [`BackgroundServer::start`] with a whole configuration (a site engine, read tokens).
    pub fn start_with(addr: SocketAddr, store: &str, config: ServerConfig) -> crate::Result<Self> {
        let shared: SharedStore = Arc::new(Mutex::new(crate::store::open(store)?));
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|e| crate::Error::Usage(format!("cannot listen on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| crate::Error::Runtime(format!("cannot read the listening address: {e}")))?;
        let base = format!("http://{addr}");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| crate::Error::Runtime(format!("cannot start the management point's runtime: {e}")))?;
            let keep = shared.clone();
            let served = rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| crate::Error::Runtime(format!("cannot listen on {addr}: {e}")))?;
                serve_listener(listener, shared, config, async move {
                    let _ = rx.await;
                })
                .await
            });
            drop(rt);
            drop(keep);
            served
        });
        Ok(BackgroundServer { base, addr, shutdown: Some(tx), thread: Some(thread) })
    }

    /// Stop accepting, finish the requests in flight, close the store.
    pub fn stop(mut self) -> crate::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(crate::Error::Runtime("the management point thread panicked (see the log)".into())),
            None => Ok(()),
        }
    }
}
