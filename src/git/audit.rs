//! `patchops audit`: who approved or withdrew which update into which deployment, when, in
//! which commit and merged pull request — read from the branch's history, not from a log
//! kept on the side. Git history is the audit trail; this module only reads it.
//!
//! An update is deployed by a deployment when the deployment's `updateList` names it. For
//! every commit on the first-parent chain of the branch the set of (deployment, update)
//! pairs is computed from the parsed resources of the commit's tree and compared with the
//! previous commit's: additions are approvals, removals withdrawals. Resources are known by
//! kind and name, never by file, so renaming or moving a file changes nothing; a merge
//! counts once, at the merge commit, which names its pull request. Criteria of an update
//! list depend on the catalog of the day, so they are reported as an entry of their own
//! (`criteria: classifications=…`) that is approved or withdrawn when the criteria change.
//!
//! Speed: a parsed blob is cached by its object id and a folder's resources by its tree id,
//! so a commit costs only the folders it changed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use git2::{ObjectType, Oid, Repository, Sort};
use jiff::Timestamp;
use serde::Serialize;

use super::{GitSource, is_regular, normalise_path};
use crate::output::OutputFormat;
use crate::resources::API_VERSION;
use crate::{Error, Result};

/// Which changes to report.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Update ids to report (case-insensitive); empty: all.
    pub updates: Vec<String>,
    /// Deployment to report; None: all.
    pub deployment: Option<String>,
    /// Report only commits at or after this time.
    pub since: Option<Timestamp>,
}

impl AuditQuery {
    fn wants_deployment(&self, name: &str) -> bool {
        self.deployment.as_deref().is_none_or(|d| d == name)
    }

    fn wants_update(&self, id: &str) -> bool {
        self.updates.is_empty() || self.updates.iter().any(|u| u.eq_ignore_ascii_case(id))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Action {
    Approved,
    Withdrawn,
}

/// A commit's author or committer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Person {
    pub name: String,
    pub email: String,
    pub time: Timestamp,
}

/// The commit on a merged branch that made a change the merge brought in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ViaCommit {
    pub commit: String,
    pub author: Person,
    pub summary: String,
}

/// One approval or withdrawal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub action: Action,
    /// The update as the update list names it, or `criteria: …` for a list's criteria.
    pub update: String,
    pub deployment: String,
    /// The update list that carried the update (after an approval, before a withdrawal).
    pub update_list: String,
    /// The commit on the branch that made the change (the merge commit for a merged branch).
    pub commit: String,
    /// `#123` (GitHub, Bitbucket, squash merges) or `!45` (GitLab) when the commit names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<String>,
    pub author: Person,
    pub committer: Person,
    /// First line of the commit message.
    pub summary: String,
    /// For a merge: the commit of the merged branch that made this change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<ViaCommit>,
}

/// A commit whose desired state the reconciler would reject: it changed nothing that was
/// deployed, so the next valid commit is compared with the last valid one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedCommit {
    pub commit: String,
    pub reason: String,
}

/// Where the folder `--path` names changes its name in history: its resources are read
/// from `from` before `commit` and from `to` from it on (as `git log --follow` follows a
/// file), or the history of the folder starts at `commit` and says why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FolderMove {
    pub commit: String,
    /// The folder before the commit; None where the history cannot be followed further.
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
}

/// The answer to an audit.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    /// The tip read, as `main@sha1:<hex>`.
    pub revision: String,
    /// Commits on the first-parent chain that were compared.
    pub commits_walked: usize,
    /// YAML blobs parsed (each distinct blob once).
    pub blobs_parsed: usize,
    pub events: Vec<AuditEvent>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedCommit>,
    /// The folder's renames followed, newest first, and where its history stops.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub folder_history: Vec<FolderMove>,
}

/// `--since`: an RFC 3339 date-time, or a date meaning its midnight UTC.
pub fn parse_since(text: &str) -> Result<Timestamp> {
    parse_date("--since", text)
}

/// The value of a date flag: an RFC 3339 date-time, or a date meaning its midnight UTC.
pub fn parse_date(flag: &str, text: &str) -> Result<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>()
        && let Ok(t) = d.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(t.timestamp());
    }
    Err(Error::Usage(format!("{flag} {text:?}: not an RFC 3339 date (2026-11-01) or date-time (2026-11-01T09:30:00Z)")))
}

/// Audit the source's revision (HEAD by default), reading resources under its path.
pub fn audit(source: &GitSource, query: &AuditQuery) -> Result<AuditReport> {
    let (repo, kind) = source.open(true)?;
    let (revision, tip) = source.resolve_named(&repo, kind)?;
    let Some(folder) = normalise_path(source.path.as_deref().unwrap_or("")) else {
        return Err(source.error(format!(
            "path {:?} climbs out of the repository; pass --path with a folder of the repository",
            source.path.as_deref().unwrap_or("")
        )));
    };
    audit_commits(&repo, tip.id(), &folder, query)
        .map(|mut report| {
            report.revision = revision;
            report
        })
        .map_err(|e| Error::git(source.shown_repo(), format!("cannot read the history: {}", e.message()), e))
}

