//! The system an agent manages: what its scanner reads (facts for the catalog's
//! applicability rules) and what its installer changes. `dpkg` is this Debian/Ubuntu
//! machine; `rpm` a RHEL-, Fedora- or SUSE-family one (or a private root); `rules` is a facts document (WSUS-style rules over declared facts) whose
//! installs are simulated — the path for Windows-like catalogs and for fleets of
//! in-process agents.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use jiff::SignedDuration;
use serde::Deserialize;

use super::installers::apt::Apt;
use super::installers::simulated::Simulated;
use super::installers::{InstallOutcome, Installer};
use super::scanners::dpkg;
use super::scanners::rpm::{self, RpmDb};
use crate::catalog::{Catalog, Facts, Update};
use crate::{Error, Result};

/// A managed system.
pub trait Machine: Send {
    /// The facts the scanner evaluates the catalog's rules against.
    fn facts(&mut self, catalog: &Catalog) -> Result<Facts>;
    /// Install one update from its checked files.
    fn install(&mut self, update: &Update, files: &[PathBuf]) -> InstallOutcome;
    /// The installer's package manager fetches the content from its own sources, so the
    /// agent asks it to ([`Machine::prefetch`]) instead of the management point.
    fn fetches_own_content(&self) -> bool {
        false
    }
    /// Have the package manager download an update's content; Err: its message.
    fn prefetch(&mut self, _update: &Update) -> std::result::Result<(), String> {
        Ok(())
    }
    /// Restart after installations that need one (T1.R3 ends here).
    fn restart(&mut self);
    /// Facts sent at registration (collections select on them).
    fn inventory(&self) -> BTreeMap<String, String>;
}

/// This machine, scanned from the dpkg status file and updated with apt.
pub struct DpkgMachine {
    pub status: PathBuf,
    pub apt: Apt,
    /// Extra facts for collections (role, site…), plus `os` from /etc/os-release.
    pub values: BTreeMap<String, String>,
}

impl DpkgMachine {
    pub fn new(status: &Path, dry_run: bool, values: BTreeMap<String, String>) -> Self {
        let mut values = values;
        if let Ok(text) = std::fs::read_to_string("/etc/os-release")
            && let Some(name) = os_release_name(&text)
        {
            values.entry("os".into()).or_insert(name);
        }
        let mut apt = Apt::new(dry_run);
        apt.status = status.to_path_buf();
        DpkgMachine { status: status.to_path_buf(), apt, values }
    }
}

/// `PRETTY_NAME` of os-release, e.g. "Debian GNU/Linux 12 (bookworm)".
fn os_release_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string())
}

impl Machine for DpkgMachine {
    fn facts(&mut self, _catalog: &Catalog) -> Result<Facts> {
        let mut facts = dpkg::facts(&dpkg::read_status(&self.status)?);
        facts.values = self.values.clone();
        Ok(facts)
    }

    fn install(&mut self, update: &Update, files: &[PathBuf]) -> InstallOutcome {
        self.apt.install(update, files)
    }

    fn fetches_own_content(&self) -> bool {
        self.apt.fetches_own_content()
    }

    fn prefetch(&mut self, update: &Update) -> std::result::Result<(), String> {
        self.apt.prefetch(update)
    }

    /// A real machine is never restarted by the agent: the pending restart is reported
    /// (Required, T1.R3) until someone restarts it.
    fn restart(&mut self) {}

    fn inventory(&self) -> BTreeMap<String, String> {
        self.values.clone()
    }
}

/// A machine scanned from its rpm database and updated with dnf or zypper.
pub struct RpmMachine {
    pub rpmdb: RpmDb,
    pub installer: Box<dyn Installer + Send>,
    /// `os`, `osVersion`, `osFamily` from the root's os-release, plus extra facts.
    pub values: BTreeMap<String, String>,
}

impl RpmMachine {
    /// Extra facts win over the os-release ones.
    pub fn new(rpmdb: RpmDb, installer: Box<dyn Installer + Send>, extra: BTreeMap<String, String>) -> Self {
        let mut values = rpmdb.os_facts();
        values.extend(extra);
        RpmMachine { rpmdb, installer, values }
    }
}

