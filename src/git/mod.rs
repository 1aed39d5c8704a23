//! Reads the desired state (YAML files) from a git repository, straight from a commit's
//! tree: no checkout, so uncommitted changes in a work tree are never seen. A URL
//! repository is cloned (bare) into a cache folder once and fetched on every load.

pub mod audit;
pub mod plan;
pub mod rules;
pub mod status;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Once;

use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, FetchPrune, FileMode, ObjectType, RemoteCallbacks, Repository,
};

use crate::{Error, Result};

/// Where the desired state is.
#[derive(clap::Args, Debug, Clone)]
pub struct RepoArgs {
    /// Git repository: a local path or a URL (https://, ssh://, git@host:path).
    #[arg(long, default_value = ".")]
    pub repo: String,
    /// Branch, tag or commit to read (default: HEAD).
    #[arg(long)]
    pub rev: Option<String>,
    /// Folder inside the repository holding the resources.
    #[arg(long)]
    pub path: Option<String>,
}

/// The git source `RepoArgs` name, with its cache clones under `state_dir`.
pub fn git_source(repo: &RepoArgs, state_dir: &Path) -> GitSource {
    GitSource {
        repo: repo.repo.clone(),
        revision: repo.rev.clone(),
        path: repo.path.clone(),
        cache_dir: state_dir.join("git-cache"),
    }
}

/// Where the desired state comes from.
#[derive(Clone, Debug)]
pub struct GitSource {
    /// Local path of a repository (work tree or bare), or a URL (https://, ssh://, git@host:path, file://).
    pub repo: String,
    /// Branch, tag or commit (full or abbreviated sha). None: HEAD of the repository (for a URL: the remote's default branch).
    pub revision: Option<String>,
    /// Folder inside the repository holding the YAML (""/None: the whole tree).
    pub path: Option<String>,
    /// Where clones of URL repositories are cached (e.g. <state dir>/git-cache). Ignored for local paths.
    pub cache_dir: PathBuf,
}

/// The YAML files of one commit, read from its tree.
#[derive(Clone, Debug)]
pub struct SourceTree {
    /// The applied revision as Flux writes it: `<branch or tag>@sha1:<40 hex>`, or `sha1:<hex>` when the revision was a commit id.
    pub revision: String,
    /// The commit id, 40 hex.
    pub commit: String,
    /// Files ending in .yaml or .yml under `path` (any folder depth), sorted by path; paths are relative to the repository root (e.g. "examples/repo/deployments/pilot.yaml"), contents as UTF-8 text.
    pub files: Vec<(String, String)>,
}

/// The remote name used inside a cache clone. Branches of a URL repository are fetched
/// to `refs/remotes/origin/<branch>` (the cache never has local branches), tags to
/// `refs/tags/<tag>`, and the remote's default branch is recorded as the symbolic ref
/// `refs/remotes/origin/HEAD`.
const REMOTE: &str = "origin";
const FETCH_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"];
/// How long a connection to a git server may take before the fetch fails.
const CONNECT_TIMEOUT_MS: i32 = 10_000;
/// How long one read or write on a git server connection may stall.
const SERVER_TIMEOUT_MS: i32 = 60_000;
/// How many branch and tag names an unknown-revision error lists.
const LIST_LIMIT: usize = 10;

impl GitSource {
    /// Resolve the revision and read every YAML file under `path` from the commit's tree.
    ///
    /// Only regular files (mode 100644 or 100755) are read; symlinks and submodules are
    /// skipped, and so are files whose name does not end in `.yaml` or `.yml`.
    pub fn load(&self) -> Result<SourceTree> {
        let (repo, kind) = self.open(true)?;
        let (revision, commit) = self.resolve_named(&repo, kind)?;
        let commit_id = commit.id().to_string();

        let folder = normalise_path(self.path.as_deref().unwrap_or(""));
        if kind == Kind::Local && repo.head().ok().and_then(|h| h.target()) == Some(commit.id()) {
            warn_about_uncommitted_files(&repo, &self.repo, folder.as_deref().unwrap_or(""), &revision);
        }
        let tree = commit
            .tree()
            .map_err(|e| Error::git(self.shown_repo(), format!("cannot read the tree of {revision}"), e))?;
        let root = match &folder {
            Some(folder) if folder.is_empty() => Some(tree),
            Some(folder) => tree
                .get_path(Path::new(folder))
                .ok()
                .filter(|entry| entry.kind() == Some(ObjectType::Tree))
                .and_then(|entry| repo.find_tree(entry.id()).ok()),
            None => None,
        };
        let Some(root) = root else {
            return Err(self.error(format!(
                "path {:?} not found at {revision}; pass --path with a folder of the repository",
                self.path.as_deref().unwrap_or("")
            )));
        };

        let mut files = Vec::new();
        let mut pending = vec![(root, folder.unwrap_or_default())];
        while let Some((tree, prefix)) = pending.pop() {
            for entry in tree.iter() {
                let Ok(name) = entry.name() else {
                    let bytes = entry.name_bytes();
                    let used =
                        entry.kind() == Some(ObjectType::Tree) || bytes.ends_with(b".yaml") || bytes.ends_with(b".yml");
                    if !used {
                        continue;
                    }
                    return Err(self.error(format!(
                        "{:?}: file name is not UTF-8 (at {revision}); rename it",
                        join(&prefix, &String::from_utf8_lossy(entry.name_bytes()))
                    )));
                };
                let path = join(&prefix, name);
                match entry.kind() {
                    Some(ObjectType::Tree) => {
                        let subtree = repo.find_tree(entry.id()).map_err(|e| {
                            Error::git(self.shown_repo(), format!("cannot read folder {path:?} at {revision}"), e)
                        })?;
                        pending.push((subtree, path));
                    }
                    Some(ObjectType::Blob) if is_regular(entry.filemode()) && is_yaml(name) => {
                        files.push((path, entry.id()));
                    }
                    // Symlinks (blobs with mode 120000), submodules (commits) and other files.
                    _ => {}
                }
            }
        }
        files.sort();

        let files = files
            .into_iter()
            .map(|(path, id)| {
                let blob = repo
                    .find_blob(id)
                    .map_err(|e| Error::git(self.shown_repo(), format!("cannot read {path:?} at {revision}"), e))?;
                match String::from_utf8(blob.content().to_vec()) {
                    Ok(text) => Ok((path, text)),
                    Err(_) => Err(self.error(format!("{path:?}: not UTF-8 text (at {revision}); save it as UTF-8"))),
                }
            })
            .collect::<Result<Vec<_>>>()?;

        Ok(SourceTree { revision, commit: commit_id, files })
    }

