//! `patchops bench rpm`: the RPM importers on the real data (all AlmaLinux 9 OSV
//! advisories, the Fedora updateinfo.xml) and an rpm scan — `rpm -qa` of a root with
//! 2,000 installed packages, facts, 5,000 advisories evaluated — each next to the time
//! plain `rpm -qa` takes to list the same root, measured in the same run.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use crate::agent::scanners::rpm::{RpmDb, facts};
use crate::agent::scanners::scan;
use crate::catalog::{
    Applicability, Catalog, RpmPackageTest, Rule, ScanVerdict, Severity, Update, osv, rpm_updateinfo,
};
use crate::{Error, Result};

const PACKAGES: usize = 2_000;
const ADVISORIES: usize = 5_000;
const ROUNDS: usize = 11;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rpm").join(name)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn checked(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| Error::Usage(format!("{what}: cannot run {cmd:?}: {e}; run scripts/ensure-rpm-tools")))?;
    if !out.status.success() {
        return Err(Error::Usage(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A root with 2,000 installed (empty, noarch) packages `bench-pkg0000…`, built once with
/// one rpmbuild run and one rpm transaction, and kept for later runs.
fn prepare_root(dir: &Path) -> Result<RpmDb> {
    let rpmdb = RpmDb::new(&dir.join("root"), None);
    if let Ok(list) = rpmdb.installed()
        && list.len() == PACKAGES
    {
        return Ok(rpmdb);
    }
    println!("  building a root with {PACKAGES} installed packages in {} (once)…", dir.display());
    let _ = std::fs::remove_dir_all(dir);
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut spec = String::from(
        "Name: bench-base\nVersion: 1.0\nRelease: 1\nSummary: bench\nLicense: MIT\nBuildArch: noarch\n%description\nbench\n",
    );
    for i in 0..PACKAGES {
        spec.push_str(&format!(
            "%package -n bench-pkg{i:04}\nSummary: bench {i}\n%description -n bench-pkg{i:04}\nbench\n%files -n bench-pkg{i:04}\n\n"
        ));
    }
    let spec_path = dir.join("bench.spec");
    std::fs::write(&spec_path, spec).map_err(io)?;
    let top = dir.join("top");
    checked(
        Command::new("rpmbuild")
            .args(["-bb", "--quiet", "--define"])
            .arg(format!("_topdir {}", top.display()))
            .args(["--define", "_build_id_links none"])
            .arg(&spec_path),
        "rpmbuild",
    )?;
    checked(rpmdb.command().arg("--initdb"), "rpm --initdb")?;
    let rpms: Vec<PathBuf> = std::fs::read_dir(top.join("RPMS/noarch"))
        .map_err(io)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("bench-pkg")))
        .collect();
    checked(rpmdb.command().args(["-i", "--nodeps", "--noscripts"]).args(&rpms), "rpm -i")?;
    Ok(rpmdb)
}

/// `n` advisories over the bench packages: one to three packages each, every fourth
/// above the installed 1.0-1 (Missing), the others below (Installed); half name the
/// architecture.
fn synthetic(n: usize) -> Vec<Update> {
    (0..n)
        .map(|k| {
            let fixed = if k % 4 == 0 { "1.0-2".to_string() } else { format!("1.0-0.{}", k % 9) };
            let names: Vec<String> =
                (0..1 + k % 3).map(|j| format!("bench-pkg{:04}", (k * 7 + j * 13) % PACKAGES)).collect();
            let test = |name: &str, below: bool| {
                Rule::RpmPackage(RpmPackageTest {
                    name: name.to_string(),
                    arch: (k % 2 == 1).then(|| "noarch".to_string()),
                    version_below: below.then(|| fixed.clone()),
                    version_at_least: (!below).then(|| fixed.clone()),
                })
            };
            let below = Rule::Any(names.iter().map(|n| test(n, true)).collect());
            let at_least = Rule::All(names.iter().map(|n| test(n, false)).collect());
            Update {
                id: format!("BENCH-{k:05}"),
                kb: None,
                title: format!("bench advisory {k}"),
                classification: "Security Updates".into(),
                severity: Severity::Important,
                products: vec!["Bench Linux 9".into()],
                released: jiff::civil::date(2026, 1, 1),
                supersedes: vec![],
                expired: false,
                reboot_required: false,
                max_run_time: crate::time::Duration::from_mins(10),
                cves: vec![],
                applicability: Applicability { is_installable: below, is_installed: at_least, prerequisites: vec![] },
                files: vec![],
            }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run() -> Result<ExitCode> {
    println!("patchops bench rpm");
    let dir = crate::process::state_dir().join("bench-rpm");
    let rpmdb = prepare_root(&dir)?;
    // The reference: plain `rpm -qa` of the same root, output read like ours.
    let rpm_qa = || -> Result<f64> {
        let t = Instant::now();
        checked(rpmdb.command().arg("-qa"), "rpm -qa")?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };

    let alma = read(&data("almalinux9-osv.zip"))?;
    let fedora = read(&data("fedora-core-updates-5-x86_64-updateinfo.xml.gz"))?;
    let mut alma_ms = Vec::new();
    let mut fedora_ms = Vec::new();
    let mut reference = Vec::new();
    let mut real = Vec::new();
    let mut fedora_count = 0;
    for _ in 0..5 {
        reference.push(rpm_qa()?);
        let t = Instant::now();
        real = osv::parse("almalinux9-osv.zip", &alma, &osv::OsvOptions::default())?;
        alma_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        fedora_count = rpm_updateinfo::parse("fedora-updateinfo.xml.gz", &fedora)?.len();
        fedora_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let qa = median(reference);
    let (alma_ms, fedora_ms) = (median(alma_ms), median(fedora_ms));
    println!("  rpm -qa of the {PACKAGES}-package root (reference): median {qa:.1} ms");
    println!(
        "  osv import, all 1,783 AlmaLinux 9 advisories ({} KiB zip) → {} updates: median {alma_ms:.1} ms ({:.1}× rpm -qa)",
        alma.len() / 1024,
        real.len(),
        alma_ms / qa
    );
    println!(
        "  rpm-updateinfo import, Fedora Core 5 updateinfo.xml.gz ({} KiB) → {fedora_count} updates: median {fedora_ms:.1} ms ({:.1}× rpm -qa)",
        fedora.len() / 1024,
        fedora_ms / qa
    );

    // 5,000 advisories: the real AlmaLinux ones (their packages are not installed here)
    // and synthetic ones over the installed packages.
    let mut updates = real;
    let synthetic_count = ADVISORIES.saturating_sub(updates.len());
    updates.extend(synthetic(synthetic_count));
    let catalog = Catalog::new(1, updates, &Default::default());
    let mut ours = Vec::new();
    let mut reference = Vec::new();
    let mut missing = 0;
    let mut installed = 0;
    for _ in 0..ROUNDS {
        reference.push(rpm_qa()?);
        let t = Instant::now();
        let packages = rpmdb.installed()?;
        let f = facts(&packages);
        let found = scan(&catalog, &f);
        ours.push(t.elapsed().as_secs_f64() * 1000.0);
        missing = found.iter().filter(|(_, v)| *v == ScanVerdict::Missing).count();
        installed = found.iter().filter(|(_, v)| *v == ScanVerdict::Installed).count();
    }
    let (ours, qa) = (median(ours), median(reference));
    println!(
        "  rpm scan: rpm -qa + facts + {} advisories evaluated ({synthetic_count} over the installed packages): \
         median {ours:.1} ms; {missing} Missing, {installed} Installed",
        catalog.len()
    );
    println!("  plain rpm -qa of the same root: median {qa:.1} ms; ratio {:.2}× (goal ≤ 2×)", ours / qa);
    Ok(ExitCode::SUCCESS)
}
