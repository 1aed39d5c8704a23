//! The web console at `/ui/`: static pages (HTML, CSS, plain JS modules and the vendored
//! uPlot) embedded in the binary, and the sign-in that turns a read token into a session
//! cookie. The pages hold no data: they read it from the read API (`/v1/read/...`) with
//! that cookie, so the console can show nothing the read API would not.
//!
//! A session is either the `patchops_read` cookie holding a read token (one of
//! `ServerConfig::read_token_hashes`, never a client token), or — behind an
//! authenticating proxy — the header `ServerConfig::ui_trusted_header` names.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{ServerConfig, Shared, sha256_hex};

/// The session cookie's name; its value is the read token itself.
pub const COOKIE: &str = super::read::READ_COOKIE;

/// What the browser may load and run: only this origin's files, no inline script or
/// style, no framing (the console shows fleet data; it must not be overlaid).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset { path: $path, content_type: $type, bytes: include_bytes!(concat!("../../assets/ui/", $path)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The files behind the session (the sign-in page, its stylesheet and the icon are served before).
static ASSETS: &[Asset] = &[
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("table.js", JS),
    asset!("pages.js", JS),
    asset!("style.css", CSS),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", CSS),
];

const INDEX: &str = include_str!("../../assets/ui/index.html");
const LOGIN: &str = include_str!("../../assets/ui/login.html");
const LOGIN_CSS: &[u8] = include_bytes!("../../assets/ui/login.css");
const FAVICON: &[u8] = include_bytes!("../../assets/ui/favicon.svg");

/// Each asset's ETag: the start of its sha256, computed once.
static ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| format!("\"{}\"", &sha256_hex(a.bytes)[..16])).collect());

/// The console's routes, merged into the management point's router.
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/login", post(login).get(|| async { redirect("/ui/") }))
        .route("/ui/logout", post(logout))
        .route(
            "/ui/login.css",
            get(|| async { with_security(([(header::CONTENT_TYPE, CSS)], LOGIN_CSS).into_response()) }),
        )
        .route(
            "/ui/favicon.svg",
            get(|| async { with_security(([(header::CONTENT_TYPE, "image/svg+xml")], FAVICON).into_response()) }),
        )
        .route("/ui/{*path}", get(asset))
}

/// Who is looking: the read API and the console answer only a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// The `patchops_read` cookie or a bearer token holds a read token.
    ReadToken,
    /// The authenticating proxy's header named this user.
    Proxy(String),
}

/// The request's session: a read token in the cookie or the Authorization header, or
/// the trusted proxy header. None: sign in first.
pub fn viewer(config: &ServerConfig, headers: &HeaderMap) -> Option<Viewer> {
    if let Some(user) = super::read::proxy_user(config, headers) {
        return Some(Viewer::Proxy(user));
    }
    let token = super::read::presented_token(headers).ok().flatten()?;
    is_read_token(config, &token).then_some(Viewer::ReadToken)
}

/// Whether `token` is one of the read tokens (every configured hash compared in full).
pub fn is_read_token(config: &ServerConfig, token: &str) -> bool {
    !token.is_empty() && super::read::known_hash(&sha256_hex(token.as_bytes()), &config.read_token_hashes)
}

/// Whether the browser reached us over https (directly or through a proxy that says so):
/// the cookie is then marked Secure.
fn over_https(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    header("x-forwarded-proto").split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        || header("forwarded").split([';', ',']).any(|p| p.trim().eq_ignore_ascii_case("proto=https"))
}

