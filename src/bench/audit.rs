//! `patchops bench audit`: `audit` of one update over a generated repository of 10,000
//! first-parent commits (every tenth a merge of a pull-request branch, a folder rename
//! every 1,000), 50 update lists of 20 updates and 50 deployments. The tracked update is
//! approved or withdrawn every 500 commits, so the right answer is known: 19 changes
//! into each of the two deployments that use its list.

use std::process::ExitCode;
use std::time::Instant;

use git2::{FileMode, Oid, Repository, Signature, Time};

use crate::git::GitSource;
use crate::git::audit::{AuditQuery, audit};
use crate::{Error, Result};

const COMMITS: usize = 10_000;
const LISTS: usize = 50;
const DEPLOYMENTS: usize = 100;
const TRACKED: &str = "KB5999999";

pub fn run() -> Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("patchops-bench-audit-{}", std::process::id()));
    let result = bench(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(dir: &std::path::Path) -> Result<ExitCode> {
    println!("patchops bench audit: {COMMITS} first-parent commits, {LISTS} lists, {DEPLOYMENTS} deployments");
    let t = Instant::now();
    let commits = build(dir).map_err(|e| Error::git(dir.display().to_string(), "cannot build the repository", e))?;
    println!(
        "  repository built and packed in {:.2} s ({commits} commits in all, merged branches included)",
        t.elapsed().as_secs_f64()
    );

    let source = GitSource {
        repo: dir.display().to_string(),
        revision: Some("main".into()),
        path: None,
        cache_dir: dir.join("unused-cache"),
    };
    let one = AuditQuery { updates: vec![TRACKED.into()], ..Default::default() };
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let t = Instant::now();
        let report = audit(&source, &one)?;
        times.push(t.elapsed().as_secs_f64());
        last = Some(report);
    }
    let report = last.expect("ran");
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  audit --update {TRACKED}: best {:.3} s, median {:.3} s; {} commits walked, {} blobs parsed, {} changes (expected {})",
        times[0],
        times[times.len() / 2],
        report.commits_walked,
        report.blobs_parsed,
        report.events.len(),
        2 * ((COMMITS - 1) / 500),
    );
    let t = Instant::now();
    let all = audit(&source, &AuditQuery::default())?;
    println!("  audit of every update: {:.3} s, {} changes", t.elapsed().as_secs_f64(), all.events.len());
    Ok(ExitCode::SUCCESS)
}

fn list(i: usize, updates: &[String]) -> String {
    format!(
        "apiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {{name: list-{i:02}}}\nspec:\n  updates: [{}]\n",
        updates.join(", ")
    )
}

fn deployment(i: usize) -> String {
    format!(
        "apiVersion: patchops.dev/v1alpha1\nkind: UpdateDeployment\nmetadata: {{name: deploy-{i:03}}}\nspec:\n  updateList: list-{:02}\n  collection: site-{i:03}\n  startTime: 2026-12-01T00:00:00Z\n  deadline: 2026-12-15T00:00:00Z\n",
        i % LISTS
    )
}