/// The audit of the first-parent history of `tip`, for resources under `folder` ("" for
/// the whole tree).
pub fn audit_commits(
    repo: &Repository,
    tip: Oid,
    folder: &str,
    query: &AuditQuery,
) -> Result<AuditReport, git2::Error> {
    let mut history = History::new(repo, folder);
    // Newest to oldest; with --since the first valid commit before it is the baseline.
    // The folder is followed across renames: a commit where it appears, moved from
    // another folder, reads the older commits at the old name.
    let mut chain = Vec::new();
    let mut folder_history = Vec::new();
    let mut at = folder.to_string();
    let mut next = Some(repo.find_commit(tip)?);
    while let Some(commit) = next {
        history.folder.clone_from(&at);
        let before_since = query.since.is_some_and(|s| commit_time(&commit) < s);
        let baseline = before_since && history.state_of(&commit, None)?.invalid.is_none();
        next = if baseline { None } else { commit.parents().next() };
        chain.push((commit.clone(), !before_since, at.clone()));
        if let Some(parent) = &next
            && !at.is_empty()
            && history.folder_tree(&commit)?.is_some()
            && history.folder_tree(parent)?.is_none()
        {
            let moved = moved_from(repo, parent, &commit, &at)?;
            if let Some(from) = &moved.from {
                at.clone_from(from);
            }
            folder_history.push(FolderMove { commit: commit.id().to_string(), ..moved });
        }
    }
    let mut events = Vec::new();
    let mut skipped = Vec::new();
    let mut previous: Rc<State> = Rc::new(State::default());
    let commits_walked = chain.len();
    for (commit, reported, folder) in chain.into_iter().rev() {
        history.folder = folder;
        let state = history.state_of(&commit, Some(&previous))?;
        if let Some(reason) = &state.invalid {
            if reported {
                skipped.push(SkippedCommit { commit: commit.id().to_string(), reason: reason.clone() });
            }
            continue;
        }
        if reported && !Rc::ptr_eq(&previous, &state) {
            let changes = diff(&previous, &state, query);
            if !changes.is_empty() {
                let via = if commit.parent_count() > 1 { history.via(&commit, &changes)? } else { HashMap::new() };
                let author = person(&commit.author());
                let committer = person(&commit.committer());
                let message = commit.message().unwrap_or_default();
                let summary = message.lines().next().unwrap_or_default().to_string();
                let pull_request = pull_request(message);
                for change in changes {
                    events.push(AuditEvent {
                        via: via.get(&change.key()).cloned(),
                        action: change.action,
                        update: change.update,
                        deployment: change.deployment,
                        update_list: change.list,
                        commit: commit.id().to_string(),
                        pull_request: pull_request.clone(),
                        author: author.clone(),
                        committer: committer.clone(),
                        summary: summary.clone(),
                    });
                }
            }
        }
        previous = state;
    }
    Ok(AuditReport {
        revision: format!("sha1:{tip}"),
        commits_walked,
        blobs_parsed: history.blobs_parsed,
        events,
        skipped,
        folder_history,
    })
}

/// Where `folder`, present in `commit` but not in `parent`, came from: the folder in the
/// parent that most of its files were renamed from (rename detection as `git log
/// --follow` does it, exact or similar content), or None with the reason.
fn moved_from(
    repo: &Repository,
    parent: &git2::Commit,
    commit: &git2::Commit,
    folder: &str,
) -> Result<FolderMove, git2::Error> {
    let mut diff = repo.diff_tree_to_tree(Some(&parent.tree()?), Some(&commit.tree()?), None)?;
    diff.find_similar(Some(git2::DiffFindOptions::new().renames(true)))?;
    let prefix = format!("{folder}/");
    let mut origins: HashMap<String, usize> = HashMap::new();
    let mut added = 0usize;
    for delta in diff.deltas() {
        let Some(new) = delta.new_file().path().and_then(|p| p.to_str()) else { continue };
        let Some(relative) = new.strip_prefix(&prefix) else { continue };
        match delta.status() {
            git2::Delta::Renamed => {
                let old = delta.old_file().path().and_then(|p| p.to_str()).unwrap_or_default();
                let origin = match old.strip_suffix(relative) {
                    Some(o) => o.trim_end_matches('/').to_string(),
                    // Renamed and moved: the old file's folder.
                    None => old.rsplit_once('/').map_or_else(String::new, |(d, _)| d.to_string()),
                };
                *origins.entry(origin).or_default() += 1;
            }
            git2::Delta::Added | git2::Delta::Copied => added += 1,
            _ => {}
        }
    }
    let mut ranked: Vec<(String, usize)> = origins.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let to = folder.to_string();
    Ok(match ranked.first() {
        Some((from, n)) => {
            let mut reason = format!("{n} file(s) renamed from {}", if from.is_empty() { "the root" } else { from });
            if ranked.len() > 1 {
                let others: Vec<&str> = ranked[1..].iter().map(|(o, _)| o.as_str()).collect();
                reason.push_str(&format!(
                    "; files also came from {} — their earlier history is not read (audit --path there)",
                    others.join(", ")
                ));
            }
            if added > 0 {
                reason.push_str(&format!("; {added} file(s) new in this commit"));
            }
            FolderMove { commit: String::new(), from: Some(from.clone()), to, reason }
        }
        None => FolderMove {
            commit: String::new(),
            from: None,
            to,
            reason: format!(
                "the folder first appears here with {added} new file(s), none renamed from another folder, so its \
                 history starts here; if it was copied from elsewhere, audit that folder with --path"
            ),
        },
    })
}

