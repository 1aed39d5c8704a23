//! `patchops audit`: who approved or withdrew which update into which deployment, when,
//! in which commit and merged pull request, from the branch's history.

use std::process::ExitCode;

use crate::Result;
use crate::git::audit;
use crate::output::OutputFormat;

/// `patchops audit` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub repo: crate::git::RepoArgs,
    /// Only this update (as the update list writes it, e.g. KB5032189; case-insensitive). Repeatable.
    #[arg(long = "update", value_name = "ID")]
    pub updates: Vec<String>,
    /// Only this UpdateDeployment.
    #[arg(long)]
    pub deployment: Option<String>,
    /// Only changes committed at or after this time: an RFC 3339 date (2026-11-01, midnight UTC)
    /// or date-time (2026-11-01T09:30:00Z).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `patchops audit`.
pub fn run(args: Args) -> Result<ExitCode> {
    let source = crate::git::git_source(&args.repo, &crate::process::state_dir());
    let query = audit::AuditQuery {
        updates: args.updates.clone(),
        deployment: args.deployment.clone(),
        since: args.since.as_deref().map(audit::parse_since).transpose()?,
    };
    let report = audit::audit(&source, &query)?;
    audit::print(&report, args.output);
    Ok(ExitCode::SUCCESS)
}