    /// Resolve the revision (fetching a URL repository first): the revision as status
    /// names it (`main@sha1:<hex>`) and the commit id.
    pub fn resolve_revision(&self) -> Result<(String, String)> {
        let (repo, kind) = self.open(true)?;
        let (revision, commit) = self.resolve_named(&repo, kind)?;
        Ok((revision, commit.id().to_string()))
    }

    fn resolve_named<'r>(&self, repo: &'r Repository, kind: Kind) -> Result<(String, git2::Commit<'r>)> {
        let (name, commit) = self.resolve(repo, kind)?;
        let commit_id = commit.id();
        let revision = match name {
            Some(name) => format!("{name}@sha1:{commit_id}"),
            None => format!("sha1:{commit_id}"),
        };
        Ok((revision, commit))
    }

    /// When a commit (normally [`SourceTree::commit`]) was made, by its committer's clock:
    /// the moment a revision's declarations were approved.
    pub fn commit_time(&self, commit: &str) -> Result<jiff::Timestamp> {
        let (repo, _) = self.open(false)?;
        let found = find_commit(&repo, commit)
            .ok_or_else(|| self.error(format!("commit {commit:?} not found; pass a commit id of this repository")))?;
        Ok(jiff::Timestamp::from_second(found.time().seconds()).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
    }

    /// Read one file (any extension) from the same commit, for catalog files a resource points to by path. Returns Ok(None) when absent.
    ///
    /// `commit` is a commit id (normally [`SourceTree::commit`]); `path` is relative to
    /// the repository root. A URL repository is read from its cache clone, fetched only
    /// when the commit is not there yet. A path that names a folder, a symlink or a
    /// submodule is an error.
    pub fn read_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let (mut repo, kind) = self.open(false)?;
        if kind == Kind::Url && find_commit(&repo, commit).is_none() {
            repo = self.open(true)?.0;
        }
        let Some(commit_obj) = find_commit(&repo, commit) else {
            return Err(self.error(format!("commit {commit:?} not found; pass a commit id of this repository")));
        };
        let tree = commit_obj
            .tree()
            .map_err(|e| Error::git(self.shown_repo(), format!("cannot read the tree of {commit}"), e))?;
        let Some(relative) = normalise_path(path).filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let entry = match tree.get_path(Path::new(&relative)) {
            Ok(entry) => entry,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::git(self.shown_repo(), format!("cannot read {path:?} at {commit}"), e));
            }
        };
        if entry.kind() != Some(ObjectType::Blob) || !is_regular(entry.filemode()) {
            return Err(self.error(format!(
                "{path:?} at {commit} is not a regular file (a folder, symlink or submodule); point to a file"
            )));
        }
        let blob = repo
            .find_blob(entry.id())
            .map_err(|e| Error::git(self.shown_repo(), format!("cannot read {path:?} at {commit}"), e))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// The repository as shown in errors: a URL without its password.
    fn shown_repo(&self) -> String {
        redact(&self.repo)
    }

    fn error(&self, message: String) -> Error {
        Error::Git { repo: self.shown_repo(), message, source: None }
    }

    /// Open a local repository, or the cache clone of a URL (fetching it when `fetch`
    /// is set or the clone does not exist yet).
    fn open(&self, fetch: bool) -> Result<(Repository, Kind)> {
        if !is_url(&self.repo) {
            let repo = Repository::open(&self.repo).map_err(|e| {
                if e.code() == git2::ErrorCode::Owner {
                    let message = format!(
                        "{}; run as the repository's owner or add it to safe.directory in the git configuration",
                        e.message()
                    );
                    return Error::git(self.shown_repo(), message, e);
                }
                Error::git(
                    self.shown_repo(),
                    format!("not a git repository ({}); pass --repo with a repository path or URL", e.message()),
                    e,
                )
            })?;
            return Ok((repo, Kind::Local));
        }

        let dir = self.cache_dir.join(cache_name(&self.repo));
        let existing = if dir.exists() {
            match Repository::open_bare(&dir) {
                Ok(repo) => Some(repo),
                Err(_) => {
                    // A clone interrupted half-way: start again.
                    std::fs::remove_dir_all(&dir).map_err(|e| Error::Io { path: dir.clone(), source: e })?;
                    None
                }
            }
        } else {
            None
        };
        let (repo, fresh) = match existing {
            Some(repo) => (repo, false),
            None => {
                std::fs::create_dir_all(&self.cache_dir)
                    .map_err(|e| Error::Io { path: self.cache_dir.clone(), source: e })?;
                let repo = Repository::init_bare(&dir).map_err(|e| {
                    Error::git(self.shown_repo(), format!("cannot create the cache clone in {}", dir.display()), e)
                })?;
                (repo, true)
            }
        };
        if (fetch || fresh)
            && let Err(e) = self.fetch(&repo)
        {
            if fresh {
                // Leave no empty clone behind: the next call starts from scratch.
                drop(repo);
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
        Ok((repo, Kind::Url))
    }

    /// Fetch every branch and tag of the URL into the cache clone, pruning deleted ones,
    /// and record the remote's default branch as `refs/remotes/origin/HEAD`.
    fn fetch(&self, repo: &Repository) -> Result<()> {
        set_timeouts();
        let mut remote = match repo.find_remote(REMOTE) {
            Ok(remote) if remote.url().ok() == Some(self.repo.as_str()) => remote,
            _ => {
                let _ = repo.remote_delete(REMOTE);
                repo.remote_with_fetch(REMOTE, &self.repo, FETCH_REFSPECS[0])
                    .and_then(|_| repo.remote_add_fetch(REMOTE, FETCH_REFSPECS[1]))
                    .and_then(|_| repo.find_remote(REMOTE))
                    .map_err(|e| Error::git(self.shown_repo(), "cannot set up the cache clone", e))?
            }
        };

        let config = repo.config().ok();
        let mut tried = HashSet::new();
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(move |url, username, allowed| {
            credentials(&mut tried, config.as_ref(), url, username, allowed)
        });
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks).prune(FetchPrune::On).download_tags(AutotagOption::All);

        remote.fetch(&FETCH_REFSPECS, Some(&mut options), Some("patchops fetch")).map_err(|e| {
            Error::git(
                self.shown_repo(),
                format!(
                    "cannot fetch {}: {}; check the URL, the network and the credentials",
                    self.shown_repo(),
                    e.message()
                ),
                e,
            )
        })?;

        if let Ok(head) = remote.default_branch()
            && let Some(branch) = head.as_str().ok().and_then(|h| h.strip_prefix("refs/heads/"))
        {
            let target = format!("refs/remotes/{REMOTE}/{branch}");
            repo.reference_symbolic(
                &format!("refs/remotes/{REMOTE}/HEAD"),
                &target,
                true,
                "patchops fetch: remote default branch",
            )
            .map_err(|e| Error::git(self.shown_repo(), "cannot record the remote's default branch", e))?;
        }
        Ok(())
    }

    /// The commit the revision names, and the name for the revision string (None for a
    /// commit id).
    fn resolve<'r>(&self, repo: &'r Repository, kind: Kind) -> Result<(Option<String>, git2::Commit<'r>)> {
        let peel = |reference: git2::Reference<'r>, name: &str| {
            reference
                .peel_to_commit()
                .map_err(|e| Error::git(self.shown_repo(), format!("revision {name:?} does not point to a commit"), e))
        };

        let Some(wanted) = self.revision.as_deref().filter(|r| !r.is_empty()) else {
            return self.resolve_head(repo, kind);
        };

        if wanted == "HEAD" || wanted == "@" {
            return self.resolve_head(repo, kind);
        }
        // A local repository resolves revisions exactly as `git rev-parse` does: its
        // ref rules (refs/X, tags, then branches, then remote branches), short ids,
        // `@{upstream}`, `HEAD~2`. Only when git finds nothing, a branch of origin with
        // that name is taken (as `git checkout` would).
        if kind == Kind::Local
            && let Ok((object, reference)) = repo.revparse_ext(wanted)
        {
            let commit = object.peel_to_commit().map_err(|e| {
                Error::git(self.shown_repo(), format!("revision {wanted:?} does not point to a commit"), e)
            })?;
            let name = reference.and_then(|r| r.shorthand().ok().map(str::to_string));
            return Ok((name, commit));
        }
        // A URL's cache clone holds origin's branches under refs/remotes/origin/.
        let candidates = [
            format!("refs/remotes/{REMOTE}/{wanted}"),
            format!("refs/heads/{wanted}"),
            format!("refs/tags/{wanted}"),
            format!("refs/remotes/{wanted}"),
        ];
        for name in &candidates {
            if let Ok(reference) = repo.find_reference(name) {
                return Ok((Some(wanted.to_string()), peel(reference, wanted)?));
            }
        }
        if let Some(commit) = repo.revparse_single(wanted).ok().and_then(|object| object.peel_to_commit().ok()) {
            return Ok((None, commit));
        }

        let (branches, tags) = known_refs(repo, kind);
        Err(self.error(format!(
            "revision {wanted:?} not found; known branches: {}; tags: {}",
            list(&branches),
            list(&tags)
        )))
    }

    /// HEAD: the branch it points to (`HEAD` when detached); for a URL, the remote's
    /// default branch.
    fn resolve_head<'r>(&self, repo: &'r Repository, kind: Kind) -> Result<(Option<String>, git2::Commit<'r>)> {
        let no_commits = |e: git2::Error| {
            Error::git(
                self.shown_repo(),
                format!(
                    "HEAD does not point to a commit ({}); commit to the repository or pass --revision",
                    e.message()
                ),
                e,
            )
        };
        match kind {
            Kind::Local => {
                let head = repo.head().map_err(no_commits)?;
                let name =
                    if head.is_branch() { head.shorthand().unwrap_or("HEAD").to_string() } else { "HEAD".to_string() };
                let commit = head.peel_to_commit().map_err(no_commits)?;
                Ok((Some(name), commit))
            }
            Kind::Url => {
                let head_ref = format!("refs/remotes/{REMOTE}/HEAD");
                let target = repo
                    .find_reference(&head_ref)
                    .ok()
                    .and_then(|r| r.symbolic_target().ok().flatten().map(str::to_string));
                let prefix = format!("refs/remotes/{REMOTE}/");
                let Some(branch) = target.as_deref().and_then(|t| t.strip_prefix(prefix.as_str())).map(str::to_string)
                else {
                    let (branches, _) = known_refs(repo, kind);
                    return Err(self.error(format!(
                        "the remote has no default branch; pass --revision with a branch ({}), tag or commit",
                        list(&branches)
                    )));
                };
                let commit = repo.find_reference(&head_ref).and_then(|r| r.peel_to_commit()).map_err(no_commits)?;
                Ok((Some(branch), commit))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Local,
    Url,
}

/// The YAML files under `folder` of a work tree whose content differs from HEAD's (edited,
/// added, deleted, untracked), sorted.
pub fn uncommitted_yaml(repo: &Repository, folder: &str) -> Vec<String> {
    if repo.is_bare() {
        return Vec::new();
    }
    let mut options = git2::StatusOptions::new();
    options.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false);
    if !folder.is_empty() {
        options.pathspec(folder);
    }
    let Ok(statuses) = repo.statuses(Some(&mut options)) else { return Vec::new() };
    let mut files: Vec<String> = statuses
        .iter()
        .filter(|e| e.status() != git2::Status::CURRENT && !e.status().is_ignored())
        .filter_map(|e| e.path().ok().map(str::to_string))
        .filter(|p| is_yaml(p))
        .collect();
    files.sort();
    files
}

/// Commands read the committed tree, not the files: say so once per process when the
/// work tree holds YAML changes the commit does not contain (`validate` passing on a
/// commit while the edited file is broken surprises everyone once).
fn warn_about_uncommitted_files(repo: &Repository, shown: &str, folder: &str, revision: &str) {
    static WARNED: std::sync::Mutex<Option<HashSet<String>>> = std::sync::Mutex::new(None);
    let files = uncommitted_yaml(repo, folder);
    let Some(first) = files.first() else { return };
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !warned.get_or_insert_with(HashSet::new).insert(format!("{shown}\0{revision}")) {
        return;
    }
    tracing::warn!(
        repository = shown,
        files = files.len(),
        "{} YAML file(s) have uncommitted changes (first: {first}); patchops reads the commit {revision}, \
         not the work tree: commit them to include them",
        files.len()
    );
}

/// Set libgit2's network timeouts once, before the first fetch, so that an unresponsive
/// server fails the fetch instead of hanging it.
fn set_timeouts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: these write libgit2 globals that are read only while connecting. Every
        // network operation of the crate goes through `fetch`, which calls this first;
        // `Once` makes the writes happen before any of those reads.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS);
            let _ = git2::opts::set_server_timeout_in_milliseconds(SERVER_TIMEOUT_MS);
        }
    });
}