/// The pull or merge request a commit message names: GitHub's "Merge pull request #123",
/// Bitbucket's "(pull request #12)", GitLab's "See merge request group/proj!45", or a
/// squash merge's summary ending in "(#123)".
pub fn pull_request(message: &str) -> Option<String> {
    let digits = |s: &str| -> Option<String> {
        let n: String = s.chars().take_while(char::is_ascii_digit).collect();
        (!n.is_empty()).then_some(n)
    };
    let lower = message.to_ascii_lowercase();
    if let Some(i) = lower.find("pull request #") {
        return digits(&message[i + "pull request #".len()..]).map(|n| format!("#{n}"));
    }
    if let Some(i) = lower.find("see merge request ") {
        let reference = message[i + "see merge request ".len()..].split_whitespace().next().unwrap_or_default();
        if let Some((_, n)) = reference.rsplit_once('!') {
            return digits(n).map(|n| format!("!{n}"));
        }
    }
    let summary = message.lines().next().unwrap_or_default().trim_end();
    let inner = summary.strip_suffix(')')?;
    let (_, n) = inner.rsplit_once("(#")?;
    (n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty()).then(|| format!("#{n}"))
}

fn commit_time(commit: &git2::Commit) -> Timestamp {
    Timestamp::from_second(commit.time().seconds()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn person(signature: &git2::Signature) -> Person {
    Person {
        name: signature.name().unwrap_or_default().to_string(),
        email: signature.email().unwrap_or_default().to_string(),
        time: Timestamp::from_second(signature.when().seconds()).unwrap_or(Timestamp::UNIX_EPOCH),
    }
}

/// One change of the (deployment, update) pairs between two states.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Change {
    deployment: String,
    update: String,
    action: Action,
    list: String,
}

impl Change {
    fn key(&self) -> (String, String, Action) {
        (self.deployment.clone(), self.update.clone(), self.action)
    }
}

/// What one blob declares: deployments with their list, lists with their entries.
#[derive(Debug, Default)]
struct Parsed {
    deployments: Vec<(Rc<str>, Rc<str>)>,
    lists: Vec<(Rc<str>, Rc<BTreeSet<String>>)>,
    /// Why the reconciler would reject this file (YAML syntax, a missing field).
    problem: Option<String>,
}

impl Parsed {
    fn is_empty(&self) -> bool {
        self.deployments.is_empty() && self.lists.is_empty() && self.problem.is_none()
    }
}

/// A deployment and the list it names.
type Ref = (Rc<str>, Rc<str>);

/// Deployments and the lists they name, sorted by deployment. Shared by consecutive
/// states while no file declaring a deployment changes.
#[derive(Debug, Default)]
struct Refs {
    sorted: Vec<Ref>,
    /// List → indices into `sorted` of the deployments naming it.
    by_list: HashMap<Rc<str>, Vec<usize>>,
}

/// The deployed pairs of one tree.
#[derive(Debug, Default)]
struct State {
    /// Files declaring deployments, and files declaring lists, in tree order: compared by
    /// pointer they tell what changed from one commit to the next.
    deployment_files: Vec<Rc<Parsed>>,
    list_files: Vec<Rc<Parsed>>,
    refs: Rc<Refs>,
    /// Set when the reconciler would reject the revision.
    invalid: Option<String>,
}

impl State {
    /// Every deployment with its list and the list's entries, sorted by deployment.
    fn resolved(&self) -> Vec<(&Rc<str>, &Rc<str>, &BTreeSet<String>)> {
        let lists: HashMap<&str, &BTreeSet<String>> =
            self.list_files.iter().flat_map(|p| p.lists.iter().map(|(n, e)| (&**n, &**e))).collect();
        self.refs.sorted.iter().filter_map(|(d, l)| lists.get(&**l).map(|e| (d, l, *e))).collect()
    }

    /// When only the contents of lists changed from `old` (same deployments, the same files
    /// declaring the same list names): the (old, new) pairs of changed list files.
    fn changed_lists<'a>(old: &'a State, new: &'a State) -> Option<Vec<(&'a Parsed, &'a Parsed)>> {
        if !Rc::ptr_eq(&old.refs, &new.refs) || old.list_files.len() != new.list_files.len() {
            return None;
        }
        let mut out = Vec::new();
        for (a, b) in old.list_files.iter().zip(&new.list_files) {
            if Rc::ptr_eq(a, b) {
                continue;
            }
            if a.lists.len() != b.lists.len() || a.lists.iter().zip(&b.lists).any(|(x, y)| x.0 != y.0) {
                return None;
            }
            out.push((&**a, &**b));
        }
        Some(out)
    }
}

