//! `patchops audit` against real git repositories built here: several authors, branches
//! merged through GitHub- and GitLab-style pull requests, files renamed and moved, an
//! update withdrawn and approved again, and a broken revision. Every answer is checked
//! against the history the test made.

use std::collections::BTreeMap;
use std::process::Command;

use git2::{Oid, Repository, Signature, Time};
use jiff::Timestamp;
use patchops::git::GitSource;
use patchops::git::audit::{Action, AuditEvent, AuditQuery, AuditReport, audit};

type Files = BTreeMap<String, String>;

fn list(name: &str, updates: &[&str]) -> String {
    format!(
        "apiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {{name: {name}}}\nspec:\n  updates: [{}]\n",
        updates.join(", ")
    )
}

fn deployment(name: &str, list: &str) -> String {
    format!(
        "apiVersion: patchops.dev/v1alpha1\nkind: UpdateDeployment\nmetadata: {{name: {name}}}\nspec:\n  updateList: {list}\n  collection: servers\n  startTime: 2026-12-01T00:00:00Z\n  deadline: 2026-12-15T00:00:00Z\n"
    )
}

const T0: i64 = 1_790_000_000;

/// Write `files` as a tree of nested folders, in memory.
fn tree(repo: &Repository, files: &Files) -> Oid {
    let mut folders: BTreeMap<&str, Files> = BTreeMap::new();
    let mut builder = repo.treebuilder(None).unwrap();
    for (path, text) in files {
        match path.split_once('/') {
            Some((folder, rest)) => {
                folders.entry(folder).or_default().insert(rest.to_string(), text.clone());
            }
            None => {
                builder.insert(path, repo.blob(text.as_bytes()).unwrap(), 0o100644).unwrap();
            }
        }
    }
    for (folder, inner) in folders {
        builder.insert(folder, tree(repo, &inner), 0o040000).unwrap();
    }
    builder.write().unwrap()
}

struct Who {
    name: &'static str,
    email: &'static str,
}

const ALICE: Who = Who { name: "Alice Admin", email: "alice@example.com" };
const BOB: Who = Who { name: "Bob Builder", email: "bob@example.com" };
const CAROL: Who = Who { name: "Carol Approver", email: "carol@example.com" };
const GITHUB: Who = Who { name: "GitHub", email: "noreply@github.com" };
const DAVE: Who = Who { name: "Dave Mover", email: "dave@example.com" };
const ERIN: Who = Who { name: "Erin Fixer", email: "erin@example.com" };
const FRANK: Who = Who { name: "Frank Maintainer", email: "frank@example.com" };

struct Book {
    repo: Repository,
    clock: i64,
}

impl Book {
    fn new(dir: &std::path::Path) -> Self {
        let repo = Repository::init(dir).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        Book { repo, clock: T0 }
    }

    /// Commit `files` (the whole tree) on `branch` with `parents`; an hour after the last one.
    fn commit(
        &mut self,
        branch: &str,
        parents: &[Oid],
        files: &Files,
        author: &Who,
        committer: &Who,
        msg: &str,
    ) -> Oid {
        self.clock += 3600;
        let time = Time::new(self.clock, 0);
        let author = Signature::new(author.name, author.email, &time).unwrap();
        let committer = Signature::new(committer.name, committer.email, &time).unwrap();
        let tree = self.repo.find_tree(tree(&self.repo, files)).unwrap();
        let parents: Vec<git2::Commit> = parents.iter().map(|p| self.repo.find_commit(*p).unwrap()).collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        let refname = format!("refs/heads/{branch}");
        self.repo.commit(Some(&refname), &author, &committer, msg, &tree, &parents).unwrap()
    }

    fn time(&self, commit: Oid) -> Timestamp {
        Timestamp::from_second(self.repo.find_commit(commit).unwrap().time().seconds()).unwrap()
    }
}

fn files(entries: &[(&str, String)]) -> Files {
    entries.iter().map(|(p, t)| (p.to_string(), t.clone())).collect()
}

/// The history every test reads, and the commits it made.
struct Story {
    _dir: tempfile::TempDir,
    book: Book,
    c1_approve: Oid,
    c2_bob_adds_kb3: Oid,
    m1_github_merge: Oid,
    c4_rename: Oid,
    c5_withdraw_kb2: Oid,
    c6_erin_readds_kb2: Oid,
    c6b_erin_broad: Oid,
    m2_gitlab_merge: Oid,
    c7_broken: Oid,
}