/// The credentials callback: each method is tried once, so that a rejected credential
/// fails the fetch instead of looping. SSH: the ssh-agent (if `SSH_AUTH_SOCK` is set), then `~/.ssh/id_ed25519`,
/// then `~/.ssh/id_rsa` (keys without a passphrase). HTTPS: the token in
/// `PATCHOPS_GIT_TOKEN` (user "x-access-token") if set, else git's credential helper.
pub(crate) fn credentials(
    tried: &mut HashSet<String>,
    config: Option<&git2::Config>,
    url: &str,
    username: Option<&str>,
    allowed: CredentialType,
) -> std::result::Result<Cred, git2::Error> {
    let user = username.unwrap_or("git");
    let mut first_try = |method: &str| tried.insert(method.to_string());

    if allowed.contains(CredentialType::USERNAME) && first_try("username") {
        return Cred::username(user);
    }
    if allowed.contains(CredentialType::SSH_KEY) {
        // Only when an agent runs: libgit2 fails the whole fetch when it cannot reach one.
        if std::env::var_os("SSH_AUTH_SOCK").is_some()
            && first_try("ssh-agent")
            && let Ok(cred) = Cred::ssh_key_from_agent(user)
        {
            return Ok(cred);
        }
        if let Some(home) = std::env::var_os("HOME") {
            let ssh = PathBuf::from(home).join(".ssh");
            for key in ["id_ed25519", "id_rsa"] {
                let private = ssh.join(key);
                if private.is_file() && first_try(key) {
                    let public = ssh.join(format!("{key}.pub"));
                    let public = public.is_file().then_some(public);
                    return Cred::ssh_key(user, public.as_deref(), &private, None);
                }
            }
        }
    }
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
        match std::env::var("PATCHOPS_GIT_TOKEN") {
            Ok(token) if !token.is_empty() => {
                if first_try("token") {
                    return Cred::userpass_plaintext("x-access-token", &token);
                }
            }
            _ => {
                if first_try("credential-helper") {
                    let default;
                    let config = match config {
                        Some(config) => config,
                        None => {
                            default = git2::Config::open_default()?;
                            &default
                        }
                    };
                    return Cred::credential_helper(config, url, username);
                }
            }
        }
    }
    Err(git2::Error::from_str(
        "authentication failed (tried the ssh-agent, ~/.ssh/id_ed25519, ~/.ssh/id_rsa for ssh; \
         PATCHOPS_GIT_TOKEN or the git credential helper for https)",
    ))
}