fn same_files(a: &[Rc<Parsed>], b: &[Rc<Parsed>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Rc::ptr_eq(x, y))
}

/// Approvals and withdrawals from `old` to `new` that the query asks for, sorted. When only
/// list contents changed, only the deployments of the changed lists are compared;
/// otherwise every deployment, side by side (both sorted).
fn diff(old: &State, new: &State, query: &AuditQuery) -> Vec<Change> {
    let mut out = Vec::new();
    if let Some(changed) = State::changed_lists(old, new) {
        for (a, b) in changed {
            for ((list, before), (_, after)) in a.lists.iter().zip(&b.lists) {
                for &i in new.refs.by_list.get(list).into_iter().flatten() {
                    let deployment = &new.refs.sorted[i].0;
                    changes(deployment, Some((list, before)), Some((list, after)), query, &mut out);
                }
            }
        }
        out.sort();
        return out;
    }
    let (old, new) = (old.resolved(), new.resolved());
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (None, None) => break,
            (Some(o), Some(n)) if o.0 == n.0 => {
                (i, j) = (i + 1, j + 1);
                if !std::ptr::eq(o.2, n.2) {
                    changes(n.0, Some((o.1, o.2)), Some((n.1, n.2)), query, &mut out);
                }
            }
            (Some(o), n) if n.is_none_or(|n| o.0 < n.0) => {
                i += 1;
                changes(o.0, Some((o.1, o.2)), None, query, &mut out);
            }
            (_, Some(n)) => {
                j += 1;
                changes(n.0, None, Some((n.1, n.2)), query, &mut out);
            }
            (Some(_), None) => unreachable!("handled above"),
        }
    }
    out.sort();
    out
}

/// The changes of one deployment whose (list, entries) went from `before` to `after`.
fn changes(
    deployment: &str,
    before: Option<(&Rc<str>, &BTreeSet<String>)>,
    after: Option<(&Rc<str>, &BTreeSet<String>)>,
    query: &AuditQuery,
    out: &mut Vec<Change>,
) {
    if !query.wants_deployment(deployment) {
        return;
    }
    let empty = BTreeSet::new();
    let (old, new) = (before.map_or(&empty, |b| b.1), after.map_or(&empty, |a| a.1));
    let list = |side: Option<(&Rc<str>, &BTreeSet<String>)>| side.map_or_else(String::new, |s| s.0.to_string());
    for (from, to, action, side) in [(old, new, Action::Approved, after), (new, old, Action::Withdrawn, before)] {
        for update in to.difference(from) {
            if query.wants_update(update) {
                out.push(Change {
                    deployment: deployment.to_string(),
                    update: update.clone(),
                    action,
                    list: list(side),
                });
            }
        }
    }
}

/// Reads states of commits with caches by blob, folder and tree id.
struct History<'r> {
    repo: &'r Repository,
    folder: String,
    blobs: HashMap<Oid, Rc<Parsed>>,
    trees: HashMap<Oid, Rc<Vec<Rc<Parsed>>>>,
    states: HashMap<Oid, Rc<State>>,
    /// Root tree → the folder's tree (None: the folder is absent).
    folders: HashMap<(Oid, String), Option<Oid>>,
    blobs_parsed: usize,
}

impl<'r> History<'r> {
    fn new(repo: &'r Repository, folder: &str) -> Self {
        History {
            repo,
            folder: folder.to_string(),
            blobs: HashMap::new(),
            trees: HashMap::new(),
            states: HashMap::new(),
            folders: HashMap::new(),
            blobs_parsed: 0,
        }
    }

