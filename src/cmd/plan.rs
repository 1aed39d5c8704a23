//! `patchops plan`: what merging a branch would change, as a pull-request comment, JSON or
//! a table. Exit 0 no change, 2 change, 1 an error or a new CompliancePolicy violation.

use std::process::ExitCode;

use jiff::Timestamp;

use crate::git::plan;
use crate::reconcile::previous_from;
use crate::{Error, Result};

/// How a plan is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// A pull-request comment.
    Markdown,
    Json,
    Table,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Git repository: a local path or a URL.
    #[arg(long, default_value = ".")]
    pub repo: String,
    /// The revision merged into (branch, tag or commit).
    #[arg(long, default_value = "main")]
    pub base: String,
    /// The revision proposed (the pull request's branch).
    #[arg(long)]
    pub head: String,
    /// Folder inside the repository holding the resources.
    #[arg(long)]
    pub path: Option<String>,
    /// Store with the current catalog and compliance: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
    pub store: String,
    #[arg(long, short, value_enum, default_value_t = PlanFormat::Markdown)]
    pub output: PlanFormat,
    /// Evaluate at this time (RFC 3339) instead of now, for reproducible plans.
    #[arg(long)]
    pub now: Option<Timestamp>,
}

/// `patchops plan`: print the plan; the exit code says whether merging changes anything.
pub fn run(args: &Args) -> Result<ExitCode> {
    let plan = make(args)?;
    match args.output {
        PlanFormat::Markdown => print!("{}", plan::markdown(&plan)),
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan).expect("plans serialize")),
        PlanFormat::Table => print!("{}", plan::table(&plan)),
    }
    Ok(plan.exit_code())
}

/// Read both revisions and the store, and compute the plan.
pub fn make(args: &Args) -> Result<plan::Plan> {
    let state = crate::process::state_dir();
    let source = |rev: &str| crate::git::GitSource {
        repo: args.repo.clone(),
        revision: Some(rev.to_string()),
        path: args.path.clone(),
        cache_dir: state.join("git-cache"),
    };
    let (base_tree, base) = crate::pipeline::load_desired(&source(&args.base)).inspect_err(|e| {
        if matches!(e, Error::InvalidDesiredState(_)) {
            eprintln!("error: the base revision {:?} is invalid; fix it first", args.base);
        }
    })?;
    let (head_tree, head) = crate::pipeline::load_desired(&source(&args.head)).inspect_err(|e| {
        if matches!(e, Error::InvalidDesiredState(_)) {
            eprintln!("error: the head revision {:?} is invalid; merging it would be rejected", args.head);
        }
    })?;
    let store = crate::store::open_existing(&args.store)?;
    let catalog = store.load_catalog()?;
    // Only the compliance of the updates the change touches is read.
    let fleet = store.load_fleet_for(&plan::needed_update_keys(&base, &head, &catalog))?;
    let last = store.last_reconcile()?;
    let previous = previous_from(last.as_ref().map(|r| r.statuses.as_slice()).unwrap_or(&[]));
    let world = plan::World {
        catalog: &catalog,
        fleet: &fleet,
        previous: &previous,
        now: args.now.unwrap_or_else(Timestamp::now),
    };
    let mut plan = plan::compute(&base, &head, &world);
    // Only what the branch brings: a violation the base already has is not this change's.
    use crate::governance::policy::violations;
    let key = |v: &crate::governance::policy::Violation| (v.resource.clone(), v.field.clone(), v.policy.clone());
    let before: std::collections::HashSet<_> =
        violations(&base, &catalog, source(&args.base).commit_time(&base_tree.commit)?).iter().map(key).collect();
    plan.violations = violations(&head, &catalog, source(&args.head).commit_time(&head_tree.commit)?)
        .into_iter()
        .filter(|v| !before.contains(&key(v)))
        .collect();
    Ok(plan)
}
