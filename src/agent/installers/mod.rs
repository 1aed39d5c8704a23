//! Installers carry out what a deployment asks for on one update: `apt`, `dnf` and
//! `zypper` (real, with a dry-run mode) and `simulated` (for fleets of in-process agents).

pub mod apt;
pub mod dnf;
pub mod simulated;
pub mod zypper;

use jiff::SignedDuration;

use crate::catalog::Update;

/// What an installation attempt ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallOutcome {
    /// Installed; a restart may be needed before the update is complete (T1.R3).
    Installed { reboot_required: bool, took: SignedDuration },
    /// Not installed; the update stays Required (T1.R4) with this error.
    Failed { error: String, took: SignedDuration },
}

/// Installs one update. `files` are the update's content files already downloaded and
/// checked (installers that fetch from a package repository ignore them).
pub trait Installer {
    fn install(&mut self, update: &Update, files: &[std::path::PathBuf]) -> InstallOutcome;

    /// The package manager fetches from its own configured mirrors; the agent does not
    /// download from the management point.
    fn fetches_own_content(&self) -> bool {
        false
    }

    /// Download only (e.g. `dnf --downloadonly`), before the installation is due. `Err`
    /// carries the tool's message (→ DownloadFailed).
    fn prefetch(&mut self, update: &Update) -> Result<(), String> {
        let _ = update;
        Ok(())
    }
}
