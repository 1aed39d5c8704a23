//! Automatic deployment rules (`DeploymentRule`): after a catalog sync, the updates that
//! match a rule and no deployment deploys yet are proposed as a new UpdateList and
//! UpdateDeployment on a branch of their own, with the plan as the pull-request
//! description. Nothing deploys until a human merges: the proposal is only a commit.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use git2::{Oid, Repository, Signature};
use jiff::Timestamp;
use tracing::{info, warn};

use crate::catalog::Catalog;
use crate::compliance::Fleet;
use crate::desired::DesiredState;
use crate::git::plan::{self, World};
use crate::git::{GitSource, SourceTree};
use crate::reconcile::{Previous, resolve};
use crate::resources::{Condition, DeploymentRule, DeploymentRuleStatus, UpdateListSpec};
use crate::{Error, Result};

/// The forge a pull request is opened on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forge {
    GitHub { api_url: String, repo: String, token: String },
    GitLab { api_url: String, project: String, token: String },
}

impl Forge {
    /// Open a pull (merge) request; returns its web URL.
    pub fn open_pull_request(&self, title: &str, head: &str, base: &str, body: &str) -> Result<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .http_status_as_error(false)
            .user_agent(concat!("patchops/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let (url, request, json, link) = match self {
            Forge::GitHub { api_url, repo, token } => {
                let url = format!("{}/repos/{repo}/pulls", api_url.trim_end_matches('/'));
                let request = agent
                    .post(&url)
                    .header("Authorization", &format!("Bearer {token}"))
                    .header("Accept", "application/vnd.github+json")
                    .header("X-GitHub-Api-Version", "2022-11-28");
                let json = serde_json::json!({"title": title, "head": head, "base": base, "body": body});
                (url, request, json, "html_url")
            }
            Forge::GitLab { api_url, project, token } => {
                let url = format!("{}/projects/{}/merge_requests", api_url.trim_end_matches('/'), encode(project));
                let request = agent.post(&url).header("PRIVATE-TOKEN", token);
                let json = serde_json::json!({
                    "source_branch": head, "target_branch": base, "title": title, "description": body,
                    "remove_source_branch": true,
                });
                (url, request, json, "web_url")
            }
        };
        let failed = |message: String| Error::Usage(format!("opening a pull request at {url}: {message}"));
        let mut response = request
            .header("Content-Type", "application/json")
            .send(json.to_string())
            .map_err(|e| failed(format!("{e}; check --forge-api-url and the network")))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if !(200..300).contains(&status) {
            let hint = match status {
                401 | 403 => "; check the token and its permission to open pull requests",
                404 => "; check the repository or project name and the token's access to it",
                422 | 409 => "; a pull request for this branch may exist already",
                _ => "",
            };
            return Err(failed(format!("HTTP {status}: {}{hint}", text.trim())));
        }
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Ok(value.get(link).and_then(|v| v.as_str()).unwrap_or(&url).to_string())
    }
}

/// Percent-encode a GitLab project path (`group/name` → `group%2Fname`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What one rule did.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleRun {
    pub rule: String,
    pub status: DeploymentRuleStatus,
    /// Update ids matched and not yet deployed.
    pub matched: Vec<String>,
    /// A branch was made in this run.
    pub created: bool,
    pub pull_request: Option<String>,
}

/// Where and how proposals are made.
#[derive(Clone, Debug)]
pub struct Proposer {
    /// Local repository (work tree or bare).
    pub repo: String,
    /// Branch proposals start from; None: HEAD's branch.
    pub base: Option<String>,
    pub path: Option<String>,
    pub push: Option<String>,
    pub forge: Option<Forge>,
}

/// The branch a rule's proposal for a catalog version goes on.
pub fn branch_name(rule: &str, catalog_version: u64) -> String {
    format!("patchops/rule-{rule}-{catalog_version}")
}

/// Resource names of a proposal: a DNS label of at most 63 characters.
fn proposal_name(rule: &str, catalog_version: u64) -> String {
    let suffix = format!("-{catalog_version}");
    let mut stem = format!("rule-{rule}");
    stem.truncate(63 - suffix.len());
    format!("{}{suffix}", stem.trim_end_matches('-'))
}

