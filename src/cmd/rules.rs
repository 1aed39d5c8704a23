//! `patchops rules run`: run every DeploymentRule against the store's catalog now and put
//! the proposals on branches (and pull requests) of the repository, never deployed until
//! merged. `RuleArgs` are the forge options `run --propose-rules` shares.

use std::path::Path;
use std::process::ExitCode;

use jiff::Timestamp;

use crate::git::rules::{Forge, Proposer};
use crate::reconcile::previous_from;
use crate::{Error, Result};

/// Where proposals go and whether a pull request is opened for them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RuleArgs {
    /// Push proposal branches to this remote of the repository (e.g. origin).
    #[arg(long = "rules-push")]
    pub push: Option<String>,
    /// Open a GitHub pull request for each proposal in this repository (owner/name).
    #[arg(long, conflicts_with = "gitlab_project")]
    pub github_repo: Option<String>,
    /// Open a GitLab merge request for each proposal in this project (id or group/name).
    #[arg(long)]
    pub gitlab_project: Option<String>,
    /// REST API base URL (default https://api.github.com or https://gitlab.com/api/v4).
    #[arg(long)]
    pub forge_api_url: Option<String>,
    /// API token for pull requests.
    #[arg(long, env = "PATCHOPS_FORGE_TOKEN", hide_env_values = true)]
    pub forge_token: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum RulesCommand {
    /// Run every DeploymentRule against the current catalog now: one branch per rule
    /// with matching updates that no deployment deploys yet.
    Run {
        /// Local git repository holding the desired state.
        #[arg(long, default_value = ".")]
        repo: String,
        /// Branch proposals start from and pull requests target (default: HEAD's branch).
        #[arg(long)]
        base: Option<String>,
        /// Folder inside the repository holding the resources.
        #[arg(long)]
        path: Option<String>,
        /// Store with the synced catalog and compliance: a SQLite file path or a postgres:// URL.
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
        store: String,
        #[command(flatten)]
        options: RuleArgs,
    },
}

impl RuleArgs {
    /// The forge to open pull requests on, if one is configured.
    pub fn forge(&self) -> Result<Option<Forge>> {
        let token = || {
            self.forge_token.clone().filter(|t| !t.is_empty()).ok_or_else(|| {
                Error::Usage("opening pull requests needs a token: set PATCHOPS_FORGE_TOKEN or --forge-token".into())
            })
        };
        let api = |default: &str| self.forge_api_url.clone().unwrap_or_else(|| default.to_string());
        Ok(match (&self.github_repo, &self.gitlab_project) {
            (Some(repo), _) => {
                if repo.split('/').count() != 2 {
                    return Err(Error::Usage(format!("--github-repo {repo:?}: give owner/name")));
                }
                Some(Forge::GitHub { api_url: api("https://api.github.com"), repo: repo.clone(), token: token()? })
            }
            (None, Some(project)) => Some(Forge::GitLab {
                api_url: api("https://gitlab.com/api/v4"),
                project: project.clone(),
                token: token()?,
            }),
            (None, None) => None,
        })
    }
}

/// `patchops rules …`.
pub fn run(command: RulesCommand) -> Result<ExitCode> {
    match command {
        RulesCommand::Run { repo, base, path, store, options } => {
            let store = crate::store::open_existing(&store)?;
            let catalog = store.load_catalog()?;
            if catalog.version == 0 {
                return Err(Error::Usage(format!(
                    "{} holds no catalog; run `patchops catalog sync` first",
                    store.location()
                )));
            }
            let fleet = store.load_fleet()?;
            let last = store.last_reconcile()?;
            let previous = previous_from(last.as_ref().map(|r| r.statuses.as_slice()).unwrap_or(&[]));
            let proposer = Proposer { repo, base, path, push: options.push.clone(), forge: options.forge()? };
            if !Path::new(&proposer.repo).exists() {
                return Err(Error::Usage(format!(
                    "{}: no such repository; pass --repo with a local clone",
                    proposer.repo
                )));
            }
            let runs = proposer.run(&catalog, &fleet, &previous, Timestamp::now(), false)?;
            let mut failed = false;
            for r in &runs {
                let c = r.status.conditions.first();
                failed |= c.is_some_and(|c| c.status != "True");
                println!(
                    "{}: {} — {}",
                    r.rule,
                    c.map(|c| c.reason.as_str()).unwrap_or("-"),
                    c.map(|c| c.message.as_str()).unwrap_or("-")
                );
            }
            if runs.is_empty() {
                println!("no DeploymentRule in the desired state");
            }
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_forge_without_a_token_is_a_usage_error_that_says_where_to_put_it() {
        let args = RuleArgs { github_repo: Some("acme/desired".into()), ..Default::default() };
        let err = args.forge().unwrap_err().to_string();
        assert!(err.contains("PATCHOPS_FORGE_TOKEN"), "{err}");
        let args =
            RuleArgs { github_repo: Some("desired".into()), forge_token: Some("t".into()), ..Default::default() };
        assert!(args.forge().unwrap_err().to_string().contains("give owner/name"));
    }
}
