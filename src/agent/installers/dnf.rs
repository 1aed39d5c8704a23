//! The `dnf` installer (RHEL, Rocky, AlmaLinux, Oracle Linux, Fedora): upgrades exactly
//! the installed packages an update names that are below its fixed versions, to those
//! versions (`dnf upgrade name-[epoch:]version-release.arch`…). dnf fetches the packages
//! from its own configured repositories. With `dry_run` it resolves the transaction and
//! stops (`--assumeno`), which changes nothing.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

use jiff::SignedDuration;

use super::{InstallOutcome, Installer};
use crate::agent::scanners::rpm::{InstalledPackage, RpmDb};
use crate::catalog::applicability::compare_rpm;
use crate::catalog::{Rule, Update};

#[derive(Clone, Debug)]
pub struct Dnf {
    /// Resolve only (`--assumeno`): the default in tests and for a first rollout.
    pub dry_run: bool,
    /// The root dnf installs into (`--installroot` unless `/`) and its rpm database — the
    /// one the rpm scanner reads.
    pub rpmdb: RpmDb,
    /// A dnf.conf to use instead of the system's (`--config`), e.g. with the repositories.
    pub config: Option<PathBuf>,
    /// `--releasever` (needed for a private root, which has no release package).
    pub releasever: Option<String>,
}

impl Dnf {
    pub fn new(dry_run: bool, rpmdb: RpmDb) -> Self {
        Dnf { dry_run, rpmdb, config: None, releasever: None }
    }

    fn command(&self, verb: &str) -> Result<Command, String> {
        let mut cmd = Command::new("dnf");
        if self.rpmdb.root != std::path::Path::new("/") {
            cmd.arg("--installroot").arg(&self.rpmdb.root);
        }
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        if let Some(v) = &self.releasever {
            cmd.arg("--releasever").arg(v);
        }
        if let Some(home) = rpm_macros_home(&self.rpmdb)? {
            cmd.env("HOME", home);
        }
        cmd.arg(verb);
        Ok(cmd)
    }
}

/// dnf opens the rpm database where rpm's `%_dbpath` macro says. When that is not the
/// database the scanner reads (Debian's rpm, a custom `--rpm-dbpath`), dnf is run with a
/// HOME whose `.rpmmacros` sets it; librpm reads `~/.rpmmacros` after the system's macros.
/// None when the host's rpm already agrees.
pub(super) fn rpm_macros_home(rpmdb: &RpmDb) -> Result<Option<PathBuf>, String> {
    let out = Command::new("rpm").args(["--eval", "%_dbpath"]).output().map_err(|e| format!("cannot run rpm: {e}"))?;
    let default = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if std::path::Path::new(&default) == rpmdb.dbpath {
        return Ok(None);
    }
    let home = std::env::temp_dir().join(format!("patchops-rpmmacros-{}", std::process::id()));
    let macros = format!("%_dbpath {}\n", rpmdb.dbpath.display());
    let path = home.join(".rpmmacros");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(macros.as_str()) {
        std::fs::create_dir_all(&home)
            .and_then(|_| std::fs::write(&path, macros))
            .map_err(|e| format!("cannot write {} (rpm macros for the package manager): {e}", path.display()))?;
    }
    Ok(Some(home))
}

/// Package tests with an upper bound, as (name, arch, fixed version).
pub(super) fn fixed_packages(rule: &Rule, out: &mut Vec<(String, Option<String>, String)>) {
    match rule {
        Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| fixed_packages(r, out)),
        Rule::Not(r) => fixed_packages(r, out),
        Rule::RpmPackage(t) => {
            if let Some(v) = &t.version_below {
                out.push((t.name.clone(), t.arch.clone(), v.clone()));
            }
        }
        Rule::Installed(_) | Rule::Fact(_) | Rule::Always(_) | Rule::Package(_) => {}
    }
}

/// One package to upgrade: (name, arch as installed, fixed version, the rule's arch).
pub(super) struct Target {
    pub name: String,
    pub arch: String,
    pub evr: String,
    /// The rule named the architecture (an `updateinfo` package); None: any (OSV).
    pub rule_arch: Option<String>,
}

impl Target {
    /// `name-[epoch:]version-release.arch` as dnf takes it.
    pub fn nevra(&self) -> String {
        format!("{}-{}.{}", self.name, self.evr, self.rule_arch.as_deref().unwrap_or(&self.arch))
    }
}

/// The installed packages of an update below its fixed versions: for each (name, arch)
/// its newest installed version (older installonly kernels stay as they are).
pub(super) fn targets(update: &Update, installed: &[InstalledPackage]) -> Vec<Target> {
    let mut tests = Vec::new();
    fixed_packages(&update.applicability.is_installable, &mut tests);
    let mut newest: std::collections::BTreeMap<(&str, &str), &str> = Default::default();
    for p in installed {
        let slot = newest.entry((p.name.as_str(), p.arch.as_str())).or_insert(p.evr.as_str());
        if compare_rpm(&p.evr, slot).is_gt() {
            *slot = p.evr.as_str();
        }
    }
    // One target per installed (name, arch); two advisory versions for it: the higher.
    let mut out: std::collections::BTreeMap<(String, String), Target> = Default::default();
    for (name, arch, fixed) in tests {
        for (&(n, a), &evr) in &newest {
            let arch_matches = arch.as_deref().is_none_or(|x| x == a);
            if n != name || !arch_matches || compare_rpm(evr, &fixed).is_ge() {
                continue;
            }
            let target =
                Target { name: name.clone(), arch: a.to_string(), evr: fixed.clone(), rule_arch: arch.clone() };
            match out.get(&(name.clone(), a.to_string())) {
                Some(t) if compare_rpm(&t.evr, &fixed).is_ge() => {}
                _ => {
                    out.insert((name.clone(), a.to_string()), target);
                }
            }
        }
    }
    out.into_values().collect()
}