/// Updates a rule matches that no deployment deploys: active (not superseded, not
/// expired) as an UpdateList with default exclusions resolves them, in catalog order.
pub fn matching_updates(rule: &DeploymentRule, desired: &DesiredState, catalog: &Catalog) -> Vec<u32> {
    let deployed: HashSet<u32> = desired
        .deployments
        .values()
        .filter_map(|d| desired.update_lists.get(&d.spec.update_list))
        .flat_map(|l| resolve::resolve(&l.spec, catalog).deployed(catalog))
        .collect();
    let spec = UpdateListSpec {
        description: None,
        updates: vec![],
        criteria: Some(rule.spec.criteria.clone()),
        exclude_superseded: true,
        exclude_expired: true,
    };
    if rule.spec.criteria.is_empty() {
        return vec![];
    }
    resolve::resolve(&spec, catalog).updates.into_iter().filter(|u| !deployed.contains(u)).collect()
}

/// The YAML of a proposal: an UpdateList naming the updates and a deployment of it with
/// the rule's template and collection, available from `now`.
pub fn proposal_yaml(rule: &DeploymentRule, ids: &[String], catalog_version: u64, now: Timestamp) -> String {
    let rule_name = rule.metadata.name.clone().unwrap_or_default();
    let name = proposal_name(&rule_name, catalog_version);
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let ns = rule.metadata.namespace.as_deref().map(|n| format!(", namespace: {}", quote(n))).unwrap_or_default();
    let mut y = format!(
        "# Proposed by DeploymentRule {rule_name} after catalog version {catalog_version}: updates that match\n\
         # its criteria and no deployment deploys yet. Merging approves the deployment.\n\
         apiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {{name: {name}{ns}}}\nspec:\n  \
         description: {}\n  updates:\n",
        quote(&format!("DeploymentRule {rule_name}, catalog version {catalog_version}"))
    );
    for id in ids {
        y.push_str(&format!("    - {}\n", quote(id)));
    }
    y.push_str(&format!(
        "---\napiVersion: patchops.dev/v1alpha1\nkind: UpdateDeployment\nmetadata: {{name: {name}{ns}}}\nspec:\n  \
         updateList: {name}\n  template: {}\n",
        quote(&rule.spec.template)
    ));
    if let Some(c) = &rule.spec.collection {
        y.push_str(&format!("  collection: {}\n", quote(c)));
    }
    let start = Timestamp::from_second(now.as_second()).unwrap_or(now);
    y.push_str(&format!("  startTime: {start}\n"));
    y
}

impl Proposer {
    /// Run every rule (only those with `runAfterSync` when `after_sync`) against the
    /// catalog, proposing on a branch from the base's current commit.
    pub fn run(
        &self,
        catalog: &Catalog,
        fleet: &Fleet,
        previous: &Previous,
        now: Timestamp,
        after_sync: bool,
    ) -> Result<Vec<RuleRun>> {
        let source = GitSource {
            repo: self.repo.clone(),
            revision: self.base.clone(),
            path: self.path.clone(),
            cache_dir: crate::process::state_dir().join("git-cache"),
        };
        if source.repo.contains("://") || source.repo.starts_with("git@") {
            return Err(Error::Usage(format!(
                "{}: deployment rules commit to a local repository; clone it and pass --repo with its path (and --rules-push origin)",
                source.repo
            )));
        }
        let (tree, desired) = crate::pipeline::load_desired(&source)?;
        let repo = Repository::open(&self.repo).map_err(|e| Error::git(&self.repo, "cannot open the repository", e))?;
        let base_branch = tree.revision.split_once('@').map(|(b, _)| b.to_string()).unwrap_or_else(|| "HEAD".into());
        let world = World { catalog, fleet, previous, now };
        let mut out = Vec::new();
        for (name, rule) in &desired.rules {
            if after_sync && !rule.spec.run_after_sync {
                continue;
            }
            let result = self.run_rule(&repo, &tree, &desired, &base_branch, rule, &world);
            let run = result.unwrap_or_else(|e| {
                warn!(rule = %name, error = %e, "deployment rule failed");
                RuleRun {
                    rule: name.clone(),
                    status: status(now, 0, None, false, "ProposalFailed", e.to_string()),
                    matched: vec![],
                    created: false,
                    pull_request: None,
                }
            });
            out.push(run);
        }
        Ok(out)
    }

