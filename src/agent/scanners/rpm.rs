//! The `rpm` scanner: installed packages from the rpm database, listed by `rpm -qa` (the
//! reference tool, whatever the database backend: sqlite, ndb or Berkeley DB), become
//! facts for the catalog's `rpmPackage` rules — `name.arch` with that architecture's
//! version and `name` with the lowest over the architectures — plus `os`, `osVersion` and
//! `osFamily` from the root's `/etc/os-release`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::catalog::Facts;
use crate::catalog::applicability::compare_rpm;
use crate::{Error, Result};

/// Where the rpm database is: a root (`/`, or a private root) and the database directory
/// inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpmDb {
    pub root: PathBuf,
    /// Inside `root`; `/var/lib/rpm` on RHEL, Fedora and SUSE (on newer ones a link to
    /// `/usr/lib/sysimage/rpm`).
    pub dbpath: PathBuf,
}

impl Default for RpmDb {
    fn default() -> Self {
        RpmDb { root: PathBuf::from("/"), dbpath: PathBuf::from(DEFAULT_DBPATH) }
    }
}

pub const DEFAULT_DBPATH: &str = "/var/lib/rpm";

/// One installed package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledPackage {
    pub name: String,
    /// `[epoch:]version-release`, the epoch left out when 0.
    pub evr: String,
    pub arch: String,
}

fn scan_error(message: String) -> Error {
    Error::Scan { scanner: "rpm".into(), message }
}

impl RpmDb {
    pub fn new(root: &Path, dbpath: Option<&Path>) -> Self {
        RpmDb {
            root: root.to_path_buf(),
            dbpath: dbpath.map_or_else(|| PathBuf::from(DEFAULT_DBPATH), Path::to_path_buf),
        }
    }

    /// The database directory as seen from outside the root.
    pub fn directory(&self) -> PathBuf {
        self.root.join(self.dbpath.strip_prefix("/").unwrap_or(&self.dbpath))
    }

    /// `rpm` with `--root` and `--dbpath` set: rpm's own default database path differs
    /// between builds (Debian's rpm uses `~/.rpmdb`), so it is always given.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("rpm");
        cmd.arg("--root").arg(&self.root).arg("--dbpath").arg(&self.dbpath);
        cmd
    }

    /// Every installed package. An rpm database that is missing (rpm would list nothing
    /// and succeed), unreadable or locked is an error with rpm's message.
    pub fn installed(&self) -> Result<Vec<InstalledPackage>> {
        let dir = self.directory();
        let backends = ["rpmdb.sqlite", "Packages", "Packages.db"];
        if !backends.iter().any(|f| dir.join(f).is_file()) {
            return Err(scan_error(format!(
                "no rpm database in {} (none of {}); check --rpm-root and --rpm-dbpath",
                dir.display(),
                backends.join(", ")
            )));
        }
        let out = self
            .command()
            .args(["-qa", "--qf", "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n"])
            .output()
            .map_err(|e| scan_error(format!("cannot run rpm ({e}); is rpm installed?")))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        if !out.status.success() || !errors.is_empty() {
            let message = if errors.is_empty() { stderr.trim().to_string() } else { errors.join("; ") };
            return Err(scan_error(format!("rpm -qa on {} failed: {message}", dir.display())));
        }
        let stdout = String::from_utf8(out.stdout).map_err(|e| {
            scan_error(format!("rpm -qa printed non-UTF-8 text at byte {}", e.utf8_error().valid_up_to()))
        })?;
        parse_query(&stdout)
    }

    /// `os`, `osVersion`, `osFamily` from the root's os-release.
    pub fn os_facts(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for candidate in ["etc/os-release", "usr/lib/os-release"] {
            if let Ok(text) = std::fs::read_to_string(self.root.join(candidate)) {
                out = os_facts(&text);
                break;
            }
        }
        out
    }
}

/// Lines of `NAME\tEPOCHNUM\tVERSION\tRELEASE\tARCH`. `gpg-pubkey` entries (imported
/// signing keys, arch `(none)`) are not packages.
pub fn parse_query(text: &str) -> Result<Vec<InstalledPackage>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, epoch, version, release, arch] = fields[..] else {
            return Err(scan_error(format!(
                "rpm -qa line {}: {line:?} is not name, epoch, version, release, arch",
                i + 1
            )));
        };
        if arch == "(none)" && name == "gpg-pubkey" {
            continue;
        }
        let evr = if epoch == "0" || epoch == "(none)" {
            format!("{version}-{release}")
        } else {
            format!("{epoch}:{version}-{release}")
        };
        out.push(InstalledPackage { name: name.to_string(), evr, arch: arch.to_string() });
    }
    Ok(out)
}

/// The facts `rpmPackage` rules read: `name.arch` → the highest version installed for
/// that architecture (several versions of one name and arch are installonly packages —
/// kernels — and the newest is the one the machine boots next), `name` → the lowest of
/// those over the architectures (one unpatched multilib copy leaves the system exposed).
pub fn facts(packages: &[InstalledPackage]) -> Facts {
    let mut facts = Facts::default();
    for p in packages {
        let key = format!("{}.{}", p.name, p.arch);
        let entry = facts.packages.entry(key).or_insert_with(|| p.evr.clone());
        if compare_rpm(&p.evr, entry).is_gt() {
            p.evr.clone_into(entry);
        }
    }
    for p in packages {
        let newest = facts.packages[&format!("{}.{}", p.name, p.arch)].clone();
        match facts.packages.get_mut(&p.name) {
            Some(lowest) if compare_rpm(&newest, lowest).is_lt() => *lowest = newest,
            Some(_) => {}
            None => {
                facts.packages.insert(p.name.clone(), newest);
            }
        }
    }
    facts
}