/// The `Error:` lines of dnf's output, else its last line.
pub(super) fn tool_message(out: &Output, tool: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = format!("{stderr}\n{stdout}");
    let errors: Vec<&str> =
        text.lines().map(str::trim).filter(|l| l.starts_with("Error") || l.contains("error:")).collect();
    if !errors.is_empty() {
        return errors.join("; ");
    }
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map_or_else(|| format!("{tool} exited with {}", out.status), str::to_string)
}

impl Dnf {
    fn run(&self, verb: &str, extra: &[&str], targets: &[Target]) -> Result<Output, String> {
        let mut cmd = self.command(verb)?;
        cmd.args(extra);
        cmd.args(targets.iter().map(Target::nevra));
        cmd.output().map_err(|e| format!("cannot run dnf: {e}"))
    }

    fn targets_now(&self, update: &Update) -> Result<Vec<Target>, String> {
        let installed = self.rpmdb.installed().map_err(|e| e.to_string())?;
        let targets = targets(update, &installed);
        if targets.is_empty() {
            return Err(format!(
                "{}: no installed package of this update is below its fixed version; re-scan",
                update.id
            ));
        }
        Ok(targets)
    }

    /// `dnf needs-restarting -r` (dnf-plugins-core) on this machine: exit 1 when a reboot
    /// is needed. Only for the running system, and only where the plugin is present.
    fn needs_restarting(&self) -> bool {
        if self.rpmdb.root != std::path::Path::new("/") {
            return false;
        }
        Command::new("dnf").args(["needs-restarting", "-r", "-q"]).output().is_ok_and(|o| {
            o.status.code() == Some(1) && !String::from_utf8_lossy(&o.stderr).contains("No such command")
        })
    }
}

impl Installer for Dnf {
    fn install(&mut self, update: &Update, _files: &[PathBuf]) -> InstallOutcome {
        let started = Instant::now();
        let took = || SignedDuration::try_from(started.elapsed()).unwrap_or(SignedDuration::MAX);
        let targets = match self.targets_now(update) {
            Ok(t) => t,
            Err(error) => return InstallOutcome::Failed { error, took: took() },
        };
        let spelled: Vec<String> = targets.iter().map(Target::nevra).collect();
        let extra: &[&str] = if self.dry_run { &["--assumeno"] } else { &["-y"] };
        match self.run("upgrade", extra, &targets) {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
                // --assumeno ends a resolved transaction with "Operation aborted." and exit 1.
                let resolved_dry_run = self.dry_run
                    && text.contains("Operation aborted")
                    && !text.lines().any(|l| l.trim_start().starts_with("Error"));
                if out.status.success() || resolved_dry_run {
                    let reboot = update.reboot_required || (!self.dry_run && self.needs_restarting());
                    InstallOutcome::Installed { reboot_required: reboot, took: took() }
                } else {
                    InstallOutcome::Failed {
                        error: format!("dnf upgrade {}: {}", spelled.join(" "), tool_message(&out, "dnf")),
                        took: took(),
                    }
                }
            }
            Err(error) => InstallOutcome::Failed { error, took: took() },
        }
    }

    fn fetches_own_content(&self) -> bool {
        true
    }

    /// `dnf upgrade --downloadonly -y` of the same packages: into dnf's cache, nothing installed.
    fn prefetch(&mut self, update: &Update) -> Result<(), String> {
        let targets = self.targets_now(update)?;
        let out = self.run("upgrade", &["--downloadonly", "-y"], &targets)?;
        if out.status.success() {
            Ok(())
        } else {
            let spelled: Vec<String> = targets.iter().map(Target::nevra).collect();
            Err(format!("dnf upgrade --downloadonly {}: {}", spelled.join(" "), tool_message(&out, "dnf")))
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::RpmPackageTest;

    fn pkg(name: &str, evr: &str, arch: &str) -> InstalledPackage {
        InstalledPackage { name: name.into(), evr: evr.into(), arch: arch.into() }
    }

    fn below(name: &str, arch: Option<&str>, v: &str) -> Rule {
        Rule::RpmPackage(RpmPackageTest {
            name: name.into(),
            arch: arch.map(Into::into),
            version_below: Some(v.into()),
            ..Default::default()
        })
    }

    #[test]
    fn targets_are_exactly_the_installed_packages_below_their_fix() {
        let mut update = crate::catalog::test_support::update("ALSA-1", "AlmaLinux 9", "2026-11-24");
        update.applicability.is_installable = Rule::Any(vec![
            below("openssl-libs", Some("x86_64"), "1:3.0.7-27.el9"),
            below("openssl-libs", Some("i686"), "1:3.0.7-27.el9"),
            below("kernel", None, "5.14.0-427.el9"),
            below("tzdata", None, "2024b-1.el9"),
            below("bash", None, "5.1.8-9.el9"),
        ]);
        let installed = [
            pkg("openssl-libs", "1:3.0.7-25.el9", "x86_64"),
            pkg("openssl-libs", "1:3.0.7-27.el9", "i686"),
            pkg("kernel", "5.14.0-362.el9", "x86_64"),
            pkg("kernel", "5.14.0-427.el9", "x86_64"),
            pkg("tzdata", "2024a-1.el9", "noarch"),
            pkg("bash", "5.1.8-9.el9", "x86_64"),
            pkg("vim", "9.0-1", "x86_64"),
        ];
        let spelled: Vec<String> = targets(&update, &installed).iter().map(Target::nevra).collect();
        assert_eq!(spelled, ["openssl-libs-1:3.0.7-27.el9.x86_64", "tzdata-2024b-1.el9.noarch"]);
    }
}