fn story() -> Story {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Book::new(dir.path());
    let readme = ("README.md", "# patching\n".to_string());
    let v1 = files(&[
        readme.clone(),
        ("lists/dec.yaml", list("dec", &["KB1", "KB2"])),
        ("deployments/pilot.yaml", deployment("pilot", "dec")),
    ]);
    let c1 = b.commit("main", &[], &v1, &ALICE, &ALICE, "Approve December updates for pilot");

    let mut v2 = v1.clone();
    v2.insert("lists/dec.yaml".into(), list("dec", &["KB1", "KB2", "KB3"]));
    let c2 = b.commit("feature", &[c1], &v2, &BOB, &BOB, "Add KB3 to December");

    let mut v3 = v1.clone();
    v3.insert("README.md".into(), "# patching\n\nHow we patch.\n".into());
    let c3 = b.commit("main", &[c1], &v3, &ALICE, &ALICE, "Document the process");

    let mut merged = v2.clone();
    merged.insert("README.md".into(), v3["README.md"].clone());
    let m1 = b.commit(
        "main",
        &[c3, c2],
        &merged,
        &CAROL,
        &GITHUB,
        "Merge pull request #12 from acme/feature\n\nAdd KB3 to December",
    );

    // Move both files to other folders and names: nothing deployed changes.
    let mut moved = merged.clone();
    let dec = moved.remove("lists/dec.yaml").unwrap();
    let pilot = moved.remove("deployments/pilot.yaml").unwrap();
    moved.insert("update-lists/2026/december.yaml".into(), dec);
    moved.insert("pilot.yaml".into(), pilot);
    let c4 = b.commit("main", &[m1], &moved, &DAVE, &DAVE, "Reorganise folders");

    let mut v5 = moved.clone();
    v5.insert("update-lists/2026/december.yaml".into(), list("dec", &["KB1", "KB3"]));
    let c5 = b.commit("main", &[c4], &v5, &ALICE, &ALICE, "Withdraw KB2: it breaks printing");

    let mut v6 = v5.clone();
    v6.insert("update-lists/2026/december.yaml".into(), list("dec", &["KB1", "KB2", "KB3"]));
    let c6 = b.commit("readd", &[c5], &v6, &ERIN, &ERIN, "Approve KB2 again: fixed build");
    let mut v6b = v6.clone();
    v6b.insert("broad.yaml".into(), deployment("broad", "dec"));
    let c6b = b.commit("readd", &[c6], &v6b, &ERIN, &ERIN, "Deploy December to everyone");
    let m2 = b.commit(
        "main",
        &[c5, c6b],
        &v6b,
        &FRANK,
        &FRANK,
        "Merge branch 'readd' into 'main'\n\nApprove KB2 again\n\nSee merge request ops/patching!45",
    );

    let mut broken = v6b.clone();
    broken.insert(
        "pilot.yaml".into(),
        "apiVersion: patchops.dev/v1alpha1\nkind: UpdateDeployment\nspec: [unclosed\n".into(),
    );
    let c7 = b.commit("main", &[m2], &broken, &ALICE, &ALICE, "wip");
    b.commit("main", &[c7], &v6b, &ALICE, &ALICE, "Restore pilot");

    Story {
        _dir: dir,
        book: b,
        c1_approve: c1,
        c2_bob_adds_kb3: c2,
        m1_github_merge: m1,
        c4_rename: c4,
        c5_withdraw_kb2: c5,
        c6_erin_readds_kb2: c6,
        c6b_erin_broad: c6b,
        m2_gitlab_merge: m2,
        c7_broken: c7,
    }
}

fn run(s: &Story, query: &AuditQuery) -> AuditReport {
    let source = GitSource {
        repo: s.book.repo.path().parent().unwrap().display().to_string(),
        revision: Some("main".into()),
        path: None,
        cache_dir: s._dir.path().join("cache"),
    };
    audit(&source, query).unwrap()
}

/// (action, update, deployment, commit, pull request, author, committer, via commit, via author)
type Row = (Action, String, String, Oid, Option<String>, String, String, Option<Oid>, Option<String>);

fn rows(report: &AuditReport) -> Vec<Row> {
    report
        .events
        .iter()
        .map(|e: &AuditEvent| {
            (
                e.action,
                e.update.clone(),
                e.deployment.clone(),
                Oid::from_str(&e.commit).unwrap(),
                e.pull_request.clone(),
                e.author.name.clone(),
                e.committer.name.clone(),
                e.via.as_ref().map(|v| Oid::from_str(&v.commit).unwrap()),
                e.via.as_ref().map(|v| v.author.name.clone()),
            )
        })
        .collect()
}