/// The branch names (local ones, then remote ones; for a URL repository the remote's
/// branches without the `origin/` prefix) and tag names, each sorted.
fn known_refs(repo: &Repository, kind: Kind) -> (Vec<String>, Vec<String>) {
    let mut local = Vec::new();
    let mut remote = Vec::new();
    let mut tags = Vec::new();
    let remote_prefix = format!("refs/remotes/{REMOTE}/");
    if let Ok(references) = repo.references() {
        for reference in references.flatten() {
            let Ok(name) = reference.name() else {
                continue;
            };
            if name.ends_with("/HEAD") {
                continue;
            }
            if let Some(branch) = name.strip_prefix("refs/heads/") {
                local.push(branch.to_string());
            } else if let Some(tag) = name.strip_prefix("refs/tags/") {
                tags.push(tag.to_string());
            } else if kind == Kind::Url
                && let Some(branch) = name.strip_prefix(remote_prefix.as_str())
            {
                remote.push(branch.to_string());
            } else if let Some(branch) = name.strip_prefix("refs/remotes/") {
                remote.push(branch.to_string());
            }
        }
    }
    local.sort();
    remote.sort();
    tags.sort();
    local.extend(remote);
    (local, tags)
}

/// Up to LIST_LIMIT names, comma-separated.
fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    let mut shown = names.iter().take(LIST_LIMIT).map(String::as_str).collect::<Vec<_>>().join(", ");
    if names.len() > LIST_LIMIT {
        shown.push_str(&format!(" and {} more", names.len() - LIST_LIMIT));
    }
    shown
}

