//! The `apt` installer: upgrades the installed binary packages an update fixes, to the
//! fixed versions its package rules name (`name=version`); for advisories that name source
//! packages (`src:…`), the installed binaries of that source, to apt's candidate. With
//! `dry_run` it asks apt to simulate (`apt-get -s`), which changes nothing.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use jiff::SignedDuration;

use super::{InstallOutcome, Installer};
use crate::agent::scanners::dpkg::{InstalledPackage, read_status};
use crate::catalog::applicability::compare_debian;
use crate::catalog::{Rule, Update};

#[derive(Clone, Debug)]
pub struct Apt {
    /// Simulate only (`apt-get -s`): the default in tests and for a first rollout.
    pub dry_run: bool,
    /// The dpkg status file (normally /var/lib/dpkg/status).
    pub status: PathBuf,
}

impl Apt {
    pub fn new(dry_run: bool) -> Self {
        Apt { dry_run, status: PathBuf::from("/var/lib/dpkg/status") }
    }

    /// The apt arguments for an update on this system: `name=version` for binaries
    /// installed below their fixed version, `name` for binaries of a named source.
    pub fn targets(&self, update: &Update, installed: &[InstalledPackage]) -> Vec<String> {
        let mut tests = Vec::new();
        collect(&update.applicability.is_installable, &mut tests);
        let mut out: Vec<String> = Vec::new();
        for (name, fixed) in tests {
            if let Some(source) = name.strip_prefix("src:") {
                out.extend(
                    installed
                        .iter()
                        .filter(|p| p.source == source && compare_debian(&p.source_version, &fixed).is_lt())
                        .map(|p| p.name.clone()),
                );
            } else if installed.iter().any(|p| p.name == name && compare_debian(&p.version, &fixed).is_lt()) {
                out.push(format!("{name}={fixed}"));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn command(&self, targets: &[String]) -> Command {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "--only-upgrade",
            "--no-install-recommends",
            "-y",
            "-q",
        ]);
        if self.dry_run {
            cmd.arg("-s");
        }
        cmd.args(targets);
        cmd
    }

    /// The targets of an update on this system, or why there are none.
    fn targets_now(&self, update: &Update) -> Result<Vec<String>, String> {
        let installed = read_status(&self.status).map_err(|e| e.to_string())?;
        let targets = self.targets(update, &installed);
        if targets.is_empty() {
            return Err(format!(
                "{}: no installed package of this update is below its fixed version; re-scan",
                update.id
            ));
        }
        Ok(targets)
    }
}

/// The last non-empty line apt wrote to stderr: its reason.
fn apt_reason(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("apt-get failed").to_string()
}

/// Package tests with an upper bound, as (name, fixed version).
fn collect(rule: &Rule, out: &mut Vec<(String, String)>) {
    match rule {
        Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| collect(r, out)),
        Rule::Not(r) => collect(r, out),
        Rule::Package(t) => {
            if let Some(v) = &t.version_below {
                out.push((t.name.clone(), v.clone()));
            }
        }
        Rule::Installed(_) | Rule::Fact(_) | Rule::Always(_) | Rule::RpmPackage(_) => {}
    }
}

impl Installer for Apt {
    fn install(&mut self, update: &Update, _files: &[PathBuf]) -> InstallOutcome {
        let started = Instant::now();
        let took = || SignedDuration::try_from(started.elapsed()).unwrap_or(SignedDuration::MAX);
        let targets = match self.targets_now(update) {
            Ok(t) => t,
            Err(error) => return InstallOutcome::Failed { error, took: took() },
        };
        match self.command(&targets).output() {
            Ok(out) if out.status.success() => {
                let reboot = update.reboot_required
                    || (!self.dry_run && std::path::Path::new("/var/run/reboot-required").exists());
                InstallOutcome::Installed { reboot_required: reboot, took: took() }
            }
            Ok(out) => InstallOutcome::Failed {
                error: format!("apt-get {}: {}", targets.join(" "), apt_reason(&out.stderr)),
                took: took(),
            },
            Err(e) => InstallOutcome::Failed { error: format!("cannot run apt-get: {e}"), took: took() },
        }
    }

