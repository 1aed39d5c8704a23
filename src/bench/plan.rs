//! `patchops bench plan`: `patchops plan` on a repository of 1,000 resource files with
//! the bench fleet (100,000 clients by default) in a SQLite store. The head branch adds
//! a deployment, changes ten deadlines and withdraws two deployments. Prints figures.

use std::process::ExitCode;
use std::time::Instant;

use git2::{Oid, Repository, Signature};
use jiff::Timestamp;

use super::{BenchArgs, peak_rss, synthetic};
use crate::catalog::Catalog;
use crate::git::plan::{PlanInputs, make, markdown};
use crate::{Error, Result};

const SITES: usize = 10;
const TEMPLATES: usize = 2;
/// Lists and deployments, one file each: with the sites and templates, 1,000 files.
const DEPLOYMENTS: usize = (1000 - SITES - TEMPLATES) / 2;
const UPDATES_PER_LIST: usize = 4;

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let now = Timestamp::now();
    let dir = Scratch::new()?;
    println!(
        "patchops bench plan: {} resource files, {} clients × {} updates, {} threads",
        SITES + TEMPLATES + 2 * DEPLOYMENTS,
        args.clients,
        args.updates,
        rayon::current_num_threads()
    );
    let t = Instant::now();
    let (_, catalog, fleet) = synthetic(args, now);
    let repo_path = dir.path().join("repo");
    write_repo(&repo_path, &catalog, now)?;
    println!("  repository with base and head written in {:.2} s", t.elapsed().as_secs_f64());

    let store_path = args.sqlite.clone().unwrap_or_else(|| dir.path().join("plan.db"));
    if !store_path.exists() {
        let t = Instant::now();
        let n = super::write_store(&store_path, &catalog, &fleet, now)?;
        println!(
            "  wrote the SQLite store {} ({n} states) in {:.1} s",
            store_path.display(),
            t.elapsed().as_secs_f64()
        );
    }
    drop(fleet);

    let args = PlanInputs {
        repo: repo_path.display().to_string(),
        base: "main".into(),
        head: "change".into(),
        path: Some("desired".into()),
        store: store_path.display().to_string(),
        now: Some(now),
    };
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let t = Instant::now();
        let plan = make(&args)?;
        let text = markdown(&plan);
        times.push(t.elapsed().as_secs_f64());
        last = Some((plan, text));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let (plan, text) = last.expect("ran");
    println!(
        "  plan (read both revisions, the catalog and {} clients from SQLite, reconcile both, compare, markdown): best {:.3} s, median {:.3} s",
        plan.clients, times[0], times[1]
    );
    println!(
        "  the plan: {} deployments change, {} unchanged, {} other resources, {} bytes of markdown",
        plan.deployments.len(),
        plan.unchanged_deployments,
        plan.resources.len(),
        text.len()
    );
    breakdown(&args)?;
    if let Some(peak) = peak_rss() {
        println!("  peak memory: {:.0} MiB", peak as f64 / 1048576.0);
    }
    Ok(ExitCode::SUCCESS)
}

