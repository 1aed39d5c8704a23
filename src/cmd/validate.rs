//! `patchops validate`: check the desired state at a revision — every problem with file,
//! line, column and field — and every CompliancePolicy violation.

use std::process::ExitCode;

use crate::Result;
use crate::git::RepoArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Repository (same as --repo).
    pub repo_pos: Option<String>,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Store whose catalog deadline targets are checked against (skipped when absent).
    #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
    pub store: String,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args { repo_pos, mut repo, store } = args;
    if let Some(r) = repo_pos {
        repo.repo = r;
    }
    validate(&repo, &store)
}

fn validate(repo: &RepoArgs, store: &str) -> Result<ExitCode> {
    let source = crate::git::git_source(repo, &crate::process::state_dir());
    let (tree, desired) = crate::pipeline::load_desired(&source)?;
    let fetcher = crate::catalog::source::Fetcher::new(
        &crate::process::state_dir().join("catalog-cache"),
        std::time::Duration::from_secs(30),
    );
    let mut failed = false;
    for (_, result) in crate::catalog::sync::check_local_sources(&desired, (&source, tree.commit.as_str()), &fetcher) {
        if let Err(e) = result {
            failed = true;
            eprintln!("error: {e}");
        }
    }
    let counts = [
        ("UpdateCatalog", desired.catalogs.len()),
        ("Collection", desired.collections.len()),
        ("ClientSettings", desired.client_settings.len()),
        ("UpdateList", desired.update_lists.len()),
        ("DeploymentTemplate", desired.templates.len()),
        ("UpdateDeployment", desired.deployments.len()),
        ("DeploymentPackage", desired.packages.len()),
        ("DeploymentRule", desired.rules.len()),
        ("Waiver", desired.waivers.len()),
        ("CompliancePolicy", desired.compliance_policies.len()),
    ];
    let summary: Vec<String> = counts.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{n} {k}")).collect();
    if !desired.compliance_policies.is_empty() {
        let path = store.strip_prefix("sqlite://").unwrap_or(store);
        let catalog = if store.contains("://") && !store.starts_with("sqlite://") || std::path::Path::new(path).exists()
        {
            crate::store::open(store)?.load_catalog()?
        } else {
            crate::catalog::Catalog::default()
        };
        for v in crate::governance::policy::violations(&desired, &catalog, source.commit_time(&tree.commit)?) {
            failed = true;
            eprintln!("error: {v}");
        }
    }
    if failed {
        return Ok(ExitCode::from(1));
    }
    println!("{}: valid ({})", tree.revision, summary.join(", "));
    Ok(ExitCode::SUCCESS)
}