/// Writes the history straight to the object database; returns the number of commits.
fn build(dir: &std::path::Path) -> Result<usize, git2::Error> {
    let repo = Repository::init_bare(dir)?;
    let blob = |text: &str| repo.blob(text.as_bytes());
    let mut lists: Vec<Vec<String>> =
        (0..LISTS).map(|l| (0..20).map(|u| format!("KB{}", 5_000_000 + l * 1_000 + u)).collect()).collect();
    let mut list_tree = repo.treebuilder(None)?;
    for (i, updates) in lists.iter().enumerate() {
        list_tree.insert(format!("list-{i:02}.yaml"), blob(&list(i, updates))?, FileMode::Blob.into())?;
    }
    let mut deploy_tree = repo.treebuilder(None)?;
    for i in 0..DEPLOYMENTS {
        deploy_tree.insert(format!("deploy-{i:03}.yaml"), blob(&deployment(i))?, FileMode::Blob.into())?;
    }
    let (mut list_id, deploy_id) = (list_tree.write()?, deploy_tree.write()?);
    let mut list_folder = "lists".to_string();
    let root = |list_folder: &str, list_id: Oid, readme: &str| -> Result<Oid, git2::Error> {
        let mut b = repo.treebuilder(None)?;
        b.insert(list_folder, list_id, FileMode::Tree.into())?;
        b.insert("deployments", deploy_id, FileMode::Tree.into())?;
        b.insert("README.md", repo.blob(readme.as_bytes())?, FileMode::Blob.into())?;
        b.write()
    };
    let people = ["alice", "bob", "carol", "dave", "erin"];
    let mut clock = 1_700_000_000;
    let mut commit = |tree: Oid, parents: &[Oid], who: usize, message: &str| -> Result<Oid, git2::Error> {
        clock += 60;
        let name = people[who % people.len()];
        let sig = Signature::new(name, &format!("{name}@example.com"), &Time::new(clock, 0))?;
        let tree = repo.find_tree(tree)?;
        let parents: Vec<git2::Commit> = parents.iter().map(|p| repo.find_commit(*p)).collect::<Result<_, _>>()?;
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(None, &sig, &sig, message, &tree, &parents)
    };
    let mut tip = commit(root(&list_folder, list_id, "# desired state\n")?, &[], 0, "initial")?;
    let mut total = 1;
    for n in 1..COMMITS {
        // Which list changes, and how: the tracked update toggles in list 0 every 500 commits.
        let l = if n % 500 == 0 { 0 } else { 1 + n % (LISTS - 1) };
        if n % 500 == 0 {
            match lists[0].iter().position(|u| u == TRACKED) {
                Some(p) => {
                    lists[0].remove(p);
                }
                None => lists[0].push(TRACKED.to_string()),
            }
        } else {
            let u = format!("KB{}", 6_000_000 + n);
            lists[l].push(u);
            if lists[l].len() > 25 {
                lists[l].remove(0);
            }
        }
        let mut b = repo.treebuilder(Some(&repo.find_tree(list_id)?))?;
        b.insert(format!("list-{l:02}.yaml"), blob(&list(l, &lists[l]))?, FileMode::Blob.into())?;
        list_id = b.write()?;
        if n % 1_000 == 0 {
            list_folder = format!("update-lists-{n}");
        }
        let tree = root(&list_folder, list_id, &format!("# desired state\n\nrevision {}\n", n / 100))?;
        tip = if n % 10 == 0 {
            let side = commit(tree, &[tip], n + 1, &format!("Change list-{l:02}"))?;
            total += 1;
            commit(
                tree,
                &[tip, side],
                n,
                &format!("Merge pull request #{n} from acme/change-{n}\n\nChange list-{l:02}"),
            )?
        } else {
            commit(tree, &[tip], n, &format!("Change list-{l:02}"))?
        };
        total += 1;
    }
    repo.reference("refs/heads/main", tip, true, "bench")?;
    repo.set_head("refs/heads/main")?;
    pack(&repo)?;
    Ok(total)
}

/// Pack every object and drop the loose ones, as a clone or `git gc` leaves a repository.
fn pack(repo: &Repository) -> Result<(), git2::Error> {
    let mut builder = repo.packbuilder()?;
    let mut walk = repo.revwalk()?;
    walk.push_ref("refs/heads/main")?;
    builder.insert_walk(&mut walk)?;
    let objects = repo.path().join("objects");
    builder.write(&objects.join("pack"), 0)?;
    for entry in std::fs::read_dir(&objects).map_err(|e| git2::Error::from_str(&e.to_string()))?.flatten() {
        let name = entry.file_name();
        if name.len() == 2 && name.to_string_lossy().chars().all(|c| c.is_ascii_hexdigit()) {
            std::fs::remove_dir_all(entry.path()).map_err(|e| git2::Error::from_str(&e.to_string()))?;
        }
    }
    Ok(())
}
