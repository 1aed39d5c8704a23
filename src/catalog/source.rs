//! Fetching a catalog source: a file, an http(s) URL, or a file in a git repository.
//! URL bodies are cached on disk with their ETag and Last-Modified, so an unchanged
//! source costs a conditional request (304) and no download; transient failures (a
//! refused connection, a timeout, a 5xx) are retried with exponential backoff.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::git::GitSource;
use crate::resources::{CatalogSource, GitCatalogSource};
use crate::{Error, Result};

/// The bytes of a source and where they came from.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The source as errors name it: a path, a URL, or `url@revision:path`.
    pub name: String,
    pub bytes: Vec<u8>,
    /// The git revision read (git sources only).
    pub revision: Option<String>,
    /// True when an http source answered 304 Not Modified (the cached body is returned).
    pub not_modified: bool,
}

/// What is cached next to a URL's body.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CacheMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// Fetches sources; one per sync so the HTTP connection pool is shared.
pub struct Fetcher {
    cache_dir: PathBuf,
    agent: ureq::Agent,
    /// Attempts per URL (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Largest body accepted.
    pub max_bytes: u64,
}

impl Fetcher {
    /// `cache_dir` holds cached URL bodies and git clones.
    pub fn new(cache_dir: &Path, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("patchops/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Fetcher {
            cache_dir: cache_dir.to_path_buf(),
            agent,
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_bytes: 2 << 30,
        }
    }

    /// Fetch a source. `path` sources are read from the desired-state repository at the
    /// commit being applied (`desired`: the repository, its commit and the folder the
    /// resources are in, which `path` is relative to).
    pub fn fetch(&self, source: &CatalogSource, desired: Option<(&GitSource, &str)>) -> Result<Fetched> {
        if let Some(p) = &source.path {
            let (git, commit) = desired.ok_or_else(|| Error::Catalog {
                source_name: p.clone(),
                message: "a path source is read from the desired-state repository; use file: for a local file".into(),
            })?;
            let full = match git.path.as_deref().map(|s| s.trim_matches('/')).filter(|s| !s.is_empty()) {
                Some(base) => format!("{base}/{p}"),
                None => p.clone(),
            };
            let bytes = git.read_file(commit, &full)?.ok_or_else(|| Error::Catalog {
                source_name: full.clone(),
                message: format!(
                    "not found at commit {commit}; check spec.source.path (relative to the resources folder)"
                ),
            })?;
            return Ok(Fetched { name: full, bytes, revision: None, not_modified: false });
        }
        if let Some(f) = &source.file {
            return self.fetch_file(Path::new(f));
        }
        if let Some(url) = &source.url {
            return self.fetch_url(url);
        }
        if let Some(g) = &source.git {
            return self.fetch_git(g);
        }
        Err(Error::Catalog { source_name: "source".into(), message: "give one of path, file, url, git".into() })
    }

    pub fn fetch_file(&self, path: &Path) -> Result<Fetched> {
        let bytes = std::fs::read(path).map_err(|e| Error::Catalog {
            source_name: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Ok(Fetched { name: path.display().to_string(), bytes, revision: None, not_modified: false })
    }

    fn fetch_git(&self, g: &GitCatalogSource) -> Result<Fetched> {
        let git = GitSource {
            repo: g.url.clone(),
            revision: g.revision.clone(),
            path: None,
            cache_dir: self.cache_dir.join("git"),
        };
        let (revision, commit) = git.resolve_revision()?;
        let name = format!("{}@{revision}:{}", g.url, g.path);
        let bytes = git.read_file(&commit, &g.path)?.ok_or_else(|| Error::Catalog {
            source_name: name.clone(),
            message: "file not found in the repository at that revision; check spec.source.git.path".into(),
        })?;
        Ok(Fetched { name, bytes, revision: Some(revision), not_modified: false })
    }

    fn cache_paths(&self, url: &str) -> (PathBuf, PathBuf) {
        let key = hex::encode(&Sha256::digest(url.as_bytes())[..12]);
        let dir = self.cache_dir.join("http");
        (dir.join(format!("{key}.body")), dir.join(format!("{key}.json")))
    }

    /// GET with If-None-Match / If-Modified-Since from the cache; retries transient
    /// failures. The cache is written only after a complete, successful download.
    pub fn fetch_url(&self, url: &str) -> Result<Fetched> {
        let fail = |message: String| Error::Catalog { source_name: url.to_string(), message };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(fail("only http:// and https:// URLs are supported; use file: for local files".into()));
        }
        let (body_path, meta_path) = self.cache_paths(url);
        let cached: Option<(CacheMeta, Vec<u8>)> = std::fs::read(&meta_path)
            .ok()
            .and_then(|m| serde_json::from_slice::<CacheMeta>(&m).ok())
            .filter(|m| m.url == url)
            .and_then(|m| std::fs::read(&body_path).ok().map(|b| (m, b)));
        let mut wait = self.backoff;
        let mut last_error = String::new();
        for attempt in 1..=self.attempts.max(1) {
            let mut request = self.agent.get(url);
            if let Some((meta, _)) = &cached {
                if let Some(etag) = &meta.etag {
                    request = request.header("If-None-Match", etag);
                }
                if let Some(lm) = &meta.last_modified {
                    request = request.header("If-Modified-Since", lm);
                }
            }
            match request.call() {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    if status == 304
                        && let Some((_, body)) = cached
                    {
                        debug!(url, "not modified");
                        return Ok(Fetched { name: url.to_string(), bytes: body, revision: None, not_modified: true });
                    }
                    if (200..300).contains(&status) {
                        let header =
                            |h: &str| response.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
                        let meta = CacheMeta {
                            url: url.to_string(),
                            etag: header("etag"),
                            last_modified: header("last-modified"),
                        };
                        let bytes = response
                            .body_mut()
                            .with_config()
                            .limit(self.max_bytes)
                            .read_to_vec()
                            .map_err(|e| fail(format!("reading the response failed: {e}")));
                        match bytes {
                            Ok(bytes) => {
                                self.write_cache(&body_path, &meta_path, &meta, &bytes);
                                return Ok(Fetched {
                                    name: url.to_string(),
                                    bytes,
                                    revision: None,
                                    not_modified: false,
                                });
                            }
                            Err(e) => last_error = e.to_string(),
                        }
                    } else if status >= 500 || status == 429 {
                        last_error = format!("the server answered {status}");
                    } else {
                        return Err(fail(format!(
                            "the server answered {status}; check spec.source.url (and credentials, if it needs them)"
                        )));
                    }
                }
                Err(e) => last_error = format!("request failed: {e}"),
            }
            if attempt < self.attempts {
                warn!(url, attempt, error = %last_error, "catalog download failed; retrying in {:?}", wait);
                std::thread::sleep(wait);
                wait *= 2;
            }
        }
        Err(fail(format!(
            "{last_error} (after {} attempts); the previous catalog version stays current",
            self.attempts.max(1)
        )))
    }