    /// apt fetches the .deb files from the machine's configured mirrors.
    fn fetches_own_content(&self) -> bool {
        true
    }

    /// `apt-get install --download-only` of the update's targets into apt's cache (with
    /// `dry_run`, simulated: apt still checks that its sources have those versions).
    fn prefetch(&mut self, update: &Update) -> Result<(), String> {
        let targets = self.targets_now(update)?;
        let mut cmd = self.command(&targets);
        cmd.arg("--download-only");
        match cmd.output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!("apt-get --download-only {}: {}", targets.join(" "), apt_reason(&out.stderr))),
            Err(e) => Err(format!("cannot run apt-get: {e}")),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::agent::scanners::{dpkg, scan};
    use crate::catalog::{Catalog, PackageTest, ScanVerdict, debian};

    fn security_catalog() -> Catalog {
        let index = std::fs::read_dir("/var/lib/apt/lists")
            .expect("apt lists")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("-security") && p.to_string_lossy().contains("_Packages"))
            .expect("a security Packages index; run apt-get update");
        let bytes = debian::decompress("security", &std::fs::read(index).unwrap()).unwrap();
        Catalog::new(1, debian::parse_packages("security", &bytes, &Default::default()).unwrap(), &Default::default())
    }

    #[test]
    fn d2_apt_installs_only_the_installed_binaries_below_their_fixed_version_dry_run() {
        let catalog = security_catalog();
        let installed = dpkg::read_status(std::path::Path::new("/var/lib/dpkg/status")).unwrap();
        let facts = dpkg::facts(&installed);
        let missing: Vec<u32> =
            scan(&catalog, &facts).into_iter().filter(|(_, v)| *v == ScanVerdict::Missing).map(|(i, _)| i).collect();
        assert!(!missing.is_empty(), "this machine has pending security updates to simulate");
        let mut apt = Apt::new(true);
        for &i in missing.iter().take(3) {
            let update = &catalog.updates[i as usize];
            let targets = apt.targets(update, &installed);
            assert!(!targets.is_empty(), "{}", update.id);
            for t in &targets {
                let (name, version) = t.split_once('=').unwrap();
                let have = &facts.packages[name];
                assert!(compare_debian(have, version).is_lt(), "{name}: {have} is already at {version}");
            }
            match apt.install(update, &[]) {
                InstallOutcome::Installed { .. } => {}
                other => panic!("{}: {other:?}", update.id),
            }
        }
        // Nothing changed: the dry run left every package where it was.
        assert_eq!(dpkg::read_status(std::path::Path::new("/var/lib/dpkg/status")).unwrap(), installed);
    }

    #[test]
    fn a_version_apt_does_not_know_fails_with_apts_reason() {
        let installed = dpkg::read_status(std::path::Path::new("/var/lib/dpkg/status")).unwrap();
        let pkg = installed.iter().find(|p| p.name == "libc6").expect("libc6 is installed");
        let mut update = crate::catalog::test_support::update("FAKE-1", "Debian", "2026-11-24");
        update.applicability.is_installable = Rule::Package(PackageTest {
            name: pkg.name.clone(),
            version_below: Some("99:1.0".into()),
            ..Default::default()
        });
        let mut apt = Apt::new(true);
        assert_eq!(apt.targets(&update, &installed), vec![format!("{}=99:1.0", pkg.name)]);
        match apt.install(&update, &[]) {
            InstallOutcome::Failed { error, .. } => {
                assert!(error.contains("99:1.0") && error.contains("not found"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        // The download step asks apt too, and fails with apt's reason (DownloadFailed).
        assert!(apt.fetches_own_content());
        let error = apt.prefetch(&update).unwrap_err();
        assert!(
            error.contains("--download-only") && error.contains("99:1.0") && error.contains("not found"),
            "{error}"
        );
    }
}
