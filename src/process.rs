//! What every command shares with its process: the state directory (clones, caches, the
//! default store), the default store's path, and the end of a long-running command on
//! SIGINT or SIGTERM.

use std::path::PathBuf;

/// The store every command opens unless `--store` or `PATCHOPS_STORE` names another.
pub const DEFAULT_STORE: &str = ".patchops/patchops.db";

/// Where clones and the default store live: `$PATCHOPS_STATE_DIR` or `.patchops`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("PATCHOPS_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".patchops"))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