fn row(
    action: Action,
    update: &str,
    deployment: &str,
    commit: Oid,
    pr: Option<&str>,
    (author, committer): (&Who, &Who),
    via: Option<(Oid, &Who)>,
) -> Row {
    (
        action,
        update.into(),
        deployment.into(),
        commit,
        pr.map(str::to_string),
        author.name.into(),
        committer.name.into(),
        via.map(|v| v.0),
        via.map(|v| v.1.name.to_string()),
    )
}

#[test]
fn audit_names_who_approved_and_withdrew_each_update_in_which_commit_and_pull_request() {
    let s = story();
    let report = run(&s, &AuditQuery::default());
    use Action::*;
    let expected = vec![
        row(Approved, "KB1", "pilot", s.c1_approve, None, (&ALICE, &ALICE), None),
        row(Approved, "KB2", "pilot", s.c1_approve, None, (&ALICE, &ALICE), None),
        row(
            Approved,
            "KB3",
            "pilot",
            s.m1_github_merge,
            Some("#12"),
            (&CAROL, &GITHUB),
            Some((s.c2_bob_adds_kb3, &BOB)),
        ),
        row(Withdrawn, "KB2", "pilot", s.c5_withdraw_kb2, None, (&ALICE, &ALICE), None),
        row(
            Approved,
            "KB1",
            "broad",
            s.m2_gitlab_merge,
            Some("!45"),
            (&FRANK, &FRANK),
            Some((s.c6b_erin_broad, &ERIN)),
        ),
        row(
            Approved,
            "KB2",
            "broad",
            s.m2_gitlab_merge,
            Some("!45"),
            (&FRANK, &FRANK),
            Some((s.c6b_erin_broad, &ERIN)),
        ),
        row(
            Approved,
            "KB3",
            "broad",
            s.m2_gitlab_merge,
            Some("!45"),
            (&FRANK, &FRANK),
            Some((s.c6b_erin_broad, &ERIN)),
        ),
        row(
            Approved,
            "KB2",
            "pilot",
            s.m2_gitlab_merge,
            Some("!45"),
            (&FRANK, &FRANK),
            Some((s.c6_erin_readds_kb2, &ERIN)),
        ),
    ];
    assert_eq!(rows(&report), expected);
    assert_eq!(report.revision, format!("main@sha1:{}", s.book.repo.refname_to_id("refs/heads/main").unwrap()));
    // First-parent chain: c1, c3, m1, c4, c5, m2, c7, c8 — the merged branches' commits are not walked.
    assert_eq!(report.commits_walked, 8);
    let merge = &report.events[2];
    assert_eq!(merge.update_list, "dec");
    assert_eq!(merge.summary, "Merge pull request #12 from acme/feature");
    assert_eq!(merge.author.time, s.book.time(s.m1_github_merge));
    assert_eq!(merge.author.email, "carol@example.com");
    assert_eq!(merge.committer.email, "noreply@github.com");
}

#[test]
fn renaming_and_moving_files_is_neither_a_withdrawal_nor_an_approval() {
    let s = story();
    let report = run(&s, &AuditQuery::default());
    assert!(report.events.iter().all(|e| e.commit != s.c4_rename.to_string()), "{:#?}", report.events);
    // Same blobs at new paths: parsed once each.
    let since = AuditQuery { since: Some(s.book.time(s.c4_rename)), ..Default::default() };
    let from_rename = run(&s, &since);
    assert_eq!(rows(&from_rename)[0].3, s.c5_withdraw_kb2);
}

#[test]
fn a_revision_the_reconciler_rejects_is_skipped_without_spurious_changes() {
    let s = story();
    let report = run(&s, &AuditQuery::default());
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].commit, s.c7_broken.to_string());
    assert!(
        report.skipped[0].reason.starts_with("pilot.yaml: line 3: YAML syntax: unclosed bracket"),
        "{}",
        report.skipped[0].reason
    );
    // Neither the broken commit nor its repair withdrew or approved anything.
    assert_eq!(report.events.last().unwrap().commit, s.m2_gitlab_merge.to_string());
}