    /// The tree of the folder in a commit (None: the folder is absent).
    fn folder_tree(&mut self, commit: &git2::Commit) -> Result<Option<Oid>, git2::Error> {
        let root = commit.tree_id();
        let key = (root, self.folder.clone());
        if let Some(f) = self.folders.get(&key) {
            return Ok(*f);
        }
        let f = if self.folder.is_empty() {
            Some(root)
        } else {
            let tree = self.repo.find_tree(root)?;
            tree.get_path(std::path::Path::new(&self.folder))
                .ok()
                .filter(|e| e.kind() == Some(ObjectType::Tree))
                .map(|e| e.id())
        };
        self.folders.insert(key, f);
        Ok(f)
    }

    /// The state of a commit's tree. `previous`, the state of an earlier commit, lets an
    /// unchanged set of deployments be shared instead of rebuilt.
    fn state_of(&mut self, commit: &git2::Commit, previous: Option<&Rc<State>>) -> Result<Rc<State>, git2::Error> {
        let folder = self.folder_tree(commit)?;
        let Some(folder) = folder else {
            return Ok(self.states.entry(Oid::ZERO_SHA1).or_default().clone());
        };
        if let Some(state) = self.states.get(&folder) {
            return Ok(state.clone());
        }
        let parsed = self.tree(folder)?;
        let mut state = State::default();
        let mut file_problems = false;
        for p in parsed.iter() {
            file_problems |= p.problem.is_some();
            if !p.deployments.is_empty() {
                state.deployment_files.push(p.clone());
            }
            if !p.lists.is_empty() {
                state.list_files.push(p.clone());
            }
        }
        let previous = previous.filter(|p| p.invalid.is_none());
        let shared = previous.filter(|p| same_files(&p.deployment_files, &state.deployment_files));
        if let Some(p) = shared {
            state.refs = p.refs.clone();
            // Same deployments, same list names: as valid as the previous state.
            if !file_problems && State::changed_lists(p, &state).is_some() {
                let state = Rc::new(state);
                self.states.insert(folder, state.clone());
                return Ok(state);
            }
        }
        let mut problems = Vec::new();
        for p in parsed.iter() {
            if let Some(problem) = &p.problem {
                problems.push(format!("{}: {problem}", self.path_of(folder, p)?));
            }
        }
        if shared.is_none() {
            let mut sorted: Vec<Ref> =
                state.deployment_files.iter().flat_map(|p| p.deployments.iter().cloned()).collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            for pair in sorted.windows(2).filter(|w| w[0].0 == w[1].0) {
                problems.push(format!("duplicate UpdateDeployment {:?}", pair[0].0));
            }
            sorted.dedup_by(|a, b| a.0 == b.0);
            let mut by_list: HashMap<Rc<str>, Vec<usize>> = HashMap::new();
            for (i, (_, list)) in sorted.iter().enumerate() {
                by_list.entry(list.clone()).or_default().push(i);
            }
            state.refs = Rc::new(Refs { sorted, by_list });
        }
        let mut names = HashSet::new();
        for (name, _) in state.list_files.iter().flat_map(|p| p.lists.iter()) {
            if !names.insert(name.clone()) {
                problems.push(format!("duplicate UpdateList {name:?}"));
            }
        }
        for (name, list) in &state.refs.sorted {
            if !names.contains(list) {
                problems.push(format!("UpdateDeployment {name:?}: updateList {list:?} not found"));
            }
        }
        if !problems.is_empty() {
            state.invalid = Some(problems.join("; "));
        }
        let state = Rc::new(state);
        self.states.insert(folder, state.clone());
        Ok(state)
    }

    /// Every non-empty parsed YAML blob under a tree.
    fn tree(&mut self, id: Oid) -> Result<Rc<Vec<Rc<Parsed>>>, git2::Error> {
        if let Some(t) = self.trees.get(&id) {
            return Ok(t.clone());
        }
        let tree = self.repo.find_tree(id)?;
        let mut out = Vec::new();
        for entry in tree.iter() {
            match entry.kind() {
                Some(ObjectType::Tree) => out.extend(self.tree(entry.id())?.iter().cloned()),
                Some(ObjectType::Blob)
                    if is_regular(entry.filemode())
                        && (entry.name_bytes().ends_with(b".yaml") || entry.name_bytes().ends_with(b".yml")) =>
                {
                    let parsed = self.blob(entry.id())?;
                    if !parsed.is_empty() {
                        out.push(parsed);
                    }
                }
                _ => {}
            }
        }
        let out = Rc::new(out);
        self.trees.insert(id, out.clone());
        Ok(out)
    }

