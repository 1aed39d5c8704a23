//! The agent's side of the management point API (`/v1`): register, policy with ETag,
//! catalog in full or as a delta, state batches, content files with resume. Errors are
//! sorted by what the agent should do next: retry later, register again, or give up on
//! this request and say why.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::catalog::Update;
use crate::catalog::delta::CatalogDelta;
use crate::compliance::messages::StateBatch;
use crate::reconcile::policy::ClientPolicy;

/// Why a call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Not reachable, timed out, 5xx or 429: try again later; nothing was lost.
    #[error("the management point cannot be reached: {0}")]
    Unreachable(String),
    /// 401: the token is not (or no longer) valid; register again.
    #[error("the management point refused the token: {0}")]
    Unauthorized(String),
    /// Any other 4xx: the request itself is wrong; repeating it will not help.
    #[error("the management point refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// Downloaded content does not match the sha256 the catalog names.
    #[error("content {expected} arrived with sha256 {actual}; the partial file was discarded")]
    WrongHash { expected: String, actual: String },
}

/// What `GET /v1/policy` answered.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyAnswer {
    /// A policy different from the one named by the ETag sent.
    New(Box<ClientPolicy>, String),
    /// 304: the client's copy is current.
    NotModified,
    /// 404: the reconciler has not assigned this client a policy yet.
    NotYet,
}

/// What `GET /v1/catalog` answered.
#[derive(Clone, Debug, PartialEq)]
pub enum CatalogAnswer {
    Full { version: u64, updates: Vec<Update> },
    Delta(CatalogDelta),
}

/// A management point at a base URL.
#[derive(Clone, Debug)]
pub struct ManagementPoint {
    pub base: String,
    http: ureq::Agent,
}

fn transport(e: ureq::Error) -> CallError {
    CallError::Unreachable(e.to_string())
}

impl ManagementPoint {
    pub fn new(base: &str) -> Self {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        ManagementPoint { base: base.trim_end_matches('/').to_string(), http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Turn a non-success answer into the error the agent acts on.
    fn failure(mut response: ureq::http::Response<ureq::Body>) -> CallError {
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.chars().take(300).collect());
        match status {
            401 => CallError::Unauthorized(message),
            429 | 500..=599 => CallError::Unreachable(format!("{status}: {message}")),
            _ => CallError::Rejected { status, message },
        }
    }

    /// `POST /v1/register`: the client's own token.
    pub fn register(
        &self,
        name: &str,
        facts: &BTreeMap<String, String>,
        agent_version: &str,
        enroll_secret: &str,
    ) -> Result<String, CallError> {
        let body =
            json!({ "name": name, "facts": facts, "agentVersion": agent_version, "enrollSecret": enroll_secret });
        let mut response = self
            .http
            .post(self.url("/v1/register"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(Self::failure(response));
        }
        let v: Value = read_json_limited(&mut response, 64 * 1024)?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| CallError::Unreachable("registration without a token".into()))
    }

    /// `GET /v1/policy` with `If-None-Match`.
    pub fn policy(&self, token: &str, etag: Option<&str>) -> Result<PolicyAnswer, CallError> {
        let mut request = self.http.get(self.url("/v1/policy")).header("Authorization", format!("Bearer {token}"));
        if let Some(e) = etag {
            request = request.header("If-None-Match", format!("\"{e}\""));
        }
        let mut response = request.call().map_err(transport)?;
        match response.status().as_u16() {
            304 => Ok(PolicyAnswer::NotModified),
            404 => Ok(PolicyAnswer::NotYet),
            200 => {
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim_matches('"').to_string())
                    .unwrap_or_default();
                let policy: ClientPolicy = read_json_limited(&mut response, MAX_POLICY_BYTES)?;
                Ok(PolicyAnswer::New(Box::new(policy), etag))
            }
            _ => Err(Self::failure(response)),
        }
    }

