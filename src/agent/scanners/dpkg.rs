//! The `dpkg` scanner: installed packages from the dpkg status file become facts — each
//! binary package with its version, and `src:<source>` with the source version (what
//! DSA and OSV advisories name) — for the catalog's package rules.

use std::collections::HashMap;
use std::path::Path;

use crate::catalog::Facts;
use crate::catalog::applicability::compare_debian;
use crate::{Error, Result};

/// One installed package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledPackage {
    pub name: String,
    pub architecture: String,
    pub version: String,
    pub source: String,
    pub source_version: String,
}

/// Parse a dpkg status file; only packages whose status is `installed` count.
pub fn parse_status(name: &str, text: &str) -> Result<Vec<InstalledPackage>> {
    let mut out = Vec::new();
    let mut line_no = 0;
    for stanza in text.split("\n\n") {
        let start = line_no + 1;
        line_no += stanza.lines().count() + 1;
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue; // continuation of a multi-line field
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.trim(), v.trim());
            }
        }
        if fields.is_empty() {
            continue;
        }
        let fail = |what: &str| Error::Scan {
            scanner: "dpkg".into(),
            message: format!("{name}: line {start}: package stanza without {what}; the dpkg status file is damaged"),
        };
        let package = *fields.get("Package").ok_or_else(|| fail("Package"))?;
        let status = fields.get("Status").copied().unwrap_or_default();
        if status.split_whitespace().nth(2) != Some("installed") {
            continue;
        }
        let version = *fields.get("Version").ok_or_else(|| fail("Version"))?;
        let (source, source_version) = match fields.get("Source") {
            Some(s) => match s.split_once(' ') {
                Some((src, v)) => (src, v.trim().trim_start_matches('(').trim_end_matches(')')),
                None => (*s, version),
            },
            None => (package, version),
        };
        out.push(InstalledPackage {
            name: package.to_string(),
            architecture: fields.get("Architecture").copied().unwrap_or_default().to_string(),
            version: version.to_string(),
            source: source.to_string(),
            source_version: source_version.to_string(),
        });
    }
    Ok(out)
}

/// Read and parse a dpkg status file (normally /var/lib/dpkg/status).
pub fn read_status(path: &Path) -> Result<Vec<InstalledPackage>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse_status(&path.display().to_string(), &text)
}

/// The facts package rules read. A package installed for several architectures, or a
/// source whose binaries are at different versions, counts at its lowest version: one
/// unpatched copy leaves the system exposed.
pub fn facts(packages: &[InstalledPackage]) -> Facts {
    let mut facts = Facts::default();
    let mut keep_lowest = |key: String, version: &str| {
        let entry = facts.packages.entry(key).or_insert_with(|| version.to_string());
        if compare_debian(version, entry) == std::cmp::Ordering::Less {
            *entry = version.to_string();
        }
    };
    for p in packages {
        keep_lowest(p.name.clone(), &p.version);
        keep_lowest(format!("src:{}", p.source), &p.source_version);
    }
    facts
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::agent::scanners::scan;
    use crate::catalog::{Catalog, ScanVerdict, debian};

    const STATUS: &str = "\
Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.11-1~deb12u2
Description: Secure Sockets Layer toolkit
 shared libraries

Package: libssl3
Status: install ok installed
Architecture: i386
Source: openssl
Version: 3.0.11-1~deb12u1

Package: openssl
Status: deinstall ok config-files
Architecture: amd64
Version: 3.0.9-1

Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc (2.36-9+deb12u4)
Version: 2.36-9+deb12u4+b1
";

    #[test]
    fn only_installed_packages_count_at_their_lowest_version_with_their_source() {
        let pkgs = parse_status("status", STATUS).unwrap();
        assert_eq!(pkgs.len(), 3, "the removed openssl (config-files) is not installed");
        let f = facts(&pkgs);
        assert_eq!(f.packages["libssl3"], "3.0.11-1~deb12u1", "the lower of the two architectures");
        assert_eq!(f.packages["src:openssl"], "3.0.11-1~deb12u1");
        assert_eq!(f.packages["src:glibc"], "2.36-9+deb12u4", "the source version, not the binNMU");
        assert!(!f.packages.contains_key("openssl"));
    }

    #[test]
    fn a_damaged_status_file_names_the_stanza_line() {
        let err = parse_status(
            "status",
            "Package: a\nStatus: install ok installed\nVersion: 1\n\nStatus: install ok installed\nVersion: 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 5") && err.contains("without Package"), "{err}");
    }

    fn security_index() -> Option<std::path::PathBuf> {
        std::fs::read_dir("/var/lib/apt/lists").ok()?.flatten().map(|e| e.path()).find(|p| {
            let s = p.to_string_lossy();
            s.contains("-security") && s.contains("_Packages")
        })
    }

    /// The oracle: `apt list --upgradable`. Every source package apt would upgrade from
    /// the security suite is Missing in our scan; every source we find Missing beyond
    /// those, apt upgrades from another suite (a newer point-release version wins).
    #[test]
    fn the_dpkg_scan_of_this_machine_agrees_with_apt_on_security_upgrades() {
        let Some(index) = security_index() else {
            panic!("no security Packages index in /var/lib/apt/lists; run apt-get update");
        };
        let bytes = std::fs::read(&index).unwrap();
        let updates =
            debian::parse_packages("security", &debian::decompress("security", &bytes).unwrap(), &Default::default())
                .unwrap();
        let catalog = Catalog::new(1, updates, &Default::default());
        let installed = read_status(Path::new("/var/lib/dpkg/status")).unwrap();
        let f = facts(&installed);
        let ours: std::collections::BTreeSet<String> = scan(&catalog, &f)
            .into_iter()
            .filter(|(_, v)| *v == ScanVerdict::Missing)
            .map(|(i, _)| catalog.updates[i as usize].id.split('_').next().unwrap().to_string())
            .collect();

        let out = std::process::Command::new("apt").args(["list", "--upgradable"]).output().expect("apt runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let source_of: HashMap<&str, &str> = installed.iter().map(|p| (p.name.as_str(), p.source.as_str())).collect();
        let mut from_security = std::collections::BTreeSet::new();
        let mut from_elsewhere = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| l.contains('/')) {
            let (name, rest) = line.split_once('/').unwrap();
            let suites = rest.split_whitespace().next().unwrap_or_default();
            let Some(src) = source_of.get(name) else { continue };
            if suites.split(',').any(|s| s.ends_with("-security")) {
                from_security.insert(src.to_string());
            } else {
                from_elsewhere.insert(src.to_string());
            }
        }
        let missed: Vec<&String> = from_security.difference(&ours).collect();
        assert!(
            missed.is_empty(),
            "apt upgrades these from the security suite but the scan does not find them Missing: {missed:?}"
        );
        let extra: Vec<&String> = ours.difference(&from_security).filter(|s| !from_elsewhere.contains(*s)).collect();
        assert!(extra.is_empty(), "the scan finds these Missing but apt would not upgrade them: {extra:?}");
        println!("{} source packages need security updates; apt agrees", ours.len());
    }
}