    fn blob(&mut self, id: Oid) -> Result<Rc<Parsed>, git2::Error> {
        if let Some(p) = self.blobs.get(&id) {
            return Ok(p.clone());
        }
        let blob = self.repo.find_blob(id)?;
        let parsed = match std::str::from_utf8(blob.content()) {
            // Only documents of these two kinds decide what is deployed.
            Ok(text) if text.contains("UpdateDeployment") || text.contains("UpdateList") || text.contains("Waiver") => {
                self.blobs_parsed += 1;
                parse(text)
            }
            Ok(_) => Parsed::default(),
            Err(_) => Parsed { problem: Some("not UTF-8 text".into()), ..Default::default() },
        };
        let parsed = Rc::new(parsed);
        self.blobs.insert(id, parsed.clone());
        Ok(parsed)
    }

    /// The path of a parsed blob under a tree (for messages; only on a rejected revision).
    fn path_of(&mut self, tree: Oid, wanted: &Rc<Parsed>) -> Result<String, git2::Error> {
        let mut found = None;
        let blobs = &self.blobs;
        // Stopping the walk early makes it return an error: only `found` matters.
        let _ = self.repo.find_tree(tree)?.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(ObjectType::Blob) && blobs.get(&entry.id()).is_some_and(|p| Rc::ptr_eq(p, wanted)) {
                found = Some(format!("{dir}{}", entry.name().unwrap_or_default()));
                return git2::TreeWalkResult::Abort;
            }
            git2::TreeWalkResult::Ok
        });
        let path = found.unwrap_or_default();
        Ok(if self.folder.is_empty() { path } else { format!("{}/{path}", self.folder) })
    }

    /// For a merge: the commit of the merged branch that last made each change.
    fn via(
        &mut self,
        merge: &git2::Commit,
        changes: &[Change],
    ) -> Result<HashMap<(String, String, Action), ViaCommit>, git2::Error> {
        let wanted: HashSet<(String, String, Action)> = changes.iter().map(Change::key).collect();
        let query = AuditQuery::default();
        let mut walk = self.repo.revwalk()?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
        for parent in merge.parent_ids().skip(1) {
            walk.push(parent)?;
        }
        walk.hide(merge.parent_id(0)?)?;
        let mut out = HashMap::new();
        for id in walk {
            let id = id?;
            let commit = self.repo.find_commit(id)?;
            let Ok(parent) = commit.parent(0) else { continue };
            let before = self.state_of(&parent, None)?;
            let after = self.state_of(&commit, Some(&before))?;
            if before.invalid.is_some() || after.invalid.is_some() || Rc::ptr_eq(&before, &after) {
                continue;
            }
            for change in diff(&before, &after, &query) {
                if wanted.contains(&change.key()) {
                    let via = ViaCommit {
                        commit: id.to_string(),
                        author: person(&commit.author()),
                        summary: commit.message().unwrap_or_default().lines().next().unwrap_or_default().to_string(),
                    };
                    out.insert(change.key(), via);
                }
            }
        }
        Ok(out)
    }
}

/// Deployments and lists of one YAML file. Documents of other kinds or API versions are
/// not read (catalog data files hold no resources).
fn parse(text: &str) -> Parsed {
    // One pass without field positions; only a file with a problem is read again with
    // them, so that the problem names its line.
    if let Ok(values) =
        serde_saphyr::from_multiple_with_options::<serde_json::Value>(text, crate::yaml::options_for(text.len()))
    {
        let parsed = read(values.iter().map(|v| (0, v)));
        if parsed.problem.is_none() {
            return parsed;
        }
    }
    match crate::yaml::parse_documents("", text) {
        Ok(documents) => read(documents.iter().map(|d| (d.line, &d.value))),
        Err(p) => Parsed { problem: Some(format!("line {}: {}", p.line, p.message)), ..Default::default() },
    }
}