#[test]
fn filters_by_update_deployment_and_since_return_only_the_matching_changes() {
    let s = story();
    let kb2_pilot = run(&s, &AuditQuery { updates: vec!["kb2".into()], deployment: Some("pilot".into()), since: None });
    let got: Vec<(Action, Oid)> = rows(&kb2_pilot).into_iter().map(|r| (r.0, r.3)).collect();
    assert_eq!(
        got,
        [
            (Action::Approved, s.c1_approve),
            (Action::Withdrawn, s.c5_withdraw_kb2),
            (Action::Approved, s.m2_gitlab_merge)
        ]
    );
    assert!(kb2_pilot.events.iter().all(|e| e.update == "KB2" && e.deployment == "pilot"));

    let broad = run(&s, &AuditQuery { deployment: Some("broad".into()), ..Default::default() });
    assert_eq!(broad.events.len(), 3);
    assert!(broad.events.iter().all(|e| e.deployment == "broad"));

    // From the withdrawal on: the state before it is the baseline, and only two commits
    // before the tip (c5, m2) change anything.
    let since = run(&s, &AuditQuery { since: Some(s.book.time(s.c5_withdraw_kb2)), ..Default::default() });
    let commits: Vec<Oid> = rows(&since).into_iter().map(|r| r.3).collect();
    assert_eq!(commits[0], s.c5_withdraw_kb2);
    assert!(commits[1..].iter().all(|c| *c == s.m2_gitlab_merge));
    assert_eq!(since.events.len(), 5);
    assert_eq!(since.commits_walked, 5, "c4 (baseline), c5, m2, c7, c8");

    // From the repair of the broken commit on: the broken one cannot be the baseline, so
    // the last valid commit before it is, and nothing changed since.
    let tip = s.book.repo.refname_to_id("refs/heads/main").unwrap();
    let after_repair = run(&s, &AuditQuery { since: Some(s.book.time(tip)), ..Default::default() });
    assert!(after_repair.events.is_empty(), "{:#?}", after_repair.events);
    assert_eq!(after_repair.commits_walked, 3, "c8, c7 (broken), m2 (baseline)");

    let nothing = run(&s, &AuditQuery { updates: vec!["KB404".into()], ..Default::default() });
    assert!(nothing.events.is_empty());
}

#[test]
fn criteria_changes_are_reported_as_the_list_entry_and_a_switched_list_only_as_its_difference() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Book::new(dir.path());
    let criteria = |c: &str| {
        format!(
            "apiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {{name: sec}}\nspec:\n  updates: [KB1]\n  criteria: {{classifications: [{c}]}}\n"
        )
    };
    let v1 = files(&[
        ("sec.yaml", criteria("Security Updates")),
        ("other.yaml", list("other", &["KB1", "KB9"])),
        ("d.yaml", deployment("pilot", "sec")),
    ]);
    let c1 = b.commit("main", &[], &v1, &ALICE, &ALICE, "one");
    let mut v2 = v1.clone();
    v2.insert("sec.yaml".into(), criteria("Critical Updates"));
    let c2 = b.commit("main", &[c1], &v2, &BOB, &BOB, "two");
    let mut v3 = v2.clone();
    v3.insert("d.yaml".into(), deployment("pilot", "other"));
    let c3 = b.commit("main", &[c2], &v3, &CAROL, &CAROL, "switch to the other list (#3)");

    let source = GitSource {
        repo: dir.path().display().to_string(),
        revision: None,
        path: None,
        cache_dir: dir.path().join("cache"),
    };
    let report = audit(&source, &AuditQuery::default()).unwrap();
    let got: Vec<(Action, &str, &str, Oid)> = report
        .events
        .iter()
        .map(|e| (e.action, e.update.as_str(), e.update_list.as_str(), Oid::from_str(&e.commit).unwrap()))
        .collect();
    use Action::*;
    assert_eq!(
        got,
        [
            (Approved, "KB1", "sec", c1),
            (Approved, "criteria: classifications=Security Updates", "sec", c1),
            (Approved, "criteria: classifications=Critical Updates", "sec", c2),
            (Withdrawn, "criteria: classifications=Security Updates", "sec", c2),
            (Approved, "KB9", "other", c3),
            (Withdrawn, "criteria: classifications=Critical Updates", "sec", c3),
        ]
    );
    assert_eq!(report.events[4].pull_request.as_deref(), Some("#3"));
}

