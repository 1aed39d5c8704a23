//! The `zypper` installer (SLES, openSUSE): installs exactly the installed packages an
//! update names that are below its fixed versions, at those versions
//! (`zypper install name.arch=[epoch:]version-release`). zypper fetches the packages from
//! its own configured repositories. With `dry_run` it resolves and stops (`--dry-run`).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

use jiff::SignedDuration;

use super::dnf::{Target, rpm_macros_home, targets, tool_message};
use super::{InstallOutcome, Installer};
use crate::agent::scanners::rpm::RpmDb;
use crate::catalog::Update;

/// zypper's exit codes that are not failures: 100/101 updates or security updates are
/// pending, 102 a reboot is needed, 103 zypper itself was updated.
const ZYPPER_REBOOT_NEEDED: i32 = 102;

#[derive(Clone, Debug)]
pub struct Zypper {
    /// Resolve only (`--dry-run`): the default in tests and for a first rollout.
    pub dry_run: bool,
    /// The root zypper works on (`--root` unless `/`) and its rpm database.
    pub rpmdb: RpmDb,
}

impl Zypper {
    pub fn new(dry_run: bool, rpmdb: RpmDb) -> Self {
        Zypper { dry_run, rpmdb }
    }

    /// `name.arch=evr` (`name=evr` when the rule names no architecture).
    fn spell(target: &Target) -> String {
        match &target.rule_arch {
            Some(arch) => format!("{}.{arch}={}", target.name, target.evr),
            None => format!("{}={}", target.name, target.evr),
        }
    }

    fn run(&self, extra: &[&str], targets: &[Target]) -> Result<Output, String> {
        let mut cmd = Command::new("zypper");
        cmd.arg("--non-interactive");
        if self.rpmdb.root != std::path::Path::new("/") {
            cmd.arg("--root").arg(&self.rpmdb.root);
        }
        if let Some(home) = rpm_macros_home(&self.rpmdb)? {
            cmd.env("HOME", home);
        }
        cmd.args(["install", "--no-recommends"]).args(extra);
        cmd.args(targets.iter().map(Self::spell));
        cmd.output().map_err(|e| format!("cannot run zypper: {e}"))
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

    fn succeeded(out: &Output) -> bool {
        matches!(out.status.code(), Some(0 | 100..=103))
    }
}

impl Installer for Zypper {
    fn install(&mut self, update: &Update, _files: &[PathBuf]) -> InstallOutcome {
        let started = Instant::now();
        let took = || SignedDuration::try_from(started.elapsed()).unwrap_or(SignedDuration::MAX);
        let targets = match self.targets_now(update) {
            Ok(t) => t,
            Err(error) => return InstallOutcome::Failed { error, took: took() },
        };
        let extra: &[&str] = if self.dry_run { &["--dry-run"] } else { &[] };
        match self.run(extra, &targets) {
            Ok(out) if Self::succeeded(&out) => {
                let reboot =
                    update.reboot_required || (!self.dry_run && out.status.code() == Some(ZYPPER_REBOOT_NEEDED));
                InstallOutcome::Installed { reboot_required: reboot, took: took() }
            }
            Ok(out) => {
                let spelled: Vec<String> = targets.iter().map(Self::spell).collect();
                InstallOutcome::Failed {
                    error: format!(
                        "zypper install {} (exit {}): {}",
                        spelled.join(" "),
                        out.status.code().unwrap_or(-1),
                        tool_message(&out, "zypper")
                    ),
                    took: took(),
                }
            }
            Err(error) => InstallOutcome::Failed { error, took: took() },
        }
    }

    fn fetches_own_content(&self) -> bool {
        true
    }

    /// `zypper install --download-only` of the same packages: into zypper's cache.
    fn prefetch(&mut self, update: &Update) -> Result<(), String> {
        let targets = self.targets_now(update)?;
        let out = self.run(&["--download-only"], &targets)?;
        if Self::succeeded(&out) {
            Ok(())
        } else {
            let spelled: Vec<String> = targets.iter().map(Self::spell).collect();
            Err(format!("zypper install --download-only {}: {}", spelled.join(" "), tool_message(&out, "zypper")))
        }
    }
}