/// Deployments and lists of parsed documents, each with the line it starts at.
fn read<'a>(documents: impl Iterator<Item = (usize, &'a serde_json::Value)>) -> Parsed {
    let mut out = Parsed::default();
    for (line, v) in documents {
        if v.get("apiVersion").and_then(|a| a.as_str()) != Some(API_VERSION) {
            continue;
        }
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let Some(name) = v.pointer("/metadata/name").and_then(|n| n.as_str()) else {
            if kind == "UpdateDeployment" || kind == "UpdateList" || kind == "Waiver" {
                out.problem = Some(format!("line {line}: {kind} without metadata.name"));
            }
            continue;
        };
        match kind {
            "UpdateDeployment" => match v.pointer("/spec/updateList").and_then(|l| l.as_str()) {
                Some(list) => out.deployments.push((Rc::from(name), Rc::from(list))),
                None => out.problem = Some(format!("line {line}: UpdateDeployment {name:?} without spec.updateList")),
            },
            "UpdateList" => {
                let mut entries: BTreeSet<String> = v
                    .pointer("/spec/updates")
                    .and_then(|u| u.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect();
                if let Some(criteria) = v.pointer("/spec/criteria").and_then(criteria_entry) {
                    entries.insert(criteria);
                }
                out.lists.push((Rc::from(name), Rc::new(entries)));
            }
            // A waiver is reported like a deployment of its own (`waiver/<name>`, never a
            // valid resource name, so never another deployment's): its updates and CVEs,
            // target and expiry are its entries, so adding, narrowing or renewing one is an
            // approval or withdrawal with the commit and pull request that made it.
            "Waiver" => {
                let key: Rc<str> = Rc::from(format!("waiver/{name}"));
                let texts = |p: &str| -> Vec<String> {
                    v.pointer(p)
                        .and_then(|u| u.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|u| u.as_str().map(str::to_string))
                        .collect()
                };
                let mut entries: BTreeSet<String> = texts("/spec/updates").into_iter().collect();
                entries.extend(texts("/spec/cves"));
                if let Some(c) = v.pointer("/spec/collection").and_then(|c| c.as_str()) {
                    entries.insert(format!("collection: {c}"));
                }
                let machines = texts("/spec/machines");
                if !machines.is_empty() {
                    entries.insert(format!("machines: {}", machines.join(", ")));
                }
                if let Some(e) = v.pointer("/spec/expires").and_then(|e| e.as_str()) {
                    entries.insert(format!("expires: {e}"));
                }
                out.deployments.push((key.clone(), key.clone()));
                out.lists.push((key, Rc::new(entries)));
            }
            _ => {}
        }
    }
    out
}

/// An update list's criteria as one entry: `criteria: classifications=Security Updates; products=…`.
fn criteria_entry(criteria: &serde_json::Value) -> Option<String> {
    let map = criteria.as_object()?;
    let mut parts: Vec<String> = map
        .iter()
        .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::Array(items) => {
                    items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string)).collect::<Vec<_>>()
                }
                serde_json::Value::String(s) => vec![s.clone()],
                other => vec![other.to_string()],
            };
            format!("{k}={}", value.join(","))
        })
        .collect();
    parts.sort();
    (!parts.is_empty()).then(|| format!("criteria: {}", parts.join("; ")))
}