fn find_commit<'r>(repo: &'r Repository, commit: &str) -> Option<git2::Commit<'r>> {
    repo.revparse_single(commit).ok().and_then(|object| object.peel_to_commit().ok())
}

/// A folder path inside the repository without empty, `.` and leading/trailing `/`
/// parts ("" for the root); None when it climbs out with `..`.
fn normalise_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") }
}

fn is_regular(mode: i32) -> bool {
    mode == i32::from(FileMode::Blob) || mode == i32::from(FileMode::BlobExecutable)
}

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Whether `repo` is a URL (`scheme://…` or scp-like `user@host:path`) rather than a
/// local path. An existing local path always counts as a path.
fn is_url(repo: &str) -> bool {
    if repo.contains("://") {
        return true;
    }
    if Path::new(repo).exists() {
        return false;
    }
    match repo.split_once(':') {
        Some((host, _)) => host.contains('@') && !host.contains('/'),
        None => false,
    }
}

/// The URL without a password (`https://user:secret@host` → `https://user:***@host`).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_string(),
    }
}

/// The cache folder name of a URL: its host and path with other characters replaced by
/// `_`, and a hash of the URL (without credentials) so that different URLs never share a
/// folder.
fn cache_name(url: &str) -> String {
    use sha2::{Digest, Sha256};
    // `scheme://[user[:password]@]host/path`, or scp-like `[user@]host:path`.
    let (scheme, rest, separator) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme, rest, '/'),
        None => ("ssh", url, ':'),
    };
    let (authority, path) = rest.split_at(rest.find(separator).unwrap_or(rest.len()));
    let path = path.trim_start_matches([':', '/']);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let hash = Sha256::digest(format!("{scheme}://{host}/{path}"));
    let readable: String = format!("{host}/{path}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .take(80)
        .collect();
    format!("{}-{}", readable.trim_matches(['_', '.']), &hex::encode(hash)[..12])
}