    fn run_rule(
        &self,
        repo: &Repository,
        tree: &SourceTree,
        desired: &DesiredState,
        base_branch: &str,
        rule: &DeploymentRule,
        world: &World<'_>,
    ) -> Result<RuleRun> {
        let (catalog, now) = (world.catalog, world.now);
        let name = rule.metadata.name.clone().unwrap_or_default();
        let ids: Vec<String> =
            matching_updates(rule, desired, catalog).iter().map(|&i| catalog.updates[i as usize].id.clone()).collect();
        let matched = ids.len() as u64;
        let done = |status: DeploymentRuleStatus, created: bool, pull_request: Option<String>| RuleRun {
            rule: name.clone(),
            status,
            matched: ids.clone(),
            created,
            pull_request,
        };
        if ids.is_empty() {
            let message =
                format!("no update matching the criteria is left undeployed in catalog version {}", catalog.version);
            return Ok(done(status(now, 0, None, true, "NothingToPropose", message), false, None));
        }
        let branch = branch_name(&name, catalog.version);
        if repo.find_branch(&branch, git2::BranchType::Local).is_ok() {
            let message = format!("{matched} update(s) already proposed on {branch}; waiting for review");
            return Ok(done(status(now, matched, Some(branch), true, "AlreadyProposed", message), false, None));
        }

        let folder = self.path.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
        let file_name = format!("proposals/{}.yaml", proposal_name(&name, catalog.version));
        let yaml_path = folder.map_or(file_name.clone(), |f| format!("{f}/{file_name}"));
        let yaml = proposal_yaml(rule, &ids, catalog.version, now);
        let mut files = tree.files.clone();
        files.push((yaml_path.clone(), yaml.clone()));
        files.sort();
        let head = DesiredState::load_in(&branch, folder, &files).map_err(Error::InvalidDesiredState)?;
        let plan = plan::compute(desired, &head, world);
        let title = format!("DeploymentRule {name}: {matched} update(s) from catalog version {}", catalog.version);
        let body = format!(
            "{title}.\n\nDeploymentRule `{name}` matched these updates, which no deployment deploys yet: {}.\n\
             Review the plan below; merging approves the deployment, closing rejects it.\n\n{}",
            ids.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", "),
            plan::markdown(&plan)
        );
        let pr_path = format!(".patchops/pr/{}.md", proposal_name(&name, catalog.version));
        let commit = commit_files(
            repo,
            &tree.commit,
            &[(&yaml_path, yaml.as_bytes()), (&pr_path, body.as_bytes())],
            &format!("{title}\n\nProposed after catalog synchronization; nothing deploys until this is merged.\n"),
        )?;
        repo.reference(&format!("refs/heads/{branch}"), commit, false, "patchops: deployment rule proposal")
            .map_err(|e| Error::git(&self.repo, format!("cannot create branch {branch}"), e))?;
        info!(rule = %name, %branch, updates = matched, "deployment rule proposed updates");
        if let Some(remote) = &self.push
            && let Err(e) = push(repo, remote, &branch)
        {
            // Leave no local branch behind, so that the next run tries again.
            if let Ok(mut b) = repo.find_branch(&branch, git2::BranchType::Local) {
                let _ = b.delete();
            }
            return Err(e);
        }
        let pull_request = match &self.forge {
            Some(forge) => Some(forge.open_pull_request(&title, &branch, base_branch, &body)?),
            None => None,
        };
        let message = match &pull_request {
            Some(url) => format!("{matched} update(s) proposed on {branch}: {url}"),
            None => format!("{matched} update(s) proposed on {branch}; open a pull request from it to {base_branch}"),
        };
        Ok(done(status(now, matched, Some(branch), true, "Proposed", message), true, pull_request))
    }
}

fn status(
    now: Timestamp,
    matched: u64,
    branch: Option<String>,
    ready: bool,
    reason: &str,
    message: String,
) -> DeploymentRuleStatus {
    DeploymentRuleStatus {
        last_run_time: Some(now),
        updates_matched: matched,
        branch_proposed: branch,
        conditions: vec![Condition::new("Ready", ready, reason, message, now)],
    }
}

/// A commit on top of `parent` with these files written (paths from the repository
/// root), built in memory: the work tree and index are never touched.
pub fn commit_files(repo: &Repository, parent: &str, files: &[(&str, &[u8])], message: &str) -> Result<Oid> {
    let shown = repo.path().display().to_string();
    let fail = |e: git2::Error| Error::git(&shown, format!("cannot commit the proposal: {}", e.message()), e);
    let mut tree = TreeEdit::new(repo, Some(Oid::from_str(parent).map_err(fail)?)).map_err(fail)?;
    for (path, content) in files {
        tree.write(path, content).map_err(fail)?;
    }
    let signature = repo.signature().or_else(|_| Signature::now("patchops", "patchops@localhost")).map_err(fail)?;
    tree.commit(&signature, message).map_err(fail)
}

