//! patchops: ConfigMgr's software-update process (catalog synchronization, compliance
//! scanning, update preparation, update distribution) as a declarative GitOps reconciler.
//!
//! Data flows one way: sources (git desired state, catalog sources, client state
//! messages) → store → the pure reconcile core → outputs (client policies, resource
//! status) → drivers that carry them.

pub mod agent;
pub mod bench;
pub mod catalog;
pub mod cmd;
pub mod compliance;
pub mod content;
pub mod desired;
pub mod git;
pub mod governance;
pub mod kubernetes;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod pipeline;
pub mod process;
pub mod reconcile;
pub mod resources;
pub mod secrets;
pub mod server;
pub mod sim;
pub mod site;
pub mod store;
pub mod time;
pub mod yaml;

use std::path::PathBuf;

/// One crate-wide error type. Variants are named by what went wrong for the user, and
/// every message says where (file, line, field; or client and message) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Desired state failed validation; each problem names its file, line and field.
    #[error("{} problem(s) in the desired state:\n{}", .0.len(), crate::desired::render_problems(.0))]
    InvalidDesiredState(Vec<desired::Problem>),

    #[error("git repository {repo}: {message}")]
    Git {
        repo: String,
        message: String,
        #[source]
        source: Option<git2::Error>,
    },

    #[error("UpdateCatalog {source_name:?}: {message}")]
    Catalog { source_name: String, message: String },

    /// A store call failed; `error` says how (match on it to decide what to do next).
    #[error("store {location}: {error}")]
    Store {
        location: String,
        #[source]
        error: store::StoreError,
    },

    #[error("{scanner} scanner: {message}")]
    Scan { scanner: String, message: String },

    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The command was used wrongly (a flag, an argument, a file given): the message
    /// says what to change.
    #[error("{0}")]
    Usage(String),

    /// Something failed while running that the user did not get wrong: a runtime or
    /// thread that did not start, a lost leadership lease, an unreachable API.
    #[error("{0}")]
    Runtime(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidDesiredState(_) => "invalid_desired_state",
            Error::Git { .. } => "git",
            Error::Catalog { .. } => "catalog",
            Error::Store { .. } => "store",
            Error::Scan { .. } => "scan",
            Error::Io { .. } => "io",
            Error::Usage(_) => "usage",
            Error::Runtime(_) => "runtime",
        }
    }

    /// The store at `location` failed a statement or connection while doing `message`.
    pub fn store(
        location: impl Into<String>,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        store::StoreError::unavailable(message, source).at(location)
    }

    pub fn git(repo: impl Into<String>, message: impl Into<String>, source: git2::Error) -> Self {
        Error::Git { repo: repo.into(), message: message.into(), source: Some(source) }
    }
}