/// Push `refs/heads/<branch>` to a remote (a name of the repository, a URL or a path),
/// without force. `flag` is the option that named the remote, for the error message.
pub(crate) fn push_branch(repo: &Repository, remote: &str, branch: &str, flag: &str) -> Result<(), String> {
    set_timeouts();
    let mut handle = match repo.find_remote(remote) {
        Ok(r) => r,
        Err(_) if is_url(remote) || std::path::Path::new(remote).exists() => {
            repo.remote_anonymous(remote).map_err(|e| format!("cannot use remote {remote:?}: {}", e.message()))?
        }
        Err(_) => {
            let names = repo.remotes().map(|r| r.iter().flatten().flatten().map(str::to_string).collect::<Vec<_>>());
            let names = names.unwrap_or_default();
            let known = if names.is_empty() { "none configured".to_string() } else { names.join(", ") };
            return Err(format!(
                "remote {remote:?} not found; pass {flag} with a remote of the repository ({known}) or a URL"
            ));
        }
    };
    let config = repo.config().ok();
    let mut tried = std::collections::HashSet::new();
    let mut rejected = None;
    {
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.credentials(move |url, username, allowed| {
            credentials(&mut tried, config.as_ref(), url, username, allowed)
        });
        callbacks.push_update_reference(|refname, status| {
            if let Some(status) = status {
                rejected = Some(format!("{refname}: {status}"));
            }
            Ok(())
        });
        let mut options = git2::PushOptions::new();
        options.remote_callbacks(callbacks);
        let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
        handle.push(&[refspec.as_str()], Some(&mut options)).map_err(|e| {
            format!(
                "cannot push to {}: {}; check the remote, the network and the credentials",
                redact(remote),
                e.message()
            )
        })?;
    }
    match rejected {
        Some(why) => Err(format!(
            "the remote rejected the push ({why}); the remote branch moved — fetch it or remove the local branch"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use git2::{IndexAddOption, Oid, Signature};
    use std::time::{Duration, Instant};
    use tempfile::TempDir;

    /// A work-tree repository with branch `main` checked out (HEAD → refs/heads/main).
    fn new_repo(dir: &Path) -> Repository {
        let repo = Repository::init(dir).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        repo
    }

    /// Write `files` into the work tree (a None content deletes the file), stage
    /// everything and commit on the current branch.
    fn commit(repo: &Repository, files: &[(&str, Option<&str>)], message: &str) -> Oid {
        let root = repo.workdir().unwrap();
        for (path, content) in files {
            let full = root.join(path);
            match content {
                Some(content) => {
                    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                    std::fs::write(&full, content).unwrap();
                }
                None => std::fs::remove_file(&full).unwrap(),
            }
        }
        let mut index = repo.index().unwrap();
        index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = Signature::now("Test", "t@example.com").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &signature, &signature, message, &tree, &parents).unwrap()
    }

    fn annotated_tag(repo: &Repository, name: &str, commit: Oid) {
        let signature = Signature::now("Test", "t@example.com").unwrap();
        let object = repo.find_object(commit, None).unwrap();
        repo.tag(name, &object, &signature, "release", false).unwrap();
    }

    fn source(repo: &str, revision: Option<&str>, path: Option<&str>, cache: &Path) -> GitSource {
        GitSource {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
            path: path.map(str::to_string),
            cache_dir: cache.to_path_buf(),
        }
    }

    fn local(dir: &TempDir, revision: Option<&str>, path: Option<&str>) -> GitSource {
        source(dir.path().to_str().unwrap(), revision, path, &dir.path().join("unused-cache"))
    }

    fn paths(tree: &SourceTree) -> Vec<&str> {
        tree.files.iter().map(|(p, _)| p.as_str()).collect()
    }

    fn message(error: Error) -> String {
        error.to_string()
    }

    #[test]
    fn reads_yaml_files_at_any_depth_from_a_branch_in_sorted_order_ignoring_other_files() {
        let dir = TempDir::new().unwrap();
        let repo = new_repo(dir.path());
        let id = commit(
            &repo,
            &[
                ("z.yaml", Some("z: 1\n")),
                ("README.md", Some("# docs\n")),
                ("examples/repo/deployments/pilot.yaml", Some("kind: Deployment\n")),
                ("examples/repo/a.yml", Some("a: 1\n")),
                ("examples/repo/deep/er/still/x.yaml", Some("x: 1\n")),
                ("examples/repo/notes.txt", Some("no\n")),
                ("examples/repo/yaml", Some("not yaml by name\n")),
                ("a-b.yaml", Some("ab: 1\n")),
            ],
            "first",
        );

        for revision in [None, Some("main")] {
            let tree = local(&dir, revision, None).load().unwrap();
            assert_eq!(tree.commit, id.to_string());
            assert_eq!(tree.revision, format!("main@sha1:{id}"));
            assert_eq!(
                paths(&tree),
                [
                    "a-b.yaml",
                    "examples/repo/a.yml",
                    "examples/repo/deep/er/still/x.yaml",
                    "examples/repo/deployments/pilot.yaml",
                    "z.yaml",
                ]
            );
            assert_eq!(tree.files[3].1, "kind: Deployment\n");
        }
    }

    #[test]
    fn reads_an_older_state_by_annotated_tag_and_by_full_or_short_commit_id() {
        let dir = TempDir::new().unwrap();
        let repo = new_repo(dir.path());
        let old = commit(&repo, &[("a.yaml", Some("v: 1\n"))], "one");
        annotated_tag(&repo, "v1.2", old);
        let new = commit(&repo, &[("a.yaml", Some("v: 2\n")), ("b.yaml", Some("b\n"))], "two");

        let head = local(&dir, None, None).load().unwrap();
        assert_eq!(head.revision, format!("main@sha1:{new}"));
        assert_eq!(head.files.len(), 2);

        repo.set_head_detached(old).unwrap();
        let detached = local(&dir, None, None).load().unwrap();
        assert_eq!(detached.revision, format!("HEAD@sha1:{old}"));
        repo.set_head("refs/heads/main").unwrap();

        let tagged = local(&dir, Some("v1.2"), None).load().unwrap();
        assert_eq!(tagged.revision, format!("v1.2@sha1:{old}"));
        assert_eq!(tagged.commit, old.to_string());
        assert_eq!(tagged.files, [("a.yaml".to_string(), "v: 1\n".to_string())]);

        let full = old.to_string();
        for id in [full.as_str(), &full[..7]] {
            let by_id = local(&dir, Some(id), None).load().unwrap();
            assert_eq!(by_id.revision, format!("sha1:{old}"));
            assert_eq!(by_id.commit, full);
            assert_eq!(by_id.files[0].1, "v: 1\n");
        }
    }

    /// `git rev-parse` in `dir`, as the oracle for revision forms.
    fn rev_parse(dir: &Path, revision: &str) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["rev-parse", "--verify", "--quiet", &format!("{revision}^{{commit}}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "git rev-parse {revision}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A CI checkout: a clone whose HEAD is detached at a pull request's commit, while
    /// origin/HEAD (origin/main) is elsewhere. Every revision form resolves to the commit
    /// `git rev-parse` names, and HEAD is the checked-out commit, not origin's HEAD.
    #[test]
    fn revisions_resolve_in_a_clone_with_a_detached_head_exactly_as_git_rev_parse_does() {
        let origin_dir = TempDir::new().unwrap();
        let origin = new_repo(origin_dir.path());
        let base = commit(&origin, &[("a.yaml", Some("v: 1\n"))], "one");
        annotated_tag(&origin, "v1", base);
        let main = commit(&origin, &[("a.yaml", Some("v: 2\n"))], "two");
        origin.branch("feature", &origin.find_commit(base).unwrap(), false).unwrap();
        origin.set_head("refs/heads/feature").unwrap();
        origin.checkout_head(Some(git2::build::CheckoutBuilder::new().force())).unwrap();
        let pr = commit(&origin, &[("a.yaml", Some("v: 3\n"))], "pull request");
        origin.set_head("refs/heads/main").unwrap();

        let clone_dir = TempDir::new().unwrap();
        let clone = clone_dir.path().join("checkout");
        let status = std::process::Command::new("git")
            .args(["clone", "-q", origin_dir.path().to_str().unwrap()])
            .arg(&clone)
            .status()
            .unwrap();
        assert!(status.success());
        git(&clone, &["checkout", "-q", "--detach", &pr.to_string()]);
        let at = |revision: &str| {
            source(clone.to_str().unwrap(), Some(revision), None, &clone_dir.path().join("cache"))
                .resolve_revision()
                .unwrap()
        };

        let (revision, commit_id) = at("HEAD");
        assert_eq!((revision, commit_id.clone()), (format!("HEAD@sha1:{pr}"), pr.to_string()));
        assert_eq!(commit_id, rev_parse(&clone, "HEAD"));
        // Without --rev, the same commit.
        let plain = source(clone.to_str().unwrap(), None, None, &clone_dir.path().join("cache")).resolve_revision();
        assert_eq!(plain.unwrap().1, pr.to_string());

        let short = &main.to_string()[..8];
        let pr_parent = format!("{pr}~1");
        for (form, name) in [
            ("origin/main", Some("origin/main")),
            ("origin/feature", Some("origin/feature")),
            // A symbolic ref is named by the branch it points to (git rev-parse --symbolic-full-name).
            ("origin/HEAD", Some("origin/main")),
            ("v1", Some("v1")),
            ("main", Some("main")),
            (short, None),
            (pr_parent.as_str(), None),
        ] {
            let (revision, commit_id) = at(form);
            assert_eq!(commit_id, rev_parse(&clone, form), "{form}");
            match name {
                Some(name) => assert_eq!(revision, format!("{name}@sha1:{commit_id}"), "{form}"),
                None => assert_eq!(revision, format!("sha1:{commit_id}"), "{form}"),
            }
        }
        // @{upstream} needs a branch: on main (tracking origin/main), after origin moved on.
        git(&clone, &["checkout", "-q", "main"]);
        git(&clone, &["reset", "-q", "--hard", &base.to_string()]);
        let (revision, commit_id) = at("@{upstream}");
        assert_eq!(commit_id, rev_parse(&clone, "@{upstream}"));
        assert_eq!(commit_id, main.to_string());
        assert!(revision.starts_with("origin/main@sha1:"), "{revision}");
        // A tag and a branch with one name: git takes the tag, and so does patchops.
        git(&clone, &["branch", "v1", &pr.to_string()]);
        assert_eq!(at("v1").1, rev_parse(&clone, "v1"));
        assert_eq!(at("v1").1, base.to_string());
    }

    #[test]
    fn a_path_restricts_the_files_to_a_folder_and_a_missing_path_is_a_clear_error() {
        let dir = TempDir::new().unwrap();
        let repo = new_repo(dir.path());
        let id = commit(
            &repo,
            &[
                ("top.yaml", Some("t\n")),
                ("examples/other/o.yaml", Some("o\n")),
                ("examples/repo/r.yaml", Some("r\n")),
                ("examples/repo/sub/s.yml", Some("s\n")),
            ],
            "first",
        );

        for path in ["examples/repo", "/examples/repo/", "./examples/repo"] {
            let tree = local(&dir, None, Some(path)).load().unwrap();
            assert_eq!(paths(&tree), ["examples/repo/r.yaml", "examples/repo/sub/s.yml"]);
        }
        for whole in ["", "/", "."] {
            assert_eq!(local(&dir, None, Some(whole)).load().unwrap().files.len(), 4);
        }

        let missing = message(local(&dir, None, Some("nope")).load().unwrap_err());
        assert!(missing.contains(&format!("path \"nope\" not found at main@sha1:{id}")), "{missing}");
        let file = message(local(&dir, None, Some("top.yaml")).load().unwrap_err());
        assert!(file.contains("path \"top.yaml\" not found"), "{file}");
    }

    #[test]
    fn a_missing_revision_is_an_error_listing_known_branches_and_tags() {
        let dir = TempDir::new().unwrap();
        let repo = new_repo(dir.path());
        let id = commit(&repo, &[("a.yaml", Some("a\n"))], "first");
        let head = repo.find_commit(id).unwrap();
        repo.branch("feature", &head, false).unwrap();
        annotated_tag(&repo, "v1", id);

        let error = message(local(&dir, Some("nope"), None).load().unwrap_err());
        assert!(error.contains("revision \"nope\" not found; known branches: feature, main; tags: v1"), "{error}");
    }

    #[test]
    fn a_folder_that_is_not_a_repository_is_a_clear_error() {
        let dir = TempDir::new().unwrap();
        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        for repo in [plain.clone(), dir.path().join("missing")] {
            let error = message(source(repo.to_str().unwrap(), None, None, dir.path()).load().unwrap_err());
            assert!(error.contains("not a git repository"), "{error}");
            assert!(error.contains("pass --repo"), "{error}");
            assert!(error.contains(repo.to_str().unwrap()), "{error}");
        }
    }

    #[test]
    fn a_url_repository_is_cloned_into_the_cache_and_fetched_again_on_the_next_load() {
        let origin_dir = TempDir::new().unwrap();
        let origin = new_repo(origin_dir.path());
        let first = commit(&origin, &[("a.yaml", Some("a: 1\n"))], "one");
        annotated_tag(&origin, "v1", first);
        let cache = TempDir::new().unwrap();
        let url = format!("file://{}", origin_dir.path().display());

        let tree = source(&url, None, None, cache.path()).load().unwrap();
        assert_eq!(tree.revision, format!("main@sha1:{first}"));
        assert_eq!(tree.files, [("a.yaml".to_string(), "a: 1\n".to_string())]);
        let clones: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
        assert_eq!(clones.len(), 1, "one cache clone");

        let second = commit(&origin, &[("b.yaml", Some("b: 1\n"))], "two");
        let tree = source(&url, Some("main"), None, cache.path()).load().unwrap();
        assert_eq!(tree.revision, format!("main@sha1:{second}"));
        assert_eq!(paths(&tree), ["a.yaml", "b.yaml"]);

        let tagged = source(&url, Some("v1"), None, cache.path()).load().unwrap();
        assert_eq!(tagged.revision, format!("v1@sha1:{first}"));

        let error = message(source(&url, Some("nope"), None, cache.path()).load().unwrap_err());
        assert!(error.contains("known branches: main; tags: v1"), "{error}");

        let file = source(&url, None, None, cache.path()).read_file(&second.to_string(), "b.yaml").unwrap();
        assert_eq!(file.as_deref(), Some(&b"b: 1\n"[..]));
    }

    #[test]
    fn an_unreachable_http_url_fails_quickly_with_a_clear_error() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let cache = TempDir::new().unwrap();
        let url = format!("http://127.0.0.1:{port}/x.git");

        let started = Instant::now();
        let error = message(source(&url, None, None, cache.path()).load().unwrap_err());
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        assert!(error.contains(&format!("cannot fetch {url}: ")), "{error}");
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "no half-made clone is left behind");
    }

    #[test]
    fn read_file_returns_the_bytes_of_a_file_at_the_commit_and_none_when_absent() {
        let dir = TempDir::new().unwrap();
        let repo = new_repo(dir.path());
        let old = commit(&repo, &[("catalog/updates.xml", Some("<old/>"))], "one");
        let new = commit(&repo, &[("catalog/updates.xml", Some("<new/>"))], "two");
        let git = local(&dir, None, None);

        let read = |commit: Oid, path: &str| git.read_file(&commit.to_string(), path).unwrap();
        assert_eq!(read(old, "catalog/updates.xml").as_deref(), Some(&b"<old/>"[..]));
        assert_eq!(read(new, "catalog/updates.xml").as_deref(), Some(&b"<new/>"[..]));
        assert_eq!(read(new, "./catalog/updates.xml").as_deref(), Some(&b"<new/>"[..]));
        assert_eq!(read(new, "catalog/missing.xml"), None);
        assert_eq!(read(new, "nowhere/missing.xml"), None);
        assert!(git.read_file(&new.to_string(), "catalog").is_err(), "a folder is not a file");
    }

    #[test]
    fn uncommitted_changes_in_the_work_tree_are_not_seen() {
        let dir = TempDir::new().unwrap();
        let repo = new_repo(dir.path());
        commit(&repo, &[("a.yaml", Some("committed\n"))], "one");
        std::fs::write(dir.path().join("a.yaml"), "edited\n").unwrap();
        std::fs::write(dir.path().join("new.yaml"), "untracked\n").unwrap();

        let tree = local(&dir, None, None).load().unwrap();
        assert_eq!(tree.files, [("a.yaml".to_string(), "committed\n".to_string())]);
    }

    #[test]
    fn symlinks_submodules_and_non_utf8_files_are_handled() {
        let dir = TempDir::new().unwrap();
        let repo = new_repo(dir.path());
        let blob = |content: &[u8]| repo.blob(content).unwrap();
        let mut builder = repo.treebuilder(None).unwrap();
        builder.insert("real.yaml", blob(b"r\n"), FileMode::Blob.into()).unwrap();
        builder.insert("link.yaml", blob(b"real.yaml"), FileMode::Link.into()).unwrap();
        builder.insert("module.yaml", Oid::from_str(&"1".repeat(40)).unwrap(), FileMode::Commit.into()).unwrap();
        let good = builder.write().unwrap();
        builder.insert("bad.yaml", blob(b"\xff\xfe"), FileMode::Blob.into()).unwrap();
        let bad = builder.write().unwrap();

        let signature = Signature::now("Test", "t@example.com").unwrap();
        let good_commit =
            repo.commit(None, &signature, &signature, "good", &repo.find_tree(good).unwrap(), &[]).unwrap();
        let bad_commit = repo.commit(None, &signature, &signature, "bad", &repo.find_tree(bad).unwrap(), &[]).unwrap();

        let tree = local(&dir, Some(&good_commit.to_string()), None).load().unwrap();
        assert_eq!(paths(&tree), ["real.yaml"]);

        let error = message(local(&dir, Some(&bad_commit.to_string()), None).load().unwrap_err());
        assert!(error.contains("\"bad.yaml\": not UTF-8 text"), "{error}");
    }

    #[test]
    fn urls_are_told_apart_from_paths_and_named_safely_in_the_cache() {
        assert!(is_url("https://github.com/o/r.git"));
        assert!(is_url("ssh://git@github.com/o/r.git"));
        assert!(is_url("git@github.com:o/r.git"));
        assert!(is_url("file:///srv/repo"));
        assert!(!is_url("/srv/repo"));
        assert!(!is_url("relative/repo"));

        assert_eq!(redact("https://user:secret@host/o/r.git"), "https://user:***@host/o/r.git");
        assert_eq!(redact("git@host:o/r.git"), "git@host:o/r.git");

        let name = cache_name("https://user:secret@github.com/o/r.git");
        assert!(name.starts_with("github.com_o_r.git-"), "{name}");
        assert!(!name.contains("secret"));
        assert_eq!(name, cache_name("https://github.com/o/r.git"));
        assert_ne!(name, cache_name("https://github.com/o/r2.git"));
        assert!(cache_name("git@github.com:o/r.git").starts_with("github.com_o_r.git-"));
    }
}