/// `os` (ID: `almalinux`, `rhel`, `sles`…), `osVersion` (VERSION_ID: `9.4`) and
/// `osFamily`: `rhel` for RHEL and its rebuilds and CentOS, `suse` for SLES and openSUSE,
/// `fedora`, `debian` — the first of ID and ID_LIKE that is one of these, else ID.
/// Collections select RHEL-like machines with `osFamily: rhel`.
pub fn os_facts(os_release: &str) -> BTreeMap<String, String> {
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    for line in os_release.lines() {
        if let Some((k, v)) = line.split_once('=') {
            values.insert(k.trim(), v.trim().trim_matches(['"', '\'']).to_string());
        }
    }
    let mut out = BTreeMap::new();
    let id = values.get("ID").cloned().unwrap_or_default();
    if !id.is_empty() {
        out.insert("os".to_string(), id.clone());
    }
    if let Some(v) = values.get("VERSION_ID") {
        out.insert("osVersion".to_string(), v.clone());
    }
    let like = values.get("ID_LIKE").cloned().unwrap_or_default();
    let candidates: Vec<&str> = std::iter::once(id.as_str()).chain(like.split_whitespace()).collect();
    let family = ["rhel", "suse", "fedora", "debian"]
        .into_iter()
        .find(|f| candidates.iter().any(|c| c == f || (*f == "suse" && *c == "sles")))
        .map(str::to_string)
        .or_else(|| (!id.is_empty()).then(|| id.clone()));
    if let Some(f) = family {
        out.insert("osFamily".to_string(), f);
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::ScanVerdict;
    use crate::catalog::{Applicability, RpmPackageTest, Rule};

    #[test]
    fn each_architecture_counts_at_its_newest_and_the_name_at_the_lowest_architecture() {
        let text = "kernel\t0\t5.14.0\t362.8.1.el9_3\tx86_64\n\
                    kernel\t0\t5.14.0\t427.13.1.el9_4\tx86_64\n\
                    openssl-libs\t1\t3.0.7\t27.el9\tx86_64\n\
                    openssl-libs\t1\t3.0.7\t25.el9_3\ti686\n\
                    tzdata\t0\t2024a\t1.el9\tnoarch\n\
                    gpg-pubkey\t0\t3abb34f8\t5ffd890e\t(none)\n";
        let pkgs = parse_query(text).unwrap();
        assert_eq!(pkgs.len(), 5, "gpg-pubkey is a key, not a package");
        let f = facts(&pkgs);
        assert_eq!(f.packages["kernel.x86_64"], "5.14.0-427.13.1.el9_4", "the newest kernel");
        assert_eq!(f.packages["kernel"], "5.14.0-427.13.1.el9_4");
        assert_eq!(f.packages["openssl-libs.x86_64"], "1:3.0.7-27.el9");
        assert_eq!(f.packages["openssl-libs.i686"], "1:3.0.7-25.el9_3");
        assert_eq!(f.packages["openssl-libs"], "1:3.0.7-25.el9_3", "the unpatched i686 copy");
        assert_eq!(f.packages["tzdata.noarch"], "2024a-1.el9");

        let kernel = Applicability {
            is_installable: Rule::RpmPackage(RpmPackageTest {
                name: "kernel".into(),
                arch: Some("x86_64".into()),
                version_below: Some("5.14.0-427.13.1.el9_4".into()),
                ..Default::default()
            }),
            is_installed: Rule::RpmPackage(RpmPackageTest {
                name: "kernel".into(),
                arch: Some("x86_64".into()),
                version_at_least: Some("5.14.0-427.13.1.el9_4".into()),
                ..Default::default()
            }),
            prerequisites: vec![],
        };
        assert_eq!(kernel.evaluate(&f), ScanVerdict::Installed, "the old kernel beside the new one");

        let err = parse_query("kernel\t0\t5.14.0\n").unwrap_err().to_string();
        assert!(err.contains("rpm -qa line 1") && err.contains("not name, epoch, version, release, arch"), "{err}");
    }

    #[test]
    fn os_facts_come_from_os_release_with_the_family() {
        let alma = "NAME=\"AlmaLinux\"\nVERSION_ID=\"9.4\"\nID=\"almalinux\"\nID_LIKE=\"rhel centos fedora\"\n";
        let f = os_facts(alma);
        assert_eq!(f["os"], "almalinux");
        assert_eq!(f["osVersion"], "9.4");
        assert_eq!(f["osFamily"], "rhel");
        assert_eq!(os_facts("ID=rhel\nID_LIKE=fedora\nVERSION_ID=9.4\n")["osFamily"], "rhel");
        assert_eq!(os_facts("ID=\"sles\"\nID_LIKE=\"suse\"\nVERSION_ID=\"15.5\"\n")["osFamily"], "suse");
        assert_eq!(os_facts("ID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\n")["osFamily"], "suse");
        assert_eq!(os_facts("ID=fedora\nVERSION_ID=40\n")["osFamily"], "fedora");
        assert_eq!(os_facts("ID=arch\n")["osFamily"], "arch");
        assert!(os_facts("").is_empty());
    }

    #[test]
    fn a_missing_rpm_database_is_a_scan_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let err = RpmDb::new(dir.path(), None).installed().unwrap_err().to_string();
        assert!(err.contains("no rpm database in") && err.contains("var/lib/rpm"), "{err}");
        assert!(err.contains("--rpm-root"), "{err}");
    }
}