    /// `GET /v1/catalog[?since=V]`.
    pub fn catalog(&self, token: &str, since: Option<u64>) -> Result<CatalogAnswer, CallError> {
        let path = match since {
            Some(v) => format!("/v1/catalog?since={v}"),
            None => "/v1/catalog".to_string(),
        };
        let mut response = self
            .http
            .get(self.url(&path))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(Self::failure(response));
        }
        expect_json(&response)?;
        let reader = response.body_mut().with_config().limit(MAX_CATALOG_BYTES).reader();
        if since.is_some() {
            let delta: CatalogDelta =
                serde_json::from_reader(std::io::BufReader::new(reader)).map_err(|e| transport_json(&e))?;
            Ok(CatalogAnswer::Delta(delta))
        } else {
            #[derive(serde::Deserialize)]
            struct Full {
                version: u64,
                updates: Vec<Update>,
            }
            let full: Full =
                serde_json::from_reader(std::io::BufReader::new(reader)).map_err(|e| transport_json(&e))?;
            Ok(CatalogAnswer::Full { version: full.version, updates: full.updates })
        }
    }

    /// `POST /v1/states`: Ok once the server answered that the batch is durable (applied
    /// now or earlier: a replay of an applied sequence counts as delivered).
    pub fn post_states(&self, token: &str, batch: &StateBatch) -> Result<(), CallError> {
        let body = serde_json::to_string(batch).expect("batches serialize");
        let response = self
            .http
            .post(self.url("/v1/states"))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(transport)?;
        if response.status().is_success() { Ok(()) } else { Err(Self::failure(response)) }
    }

    /// `GET /v1/content/{sha256}` into `dest`. A partial `dest.part` from an interrupted
    /// download is resumed with a Range request; the whole file must hash to `sha256`,
    /// or it is discarded and the download counts as failed.
    pub fn download(&self, token: &str, sha256: &str, dest: &Path) -> Result<u64, CallError> {
        let part = dest.with_extension("part");
        let io = |e: std::io::Error| CallError::Unreachable(format!("{}: {e}", part.display()));
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let mut request = self
            .http
            .get(self.url(&format!("/v1/content/{sha256}")))
            .header("Authorization", format!("Bearer {token}"));
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let mut response = request.call().map_err(transport)?;
        let append = match response.status().as_u16() {
            206 => true,
            200 => false,
            // The partial file is already whole (or longer than the content): start over.
            416 => {
                let _ = std::fs::remove_file(&part);
                return Err(CallError::Unreachable("the partial download did not fit; starting over".into()));
            }
            _ => return Err(Self::failure(response)),
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&part)
            .map_err(io)?;
        let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        drop(file);
        let (actual, size) = crate::content::hash_reader(std::fs::File::open(&part).map_err(io)?).map_err(io)?;
        if actual != sha256 {
            let _ = std::fs::remove_file(&part);
            return Err(CallError::WrongHash { expected: sha256.to_string(), actual });
        }
        std::fs::rename(&part, dest).map_err(io)?;
        Ok(size)
    }
}

/// Largest policy document the agent reads (a policy is kilobytes; more is not a policy).
const MAX_POLICY_BYTES: u64 = 16 << 20;
/// Largest catalog the agent reads.
const MAX_CATALOG_BYTES: u64 = 1 << 30;

fn read_json_limited<T: serde::de::DeserializeOwned>(
    response: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<T, CallError> {
    expect_json(response)?;
    let reader = response.body_mut().with_config().limit(limit).reader();
    serde_json::from_reader(std::io::BufReader::new(reader)).map_err(|e| transport_json(&e))
}

/// The management point answers JSON; anything else (an HTML page from a proxy or a
/// captive portal) is said as such instead of as a parse error.
fn expect_json(response: &ureq::http::Response<ureq::Body>) -> Result<(), CallError> {
    let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if kind.is_empty() || kind.contains("json") {
        return Ok(());
    }
    Err(CallError::Unreachable(format!(
        "the answer is {kind}, not JSON; is the server URL the management point (not a proxy or a web page)?"
    )))
}

fn transport_json(e: &serde_json::Error) -> CallError {
    let what = if e.is_io() { "could not be read" } else { "is not the JSON the API promises" };
    CallError::Unreachable(format!("the answer {what}: {e}"))
}

/// sha256 of a file already on disk (a cached download).
pub fn file_sha256(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    crate::content::hash_reader(file).ok().map(|(h, _)| h)
}