#[test]
fn a_path_limits_the_audit_to_resources_in_that_folder() {
    let s = story();
    let source = GitSource {
        repo: s.book.repo.path().parent().unwrap().display().to_string(),
        revision: None,
        path: Some("update-lists".into()),
        cache_dir: s._dir.path().join("cache"),
    };
    // Only the list is in the folder (from c4 on), so no deployment deploys anything.
    let report = audit(&source, &AuditQuery::default()).unwrap();
    assert!(report.events.is_empty(), "{:#?}", report.events);
    assert!(report.skipped.is_empty());
}

fn patchops(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_patchops")).args(args).env("PATCHOPS_LOG", "error").output().unwrap()
}

#[test]
fn the_audit_command_prints_json_or_a_table_and_exits_1_with_a_clear_message_on_bad_input() {
    let s = story();
    let repo = s.book.repo.path().parent().unwrap().display().to_string();
    let out = patchops(&["audit", "--repo", &repo, "--update", "KB3", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = json["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "KB3 into pilot (#12) and into broad (!45)");
    assert_eq!(events[0]["pullRequest"], "#12");
    assert_eq!(events[0]["via"]["commit"], s.c2_bob_adds_kb3.to_string());
    assert_eq!(events[1]["deployment"], "broad");

    let table = patchops(&["audit", "--repo", &repo, "--deployment", "pilot", "--since", "2020-01-01"]);
    assert_eq!(table.status.code(), Some(0));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("Withdrawn") && text.contains("Alice Admin <alice@example.com>"), "{text}");
    assert!(text.contains(&s.c5_withdraw_kb2.to_string()[..12]), "{text}");

    let missing = s._dir.path().join("nowhere").display().to_string();
    let out = patchops(&["audit", "--repo", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a git repository"));

    let out = patchops(&["audit", "--repo", &repo, "--rev", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revision \"nope\" not found"));

    let out = patchops(&["audit", "--repo", &repo, "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since \"yesterday\""));
}

/// Nest every file of `files` under `folder`.
fn under(folder: &str, files: &Files) -> Files {
    files.iter().map(|(p, t)| (format!("{folder}/{p}"), t.clone())).collect()
}

/// The desired-state folder is moved (`examples/repo` → `fleet/examples/repo`) after a
/// pull request approved KB9; later it is rebuilt from scratch under a new name.
#[test]
fn audit_follows_the_desired_state_folder_across_a_move_and_says_where_history_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Book::new(dir.path());
    let v1 = files(&[
        ("lists/dec.yaml", list("dec", &["KB1"])),
        ("deployments/pilot.yaml", deployment("pilot", "dec")),
        ("collections.yaml", "# collections\n".to_string()),
    ]);
    let c1 = b.commit("main", &[], &under("examples/repo", &v1), &ALICE, &ALICE, "Pilot");
    let mut v2 = v1.clone();
    v2.insert("lists/dec.yaml".into(), list("dec", &["KB1", "KB9"]));
    let c2 = b.commit("feature", &[c1], &under("examples/repo", &v2), &BOB, &BOB, "Add KB9");
    let m = b.commit(
        "main",
        &[c1, c2],
        &under("examples/repo", &v2),
        &CAROL,
        &GITHUB,
        "Merge pull request #42 from acme/kb9\n\nAdd KB9",
    );
    // Dave moves the folder, and edits one file on the way (a similar, not exact, rename).
    let mut v3 = v2.clone();
    v3.insert("collections.yaml".into(), "# collections of the fleet\n".into());
    let mut moved = under("fleet/examples/repo", &v3);
    moved.insert("README.md".into(), "moved\n".into());
    let c3 = b.commit("main", &[m], &moved, &DAVE, &DAVE, "Move the desired state under fleet/");

    let at = |path: &str| {
        let source = GitSource {
            repo: dir.path().display().to_string(),
            revision: Some("main".into()),
            path: Some(path.into()),
            cache_dir: dir.path().join("cache"),
        };
        audit(&source, &AuditQuery { updates: vec!["KB9".into()], ..Default::default() }).unwrap()
    };
    let report = at("fleet/examples/repo");
    assert_eq!(
        rows(&report),
        [row(Action::Approved, "KB9", "pilot", m, Some("#42"), (&CAROL, &GITHUB), Some((c2, &BOB)))],
        "the approval stays the merge of PR #42, not the move"
    );
    assert_eq!(report.folder_history.len(), 1, "{:#?}", report.folder_history);
    let followed = &report.folder_history[0];
    assert_eq!(followed.commit, c3.to_string());
    assert_eq!(followed.from.as_deref(), Some("examples/repo"));
    assert_eq!(followed.to, "fleet/examples/repo");

    // Erin starts a second site from a hand-written copy, leaving fleet/ as it is: nothing
    // was renamed, so the history cannot be followed; the output says where and why, and
    // the approval is hers.
    let v4 = files(&[
        ("all.yaml", format!("{}---\n{}", list("dec", &["KB1", "KB9"]), deployment("pilot", "dec"))),
        ("notes.txt", "rebuilt by hand\n".to_string()),
    ]);
    let mut both = moved.clone();
    both.extend(under("sites/eu", &v4));
    let c4 = b.commit("main", &[c3], &both, &ERIN, &ERIN, "Start sites/eu");
    let report = at("sites/eu");
    assert_eq!(rows(&report), [row(Action::Approved, "KB9", "pilot", c4, None, (&ERIN, &ERIN), None)]);
    assert_eq!(report.folder_history.len(), 1, "{:#?}", report.folder_history);
    let stop = &report.folder_history[0];
    assert_eq!((stop.commit.as_str(), stop.from.as_deref()), (c4.to_string().as_str(), None));
    assert!(stop.reason.contains("history starts here"), "{}", stop.reason);

    let out = patchops(&["audit", "--repo", &dir.path().display().to_string(), "--path", "sites/eu"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("history of sites/eu starts at"), "{text}");
}

#[test]
fn waivers_are_reported_like_approvals_with_their_pull_request_and_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Book::new(dir.path());
    let waiver = |expires: &str| {
        format!(
            "apiVersion: patchops.dev/v1alpha1\nkind: Waiver\nmetadata: {{name: sql}}\nspec:\n  updates: [KB2]\n  cves: [CVE-2026-1000]\n  machines: [sql-1, sql-2]\n  reason: vendor certification\n  expires: {expires}\n"
        )
    };
    let v1 = files(&[("l.yaml", list("nov", &["KB1", "KB2"])), ("d.yaml", deployment("pilot", "nov"))]);
    let c1 = b.commit("main", &[], &v1, &ALICE, &ALICE, "November");
    let mut v2 = v1.clone();
    v2.insert("waivers/sql.yaml".into(), waiver("2027-01-31T00:00:00Z"));
    let f1 = b.commit("waive-sql", &[c1], &v2, &BOB, &BOB, "Waive KB2 on the SQL nodes");
    let m1 = b.commit("main", &[c1, f1], &v2, &BOB, &GITHUB, "Merge pull request #41 from org/waive-sql");
    let mut v3 = v2.clone();
    v3.insert("waivers/sql.yaml".into(), waiver("2027-03-31T00:00:00Z"));
    let c3 = b.commit("main", &[m1], &v3, &CAROL, &CAROL, "Renew the SQL waiver (#42)");

    let source = GitSource {
        repo: dir.path().display().to_string(),
        revision: None,
        path: None,
        cache_dir: dir.path().join("cache"),
    };
    let report = audit(&source, &AuditQuery { deployment: Some("waiver/sql".into()), ..Default::default() }).unwrap();
    let got: Vec<(Action, &str, Oid, Option<&str>)> = report
        .events
        .iter()
        .map(|e| (e.action, e.update.as_str(), Oid::from_str(&e.commit).unwrap(), e.pull_request.as_deref()))
        .collect();
    use Action::*;
    assert_eq!(
        got,
        [
            (Approved, "CVE-2026-1000", m1, Some("#41")),
            (Approved, "KB2", m1, Some("#41")),
            (Approved, "expires: 2027-01-31T00:00:00Z", m1, Some("#41")),
            (Approved, "machines: sql-1, sql-2", m1, Some("#41")),
            (Withdrawn, "expires: 2027-01-31T00:00:00Z", c3, Some("#42")),
            (Approved, "expires: 2027-03-31T00:00:00Z", c3, Some("#42")),
        ]
    );
    assert_eq!(report.events[0].via.as_ref().map(|v| v.author.name.as_str()), Some(BOB.name));
    // The deployment's own approvals are unchanged by the waiver.
    let all = audit(&source, &AuditQuery::default()).unwrap();
    let pilot: Vec<&str> = all.events.iter().filter(|e| e.deployment == "pilot").map(|e| e.update.as_str()).collect();
    assert_eq!(pilot, ["KB1", "KB2"]);
}