/// A scratch folder removed when the bench ends.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("patchops-bench-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        Ok(Scratch(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where the time of one plan goes.
fn breakdown(args: &PlanInputs) -> Result<()> {
    let t = Instant::now();
    let source = |rev: &str| crate::git::GitSource {
        repo: args.repo.clone(),
        revision: Some(rev.into()),
        path: args.path.clone(),
        cache_dir: std::env::temp_dir(),
    };
    let (_, base) = crate::pipeline::load_desired(&source(&args.base))?;
    let (_, head) = crate::pipeline::load_desired(&source(&args.head))?;
    let t_git = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let store = crate::store::open(&args.store)?;
    let catalog = store.load_catalog()?;
    let keys = crate::git::plan::needed_update_keys(&base, &head, &catalog);
    let fleet = store.load_fleet_for(&keys)?;
    let t_store = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let previous = crate::reconcile::Previous::default();
    let world =
        crate::git::plan::World { catalog: &catalog, fleet: &fleet, previous: &previous, now: args.now.expect("set") };
    std::hint::black_box(crate::git::plan::compute(&base, &head, &world));
    println!(
        "  of which: both revisions read and checked {t_git:.3} s, catalog and the states of the {} updates the change touches ({} states) loaded {t_store:.3} s, compared {:.3} s",
        keys.len(),
        fleet.state_count(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn collection(s: usize) -> String {
    format!(
        "apiVersion: patchops.dev/v1alpha1\nkind: Collection\nmetadata: {{name: site-{s}}}\nspec:\n  \
         selector: {{matchFacts: {{site: site-{s}}}}}\n  maintenanceWindows:\n    \
         - {{name: night, start: \"0{}:00\", duration: 3h, timeZone: UTC, recurrence: Daily}}\n",
        s % 6
    )
}

fn list(d: usize, catalog: &Catalog) -> String {
    let ids: Vec<String> =
        (0..UPDATES_PER_LIST).map(|k| catalog.updates[(d * UPDATES_PER_LIST + k) % catalog.len()].id.clone()).collect();
    format!(
        "apiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {{name: list-{d:04}}}\nspec:\n  updates: [{}]\n",
        ids.join(", ")
    )
}

fn deployment(d: usize, now: Timestamp, deadline_days: i64) -> String {
    let start = Timestamp::from_second(now.as_second() - 86_400).expect("in range");
    let deadline = Timestamp::from_second(now.as_second() + deadline_days * 86_400).expect("in range");
    format!(
        "apiVersion: patchops.dev/v1alpha1\nkind: UpdateDeployment\nmetadata: {{name: deploy-{d:04}}}\nspec:\n  \
         updateList: list-{d:04}\n  template: template-{}\n  collection: site-{}\n  startTime: {start}\n  deadline: {deadline}\n",
        d % TEMPLATES,
        d % SITES
    )
}

fn write_repo(path: &std::path::Path, catalog: &Catalog, now: Timestamp) -> Result<()> {
    let git = |e: git2::Error| Error::git(path.display().to_string(), "cannot write the bench repository", e);
    let repo = Repository::init(path).map_err(git)?;
    let mut files: Vec<(String, String)> = Vec::new();
    for s in 0..SITES {
        files.push((format!("desired/collections/site-{s}.yaml"), collection(s)));
    }
    for t in 0..TEMPLATES {
        files.push((
            format!("desired/templates/template-{t}.yaml"),
            format!(
                "apiVersion: patchops.dev/v1alpha1\nkind: DeploymentTemplate\nmetadata: {{name: template-{t}}}\nspec:\n  mandatory: true\n"
            ),
        ));
    }
    for d in 0..DEPLOYMENTS {
        files.push((format!("desired/lists/list-{d:04}.yaml"), list(d, catalog)));
        files.push((format!("desired/deployments/deploy-{d:04}.yaml"), deployment(d, now, 7)));
    }
    let main = commit(&repo, "main", None, &files).map_err(git)?;
    let mut changes: Vec<(String, String)> =
        (0..10).map(|d| (format!("desired/deployments/deploy-{d:04}.yaml"), deployment(d, now, 14))).collect();
    let new = DEPLOYMENTS + 1;
    changes.push((format!("desired/lists/list-{new:04}.yaml"), list(new, catalog)));
    changes.push((format!("desired/deployments/deploy-{new:04}.yaml"), deployment(new, now, 7)));
    let removed: Vec<String> =
        (DEPLOYMENTS - 2..DEPLOYMENTS).map(|d| format!("desired/deployments/deploy-{d:04}.yaml")).collect();
    commit_changes(&repo, "change", main, &changes, &removed).map_err(git)?;
    repo.set_head("refs/heads/main").map_err(git)?;
    Ok(())
}

fn signature() -> std::result::Result<Signature<'static>, git2::Error> {
    Signature::now("patchops bench", "bench@patchops.invalid")
}

fn commit(
    repo: &Repository,
    branch: &str,
    parent: Option<Oid>,
    files: &[(String, String)],
) -> std::result::Result<Oid, git2::Error> {
    let mut tree = crate::git::rules::TreeEdit::new(repo, parent)?;
    for (path, text) in files {
        tree.write(path, text.as_bytes())?;
    }
    let id = tree.commit(&signature()?, "bench")?;
    repo.reference(&format!("refs/heads/{branch}"), id, true, "bench")?;
    Ok(id)
}

fn commit_changes(
    repo: &Repository,
    branch: &str,
    parent: Oid,
    files: &[(String, String)],
    removed: &[String],
) -> std::result::Result<Oid, git2::Error> {
    let mut tree = crate::git::rules::TreeEdit::new(repo, Some(parent))?;
    for (path, text) in files {
        tree.write(path, text.as_bytes())?;
    }
    for path in removed {
        tree.remove(path)?;
    }
    let id = tree.commit(&signature()?, "change")?;
    repo.reference(&format!("refs/heads/{branch}"), id, true, "bench")?;
    Ok(id)
}