/// A tree built in memory on top of a commit's: no work tree, no index file.
pub struct TreeEdit<'r> {
    repo: &'r Repository,
    index: git2::Index,
    parent: Option<git2::Commit<'r>>,
}

impl<'r> TreeEdit<'r> {
    /// Start from `parent`'s tree (None: an empty tree, for a first commit).
    pub fn new(repo: &'r Repository, parent: Option<Oid>) -> std::result::Result<Self, git2::Error> {
        let mut index = git2::Index::new()?;
        let parent = parent.map(|p| repo.find_commit(p)).transpose()?;
        if let Some(p) = &parent {
            index.read_tree(&p.tree()?)?;
        }
        Ok(TreeEdit { repo, index, parent })
    }

    /// Write a regular file.
    pub fn write(&mut self, path: &str, content: &[u8]) -> std::result::Result<(), git2::Error> {
        let entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            file_size: content.len() as u32,
            id: self.repo.blob(content)?,
            flags: 0,
            flags_extended: 0,
            path: path.as_bytes().to_vec(),
        };
        self.index.add(&entry)
    }

    pub fn remove(&mut self, path: &str) -> std::result::Result<(), git2::Error> {
        self.index.remove_path(Path::new(path))
    }

    /// Commit the tree (no reference is moved).
    pub fn commit(mut self, signature: &Signature<'_>, message: &str) -> std::result::Result<Oid, git2::Error> {
        let tree = self.repo.find_tree(self.index.write_tree_to(self.repo)?)?;
        let parents: Vec<&git2::Commit> = self.parent.iter().collect();
        self.repo.commit(None, signature, signature, message, &tree, &parents)
    }
}

/// Push a branch to a remote of the repository.
fn push(repo: &Repository, remote: &str, branch: &str) -> Result<()> {
    super::push_branch(repo, remote, branch, "--rules-push").map_err(|message| Error::Git {
        repo: repo.path().display().to_string(),
        message,
        source: None,
    })
}

/// Runs the rules from the standalone reconciler after each catalog sync: once per
/// catalog version and desired revision (a new rule, or a merged proposal, is seen at
/// once), keeping the last status of each rule in between. A failure is
/// logged and shown in the rule's status; it never fails the reconcile.
#[derive(Debug)]
pub struct AfterSync {
    pub proposer: Proposer,
    ran_for: Option<(u64, String)>,
    statuses: BTreeMap<String, DeploymentRuleStatus>,
}

impl AfterSync {
    pub fn new(proposer: Proposer) -> Self {
        AfterSync { proposer, ran_for: None, statuses: BTreeMap::new() }
    }

    /// The status of every rule of `desired`, after running them if the catalog version
    /// or the revision is new to this process.
    pub fn run(
        &mut self,
        desired: &DesiredState,
        catalog: &Catalog,
        fleet: &Fleet,
        previous: &Previous,
        now: Timestamp,
    ) -> Vec<(String, DeploymentRuleStatus)> {
        let key = (catalog.version, desired.revision.clone());
        if self.ran_for.as_ref() != Some(&key) && catalog.version > 0 {
            match self.proposer.run(catalog, fleet, previous, now, true) {
                Ok(runs) => {
                    self.ran_for = Some(key);
                    for r in runs {
                        self.statuses.insert(r.rule, r.status);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "deployment rules failed; the reconcile goes on");
                    for name in desired.rules.keys() {
                        self.statuses.insert(
                            name.clone(),
                            status(
                                now,
                                0,
                                None,
                                false,
                                "ProposalFailed",
                                format!("{e}; retried at the next reconcile"),
                            ),
                        );
                    }
                }
            }
        }
        desired.rules.keys().filter_map(|n| self.statuses.get(n).map(|s| (n.clone(), s.clone()))).collect()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_long_rule_name_still_gives_proposal_names_of_at_most_63_characters() {
        let rule = "a".repeat(60);
        let name = proposal_name(&rule, 12345);
        assert!(name.len() <= 63 && name.ends_with("-12345") && name.starts_with("rule-aaa"), "{name}");
        assert_eq!(proposal_name("patch-tuesday", 7), "rule-patch-tuesday-7");
        assert_eq!(branch_name("patch-tuesday", 7), "patchops/rule-patch-tuesday-7");
    }

    #[test]
    fn a_gitlab_project_path_is_percent_encoded_and_a_numeric_id_is_kept() {
        assert_eq!(encode("acme/infra desired"), "acme%2Finfra%20desired");
        assert_eq!(encode("4711"), "4711");
    }
}