impl Machine for RpmMachine {
    fn facts(&mut self, _catalog: &Catalog) -> Result<Facts> {
        let mut facts = rpm::facts(&self.rpmdb.installed()?);
        facts.values = self.values.clone();
        Ok(facts)
    }

    fn install(&mut self, update: &Update, files: &[PathBuf]) -> InstallOutcome {
        self.installer.install(update, files)
    }

    /// As for dpkg: the pending restart is reported until someone restarts the machine.
    fn restart(&mut self) {}

    fn inventory(&self) -> BTreeMap<String, String> {
        self.values.clone()
    }

    fn fetches_own_content(&self) -> bool {
        self.installer.fetches_own_content()
    }

    fn prefetch(&mut self, update: &Update) -> std::result::Result<(), String> {
        self.installer.prefetch(update)
    }
}

/// A facts document: `facts` (name → value), `installed` (update ids / KB numbers) and
/// `packages` (name → version), e.g. for a Windows-like machine:
///
/// ```yaml
/// facts: {os: "Windows Server 2022", role: server, site: BER}
/// installed: [KB5031364]
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsDocument {
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    #[serde(default)]
    pub installed: Vec<String>,
    #[serde(default)]
    pub packages: BTreeMap<String, String>,
}

impl FactsDocument {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        crate::yaml::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "{}: {e}; a facts document has `facts` (name: value), `installed` (ids or KB numbers) and \
                 `packages` (name: version)",
                path.display()
            ))
        })
    }
}

/// A machine described by facts, with simulated installs: installing an update adds its
/// id and KB to the installed set, so the next scan finds it Installed.
pub struct FactsMachine {
    pub values: BTreeMap<String, String>,
    pub installed: HashSet<String>,
    pub packages: std::collections::HashMap<String, String>,
    /// Updates for the `os` fact released on or before this date count as installed
    /// (a simulated machine's patch level).
    pub patched_through: Option<jiff::civil::Date>,
    pub installer: Simulated,
    /// Every scan fails with this error (a broken update source).
    pub scan_error: Option<String>,
}

impl FactsMachine {
    pub fn new(doc: FactsDocument, installer: Simulated) -> Self {
        FactsMachine {
            values: doc.facts,
            installed: doc.installed.iter().map(|s| s.to_ascii_uppercase()).collect(),
            packages: doc.packages.into_iter().collect(),
            patched_through: None,
            installer,
            scan_error: None,
        }
    }

    /// A simulated installer with defaults: 10 minutes at most, no failures.
    pub fn default_installer(seed: u64) -> Simulated {
        Simulated::new(seed, SignedDuration::from_mins(10), 0.0, 0.0)
    }
}

impl Machine for FactsMachine {
    fn facts(&mut self, catalog: &Catalog) -> Result<Facts> {
        if let Some(e) = &self.scan_error {
            return Err(Error::Scan { scanner: "rules".into(), message: e.clone() });
        }
        let mut facts =
            Facts { values: self.values.clone(), installed: self.installed.clone(), packages: self.packages.clone() };
        if let Some(through) = self.patched_through {
            crate::catalog::patch_level::mark_patched(&mut facts, catalog, through);
        }
        Ok(facts)
    }

    fn install(&mut self, update: &Update, files: &[PathBuf]) -> InstallOutcome {
        let outcome = self.installer.install(update, files);
        if matches!(outcome, InstallOutcome::Installed { .. }) {
            crate::catalog::patch_level::install_packages(&mut self.packages, update);
            self.installed.insert(update.id.to_ascii_uppercase());
            if let Some(kb) = &update.kb {
                self.installed.insert(kb.to_ascii_uppercase());
            }
        }
        outcome
    }

    fn restart(&mut self) {}

    fn inventory(&self) -> BTreeMap<String, String> {
        self.values.clone()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_os_fact_comes_from_os_release_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(os_release_name(text).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(os_release_name("ID=debian\n"), None);
    }
}