pub fn print(report: &AuditReport, format: OutputFormat) {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(report).expect("reports serialize")),
        OutputFormat::Yaml => print!("{}", serde_saphyr::to_string(report).expect("reports serialize")),
        OutputFormat::Table | OutputFormat::Wide => {
            println!(
                "history of {}: {} commits, {} approvals and withdrawals",
                report.revision,
                report.commits_walked,
                report.events.len()
            );
            use crate::output::Shown::{Always, Wide};
            let mut t = crate::output::Columns::new(
                &[
                    ("TIME", Always),
                    ("ACTION", Always),
                    ("UPDATE", Always),
                    ("DEPLOYMENT", Always),
                    ("COMMIT", Always),
                    ("PR", Always),
                    ("AUTHOR", Always),
                    ("COMMITTER", Wide),
                    ("VIA", Wide),
                ],
                format,
            );
            for e in &report.events {
                t.row([
                    e.committer.time.strftime("%Y-%m-%d %H:%M").to_string(),
                    format!("{:?}", e.action),
                    e.update.clone(),
                    e.deployment.clone(),
                    e.commit[..12].to_string(),
                    e.pull_request.clone().unwrap_or_else(|| "-".into()),
                    format!("{} <{}>", e.author.name, e.author.email),
                    format!("{} <{}>", e.committer.name, e.committer.email),
                    e.via.as_ref().map_or_else(|| "-".into(), |v| format!("{} {}", &v.commit[..12], v.author.name)),
                ]);
            }
            println!("{t}");
            for s in &report.skipped {
                println!("skipped {}: the reconciler rejects it ({})", &s.commit[..12], s.reason);
            }
            for m in &report.folder_history {
                match &m.from {
                    Some(from) => println!("followed {} back to {from} at {} ({})", m.to, &m.commit[..12], m.reason),
                    None => println!("history of {} starts at {}: {}", m.to, &m.commit[..12], m.reason),
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn pull_request_numbers_are_read_from_github_gitlab_bitbucket_and_squash_messages() {
        assert_eq!(pull_request("Merge pull request #123 from acme/dec-patches\n\nDecember").as_deref(), Some("#123"));
        assert_eq!(
            pull_request("Merge branch 'dec' into 'main'\n\nDecember\n\nSee merge request ops/patching!45").as_deref(),
            Some("!45")
        );
        assert_eq!(pull_request("Merged in dec (pull request #7)").as_deref(), Some("#7"));
        assert_eq!(pull_request("Approve KB5032189 for pilot (#88)").as_deref(), Some("#88"));
        assert_eq!(pull_request("Merge branch 'dec'"), None);
        assert_eq!(pull_request("Approve KB5032189 (#abc)"), None);
        assert_eq!(pull_request("refs #12 in the body\n"), None);
    }

    #[test]
    fn since_takes_a_date_as_midnight_utc_or_a_date_time_and_rejects_anything_else() {
        assert_eq!(parse_since("2026-11-01").unwrap(), "2026-11-01T00:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(parse_since("2026-11-01T09:30:00+01:00").unwrap(), "2026-11-01T08:30:00Z".parse().unwrap());
        let e = parse_since("last tuesday").unwrap_err().to_string();
        assert!(e.contains("--since \"last tuesday\"") && e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn a_list_yields_its_explicit_ids_and_one_entry_for_its_criteria() {
        let p = parse(
            "apiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {name: dec}\nspec:\n  updates: [KB1, KB2]\n  criteria: {products: [Windows Server 2022], classifications: [Security Updates]}\n",
        );
        let entries: Vec<&str> = p.lists[0].1.iter().map(String::as_str).collect();
        assert_eq!(entries, ["KB1", "KB2", "criteria: classifications=Security Updates; products=Windows Server 2022"]);
    }

    fn state(files: &[&Rc<Parsed>], refs: Option<&Rc<Refs>>) -> State {
        let deployment_files: Vec<Rc<Parsed>> =
            files.iter().filter(|p| !p.deployments.is_empty()).map(|p| Rc::clone(p)).collect();
        let list_files = files.iter().filter(|p| !p.lists.is_empty()).map(|p| Rc::clone(p)).collect();
        let refs = refs.cloned().unwrap_or_else(|| {
            let mut sorted: Vec<Ref> = deployment_files.iter().flat_map(|p| p.deployments.iter().cloned()).collect();
            sorted.sort();
            let mut by_list: HashMap<Rc<str>, Vec<usize>> = HashMap::new();
            for (i, (_, l)) in sorted.iter().enumerate() {
                by_list.entry(l.clone()).or_default().push(i);
            }
            Rc::new(Refs { sorted, by_list })
        });
        State { deployment_files, list_files, refs, invalid: None }
    }

    #[test]
    fn the_quick_comparison_of_changed_lists_agrees_with_comparing_every_deployment() {
        let doc = |kind: &str, name: &str, spec: &str| {
            format!("apiVersion: patchops.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n")
        };
        let deployments = Rc::new(parse(&format!(
            "{}---\n{}---\n{}",
            doc("UpdateDeployment", "a", "{updateList: one}"),
            doc("UpdateDeployment", "b", "{updateList: one}"),
            doc("UpdateDeployment", "c", "{updateList: two}")
        )));
        let two = Rc::new(parse(&doc("UpdateList", "two", "{updates: [KB9]}")));
        let one_before = Rc::new(parse(&doc("UpdateList", "one", "{updates: [KB1, KB2]}")));
        let one_after = Rc::new(parse(&doc("UpdateList", "one", "{updates: [KB2, KB3]}")));
        let old = state(&[&deployments, &one_before, &two], None);
        let quick = state(&[&deployments, &one_after, &two], Some(&old.refs));
        let full = state(&[&deployments, &one_after, &two], None);
        assert!(State::changed_lists(&old, &quick).is_some() && State::changed_lists(&old, &full).is_none());
        let all = AuditQuery::default();
        let got: Vec<(String, String, Action)> = diff(&old, &quick, &all).iter().map(Change::key).collect();
        let expected = [
            ("a", "KB3", Action::Approved),
            ("a", "KB1", Action::Withdrawn),
            ("b", "KB3", Action::Approved),
            ("b", "KB1", Action::Withdrawn),
        ];
        let mut expected: Vec<(String, String, Action)> =
            expected.iter().map(|(d, u, a)| (d.to_string(), u.to_string(), *a)).collect();
        expected.sort();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        assert_eq!(got_sorted, expected);
        assert_eq!(diff(&old, &quick, &all), diff(&old, &full, &all));
        let only_b = AuditQuery { deployment: Some("b".into()), updates: vec!["kb1".into()], since: None };
        assert_eq!(diff(&old, &quick, &only_b), diff(&old, &full, &only_b));
        assert_eq!(diff(&old, &quick, &only_b).len(), 1);
    }

    #[test]
    fn broken_yaml_and_a_deployment_without_a_list_are_problems_other_documents_are_ignored() {
        assert!(parse("kind: UpdateList\nspec: [unclosed\n").problem.unwrap().contains("YAML syntax"));
        let p = parse("apiVersion: patchops.dev/v1alpha1\nkind: UpdateDeployment\nmetadata: {name: pilot}\nspec: {}\n");
        assert_eq!(p.problem.as_deref(), Some("line 1: UpdateDeployment \"pilot\" without spec.updateList"));
        let other = parse("apiVersion: v1\nkind: UpdateList\nmetadata: {name: x}\nspec: {updates: [KB1]}\n");
        assert!(other.is_empty());
    }
}
