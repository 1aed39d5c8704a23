//! `patchops serve`: the management point alone — the HTTP API agents register with, fetch
//! policy and the catalog from, and send state messages to — until SIGINT or SIGTERM. It
//! follows the site the engine (`patchops run`, the controller) publishes to the same store,
//! so policies, tokens, the read API and the console answer from memory.

use std::process::ExitCode;

use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
    pub store: String,
    #[command(flatten)]
    pub server: ServeArgs,
    /// Keep no compliance picture in memory: every policy and token is read from the store
    /// and the read API and console answer 503 (a small management point in front of a
    /// large site; by default it follows the site, about 10 bytes a compliance state).
    #[arg(long)]
    pub no_follow: bool,
}

/// The management point's command-line options (`serve`, and `run` which embeds it).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address the management point listens on.
    #[arg(long, env = "PATCHOPS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// The shared secret a client presents once to register and get its own token
    /// (without one, registration is refused). Prefer --enroll-secret-file or the
    /// environment variable: an argument shows in `ps`.
    #[arg(long, env = "PATCHOPS_ENROLL_SECRET", hide_env_values = true)]
    pub enroll_secret: Option<String>,
    /// A file holding the enrollment secret (its first line).
    #[arg(long, env = "PATCHOPS_ENROLL_SECRET_FILE", conflicts_with = "enroll_secret")]
    pub enroll_secret_file: Option<std::path::PathBuf>,
    /// Largest state batch accepted, in bytes.
    #[arg(long, default_value_t = crate::server::DEFAULT_MAX_BATCH_BYTES)]
    pub max_batch_bytes: usize,
    /// Most state messages accepted in one batch.
    #[arg(long, default_value_t = crate::server::DEFAULT_MAX_BATCH_MESSAGES)]
    pub max_batch_messages: usize,
    /// Content library served to clients (files named by sha256; `patchops content add`).
    #[arg(long, env = "PATCHOPS_CONTENT_DIR")]
    pub content_dir: Option<std::path::PathBuf>,
    /// Most connections open at once; more wait in the listen queue.
    #[arg(long, default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers.
    #[arg(long, default_value_t = crate::server::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub header_timeout: u64,
    /// Seconds a client has to send a request's whole body.
    #[arg(long, default_value_t = crate::server::DEFAULT_BODY_TIMEOUT.as_secs())]
    pub body_timeout: u64,
    /// A file of read tokens, one per line, for the read API (`patchops get`,
    /// `describe`) and the console; without it the read API answers nobody.
    #[arg(long, env = "PATCHOPS_READ_TOKEN_FILE")]
    pub read_token_file: Option<std::path::PathBuf>,
    /// Behind an authenticating proxy (oauth2-proxy, …): the request header that names
    /// the signed-in user, e.g. `X-Auth-Request-User`. A request carrying it may read the
    /// console and the read API without a read token, so set it only when the proxy is
    /// the one way in and strips the header from what clients send.
    #[arg(long, env = "PATCHOPS_UI_TRUSTED_HEADER", requires = "ui_listen")]
    pub ui_trusted_header: Option<String>,
    /// A second address serving only the console and the read API (what the proxy
    /// forwards to); agents keep --listen.
    #[arg(long, env = "PATCHOPS_UI_LISTEN")]
    pub ui_listen: Option<std::net::SocketAddr>,
}

impl ServeArgs {
    pub fn config(&self) -> crate::Result<crate::server::ServerConfig> {
        let secret = crate::secrets::secret(
            "the enrollment secret",
            self.enroll_secret.as_deref(),
            "--enroll-secret",
            self.enroll_secret_file.as_deref(),
        )?;
        let mut config = crate::server::ServerConfig::new(secret.unwrap_or_default());
        config.max_batch_bytes = self.max_batch_bytes;
        config.max_batch_messages = self.max_batch_messages;
        config.max_connections = self.max_connections;
        config.header_timeout = std::time::Duration::from_secs(self.header_timeout.max(1));
        config.body_timeout = std::time::Duration::from_secs(self.body_timeout.max(1));
        config.content = self.content_dir.as_deref().map(crate::content::ContentLibrary::open).transpose()?;
        config.ui_listen = self.ui_listen;
        if let Some(name) = &self.ui_trusted_header {
            config.ui_trusted_header = Some(
                axum::http::HeaderName::try_from(name.trim())
                    .map_err(|_| {
                        Error::Usage(format!(
                            "--ui-trusted-header {name:?} is not a header name; name the header your proxy sets, e.g. \
                             X-Auth-Request-User"
                        ))
                    })?
                    .to_string(),
            );
        }
        if let Some(path) = &self.read_token_file {
            // One token a line; blank lines and `#` comments skipped. Only the sha256 is kept.
            use sha2::Digest;
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.clone(), source })?;
            config.read_token_hashes = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|token| hex::encode(sha2::Sha256::digest(token.as_bytes())))
                .collect();
            if config.read_token_hashes.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: no read token in the file; write one token a line (e.g. `openssl rand -hex 32`)",
                    path.display()
                )));
            }
        }
        Ok(config)
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let store = crate::store::open(&args.store)?;
    let store = std::sync::Arc::new(std::sync::Mutex::new(store));
    let listen = args.server.listen;
    let mut config = args.server.config()?;
    let follower = (!args.no_follow).then(|| {
        let handle = crate::site::SiteHandle::default();
        config.site = Some(handle.clone());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = crate::site::follower::spawn(args.store.clone(), handle.clone(), stop.clone());
        (handle, stop, thread)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the runtime: {e}")))?;
    // Keep a handle here so the store is dropped outside the runtime: the PostgreSQL
    // client closes its connection synchronously.
    let keep = store.clone();
    let served = rt.block_on(crate::server::serve(listen, store, config, crate::process::shutdown_signal()));
    drop(rt);
    drop(keep);
    if let Some((handle, stop, thread)) = follower {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        handle.wake();
        let _ = thread.join();
    }
    served?;
    Ok(ExitCode::SUCCESS)
}
