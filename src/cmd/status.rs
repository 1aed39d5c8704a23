//! `patchops status`: the last reconcile from the store; with `--at` (or `--repo`), the
//! compliance snapshot of the status branch as it was at a date.

use std::process::ExitCode;

use crate::git::RepoArgs;
use crate::output::OutputFormat;
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
    pub store: String,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Read the status branch of this repository (path or URL) instead of the store.
    #[arg(long)]
    pub repo: Option<String>,
    /// The status branch `patchops run --status-branch` writes.
    #[arg(long, default_value = crate::git::status::DEFAULT_BRANCH)]
    pub status_branch: String,
    /// The last status commit at or before this RFC 3339 date or date-time (default: now).
    #[arg(long, value_name = "DATE")]
    pub at: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.repo.is_some() || args.at.is_some() {
        return from_status_branch(args);
    }
    let store = crate::store::open_existing(&args.store)?;
    match store.last_reconcile()? {
        Some(record) => {
            crate::output::print_record(&record, args.output);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            Err(Error::Usage(format!("{} holds no reconcile yet; run `patchops run --once` first", store.location())))
        }
    }
}

fn from_status_branch(args: Args) -> Result<ExitCode> {
    let repo = RepoArgs { repo: args.repo.unwrap_or_else(|| ".".into()), rev: None, path: None };
    let at =
        args.at.map(|a| crate::git::audit::parse_date("--at", &a)).transpose()?.unwrap_or_else(jiff::Timestamp::now);
    let source = crate::git::git_source(&repo, &crate::process::state_dir());
    let status = crate::git::status::snapshot_at(&source, &args.status_branch, at)?;
    crate::git::status::print(&status, args.output);
    Ok(ExitCode::SUCCESS)
}