    fn write_cache(&self, body_path: &Path, meta_path: &Path, meta: &CacheMeta, bytes: &[u8]) {
        // Best effort: a cache that cannot be written only costs a full download next time.
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(body_path.parent().expect("cache paths have a parent"))?;
            let tmp = body_path.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, body_path)?;
            std::fs::write(meta_path, serde_json::to_vec(meta).expect("metadata serializes"))
        };
        if let Err(e) = write() {
            warn!(path = %body_path.display(), error = %e, "cannot cache the catalog download");
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// One scripted answer: the raw response for a request, or None to hang.
    type Respond = Box<dyn Fn(&str) -> Option<String> + Send>;

    /// A loopback HTTP server answering scripted responses, recording each request.
    struct Server {
        url: String,
        requests: Arc<Mutex<Vec<String>>>,
    }

    fn serve(responses: Vec<Respond>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/catalog.yaml", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for (respond, stream) in responses.into_iter().zip(listener.incoming()) {
                let mut stream = stream.unwrap();
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                seen.lock().unwrap().push(request.clone());
                match respond(&request) {
                    Some(response) => {
                        let _ = stream.write_all(response.as_bytes());
                    }
                    None => std::thread::sleep(Duration::from_millis(1500)), // hang
                }
            }
        });
        Server { url, requests }
    }

    fn ok(body: &str, etag: &str) -> String {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n{body}", body.len())
    }

    fn fetcher(dir: &Path) -> Fetcher {
        let mut f = Fetcher::new(dir, Duration::from_millis(500));
        f.backoff = Duration::from_millis(10);
        f
    }

    #[test]
    fn o2_an_unchanged_url_is_not_downloaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(vec![
            Box::new(|_| Some(ok("updates: []", "\"v1\""))),
            Box::new(|r: &str| {
                assert!(r.to_ascii_lowercase().contains("if-none-match: \"v1\""), "{r}");
                Some("HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_string())
            }),
        ]);
        let f = fetcher(dir.path());
        let first = f.fetch_url(&server.url).unwrap();
        assert_eq!(first.bytes, b"updates: []");
        assert!(!first.not_modified);
        let second = f.fetch_url(&server.url).unwrap();
        assert!(second.not_modified);
        assert_eq!(second.bytes, b"updates: []", "the cached body");
        assert_eq!(server.requests.lock().unwrap().len(), 2);
    }

    #[test]
    fn server_errors_are_retried_with_backoff_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(vec![
            Box::new(|_| {
                Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into())
            }),
            Box::new(|_| Some(ok("updates: []", "\"v2\""))),
        ]);
        let f = fetcher(dir.path());
        assert_eq!(f.fetch_url(&server.url).unwrap().bytes, b"updates: []");

        let always_500: Vec<Respond> = (0..4)
            .map(|_| {
                Box::new(|_: &str| {
                    Some(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string(),
                    )
                }) as Respond
            })
            .collect();
        let server = serve(always_500);
        let err = f.fetch_url(&server.url).unwrap_err().to_string();
        assert!(err.contains(&server.url) && err.contains("500") && err.contains("after 4 attempts"), "{err}");
    }

    #[test]
    fn a_hanging_server_times_out_and_a_404_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let hangs: Vec<Respond> = vec![Box::new(|_| None), Box::new(|_| None)];
        let server = serve(hangs);
        let mut f = fetcher(dir.path());
        f.attempts = 2;
        let started = std::time::Instant::now();
        let err = f.fetch_url(&server.url).unwrap_err().to_string();
        assert!(err.contains("after 2 attempts"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let server = serve(vec![Box::new(|_| {
            Some("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into())
        })]);
        let err = f.fetch_url(&server.url).unwrap_err().to_string();
        assert!(err.contains("404") && err.contains("check spec.source.url"), "{err}");
        assert_eq!(server.requests.lock().unwrap().len(), 1);
    }
}