/// The headers every console answer carries.
fn with_security(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn redirect(to: &'static str) -> Response {
    with_security((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
}

fn html(status: StatusCode, body: String) -> Response {
    with_security(
        (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body)
            .into_response(),
    )
}

/// The sign-in page, with a message (escaped) above the form.
fn sign_in_page(status: StatusCode, message: &str) -> Response {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>", escape(message))
    };
    html(status, LOGIN.replace("<!--message-->", &message))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `GET /ui/`: the console with a session, the sign-in page without.
async fn index(State(state): State<Shared>, headers: HeaderMap) -> Response {
    match viewer(&state.config, &headers) {
        Some(who) => {
            let user = match &who {
                Viewer::ReadToken => "read token".to_string(),
                Viewer::Proxy(user) => user.clone(),
            };
            let signed_out = matches!(who, Viewer::ReadToken);
            html(
                StatusCode::OK,
                INDEX
                    .replace("{{user}}", &escape(&user))
                    .replace("{{logout}}", if signed_out { "" } else { " hidden" }),
            )
        }
        None => sign_in_page(StatusCode::OK, ""),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /ui/login` (form `token=`): a read token becomes the session cookie; anything
/// else (a wrong token, a client's token) gets the sign-in page again with 401.
async fn login(
    State(state): State<Shared>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let token = form.map(|f| f.0.token).unwrap_or_default();
    let token = token.trim();
    if state.config.read_token_hashes.is_empty() {
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            "This management point has no read tokens, so nobody can sign in. The operator adds one \
             (patchops serve --read-token-file) and restarts it.",
        );
    }
    // A token is sent back in a header only if it is a valid cookie value (it is checked
    // against the hashes first, so this only keeps odd bytes out of Set-Cookie).
    let cookie_safe = token.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'));
    if !cookie_safe || !is_read_token(&state.config, token) {
        tracing::warn!("console sign-in refused: not a read token");
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            "That is not a read token of this management point. Client tokens cannot sign in; ask the \
             operator for a read token.",
        );
    }
    let secure = if over_https(&headers) { "; Secure" } else { "" };
    let set = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let Ok(set) = HeaderValue::from_str(&set) else {
        return sign_in_page(StatusCode::BAD_REQUEST, "The token cannot be kept in a cookie.");
    };
    let mut response = redirect("/ui/");
    response.headers_mut().insert(header::SET_COOKIE, set);
    response
}

/// `POST /ui/logout`: the cookie is cleared (a proxy's own session is the proxy's).
async fn logout(headers: HeaderMap) -> Response {
    let secure = if over_https(&headers) { "; Secure" } else { "" };
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}");
    let mut response = redirect("/ui/");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `GET /ui/{path}`: an embedded file, with a session only.
async fn asset(State(state): State<Shared>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    if viewer(&state.config, &headers).is_none() {
        return with_security(
            (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
                "sign in at /ui/ first\n",
            )
                .into_response(),
        );
    }
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return with_security(
            (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such console file\n")
                .into_response(),
        );
    };
    let (asset, etag) = (&ASSETS[i], ETAGS[i].as_str());
    let matches = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == etag);
    let head = [
        (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        // Private: behind the session; revalidated, so a new binary's files show at once.
        (header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache")),
        (header::ETAG, HeaderValue::from_str(etag).expect("hex")),
    ];
    if matches {
        return with_security((StatusCode::NOT_MODIFIED, head).into_response());
    }
    with_security((head, asset.bytes).into_response())
}

#[cfg(test)]
mod test {
    use super::*;

    fn config(tokens: &[&str]) -> ServerConfig {
        let mut c = ServerConfig::new("secret");
        c.read_token_hashes = tokens.iter().map(|t| sha256_hex(t.as_bytes())).collect();
        c
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_read_token_in_the_cookie_or_bearer_is_a_session_and_nothing_else_is() {
        let c = config(&["reader-1", "reader-2"]);
        assert_eq!(viewer(&c, &headers(&[("cookie", "a=b; patchops_read=reader-2")])), Some(Viewer::ReadToken));
        assert_eq!(viewer(&c, &headers(&[("authorization", "Bearer reader-1")])), Some(Viewer::ReadToken));
        assert_eq!(viewer(&c, &headers(&[("cookie", "patchops_read=client-token")])), None);
        assert_eq!(viewer(&c, &headers(&[("cookie", "patchops_read=")])), None);
        assert_eq!(viewer(&c, &headers(&[])), None);
        assert_eq!(viewer(&config(&[]), &headers(&[("cookie", "patchops_read=reader-1")])), None);
    }

    #[test]
    fn the_trusted_header_signs_in_only_when_configured_and_not_empty() {
        let mut c = config(&[]);
        let h = headers(&[("x-auth-request-user", "alice")]);
        assert_eq!(viewer(&c, &h), None);
        c.ui_trusted_header = Some("X-Auth-Request-User".into());
        assert_eq!(viewer(&c, &h), Some(Viewer::Proxy("alice".into())));
        assert_eq!(viewer(&c, &headers(&[("x-auth-request-user", " ")])), None);
    }

    #[test]
    fn hashes_match_whatever_their_case_or_surrounding_space() {
        let mut c = config(&[]);
        c.read_token_hashes = vec![format!(" {} ", sha256_hex(b"reader").to_uppercase())];
        assert!(is_read_token(&c, "reader"));
        assert!(!is_read_token(&c, "Reader"));
    }

    #[test]
    fn https_is_read_from_the_proxy_headers() {
        assert!(over_https(&headers(&[("x-forwarded-proto", "https")])));
        assert!(over_https(&headers(&[("forwarded", "for=1.2.3.4;proto=https")])));
        assert!(!over_https(&headers(&[("x-forwarded-proto", "http")])));
        assert!(!over_https(&headers(&[])));
    }

    #[test]
    fn every_embedded_file_is_listed_once() {
        let mut paths: Vec<_> = ASSETS.iter().map(|a| a.path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
        assert!(INDEX.contains("app.js") && LOGIN.contains("<!--message-->"));
    }
}
