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

    /// The package manager fetches from its own configured mirrors (apt, dnf, zypper):
    /// the agent does not download the update's files from the management point.
    fn fetches_own_content(&self) -> bool {
        false
    }

    /// Download what `install` will need without installing it (for example
    /// `apt-get --download-only`); an error carries the tool's message and is reported as
    /// DownloadFailed. Only called when [`Installer::fetches_own_content`] is true.
    fn prefetch(&mut self, _update: &Update) -> Result<(), String> {
        Ok(())
    }
}
