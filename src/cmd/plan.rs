//! `patchops plan`: what merging a branch would change, as a pull-request comment, JSON or
//! a table. Exit 0 no change, 2 change, 1 an error or a new CompliancePolicy violation.

use std::process::ExitCode;

use jiff::Timestamp;

use crate::Result;
use crate::git::plan;

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
    let plan = plan::make(&args.inputs())?;
    match args.output {
        PlanFormat::Markdown => print!("{}", plan::markdown(&plan)),
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan).expect("plans serialize")),
        PlanFormat::Table => print!("{}", plan::table(&plan)),
    }
    Ok(plan.exit_code())
}

impl Args {
    /// Where the plan reads from.
    pub fn inputs(&self) -> plan::PlanInputs {
        plan::PlanInputs {
            repo: self.repo.clone(),
            base: self.base.clone(),
            head: self.head.clone(),
            path: self.path.clone(),
            store: self.store.clone(),
            now: self.now,
        }
    }
}
