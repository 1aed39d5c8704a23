//! WSUS-style applicability (C1): an update is installable when its `isInstallable`
//! rule holds and its prerequisites are installed; it is installed when `isInstalled`
//! holds. Rules are evaluated over a client's facts document.

use std::collections::{BTreeMap, HashSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a scanner detects whether an update applies to a system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Applicability {
    /// The update can be installed on this system (product, architecture, build…).
    pub is_installable: Rule,
    /// The update is already installed.
    pub is_installed: Rule,
    /// Updates (ids or KB numbers) that must be installed before this one applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<String>,
}

/// One applicability rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Rule {
    /// Every rule holds.
    All(Vec<Rule>),
    /// At least one rule holds.
    Any(Vec<Rule>),
    /// The rule does not hold.
    Not(Box<Rule>),
    /// The system lists this update (id or KB) among its installed updates.
    Installed(String),
    /// A test on one fact.
    Fact(FactTest),
    /// A test on an installed package (Debian version order).
    Package(PackageTest),
    /// A test on an installed RPM package (RPM version order, as `rpmvercmp`).
    RpmPackage(RpmPackageTest),
    /// Constant.
    Always(bool),
}

/// A test on one fact; exactly one comparison is given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FactTest {
    /// Fact name, e.g. `os`, `arch`, `build`.
    pub name: String,
    /// The fact equals this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The fact is one of these values.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "in")]
    pub in_: Option<Vec<String>>,
    /// The fact, as a dotted version, is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_at_least: Option<String>,
    /// The fact, as a dotted version, is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_below: Option<String>,
}

/// A test on an installed package; with no version bound it tests that the package
/// is installed at all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackageTest {
    /// Binary package name (as dpkg lists it, without the architecture).
    pub name: String,
    /// Installed, at a version older than this (Debian version order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_below: Option<String>,
    /// Installed, at this version or newer (Debian version order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_at_least: Option<String>,
}

/// A test on an installed RPM package; with no version bound it tests that the package
/// is installed at all. Versions are `[epoch:]version-release` and compare as rpm does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RpmPackageTest {
    /// Binary package name (as `rpm -q` lists it, without the architecture).
    pub name: String,
    /// Only the package installed for this architecture (`x86_64`, `i686`, `aarch64`…;
    /// a multilib system may have one per architecture). None: the package of any
    /// architecture, at its lowest installed version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Installed, at a version older than this (RPM version order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_below: Option<String>,
    /// Installed, at this version or newer (RPM version order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_at_least: Option<String>,
}

/// What a client knows about itself: flat facts, the updates it has installed, and its
/// installed packages with their versions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    pub values: BTreeMap<String, String>,
    /// Installed update ids and KB numbers, upper-cased.
    pub installed: HashSet<String>,
    /// Installed packages: name → version. RPM scanners also list each architecture's
    /// package as `name.arch` → version (see [`RpmPackageTest`]).
    pub packages: std::collections::HashMap<String, String>,
}

impl Facts {
    pub fn from_pairs(values: &[(&str, &str)], installed: &[&str]) -> Self {
        Facts {
            values: values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            installed: installed.iter().map(|s| s.to_ascii_uppercase()).collect(),
            packages: Default::default(),
        }
    }

    pub fn from_packages(packages: &[(&str, &str)]) -> Self {
        Facts { packages: packages.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(), ..Default::default() }
    }

    pub fn has_installed(&self, id_or_kb: &str) -> bool {
        self.installed.contains(&id_or_kb.to_ascii_uppercase())
    }
}

/// The result of evaluating one update on one system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanVerdict {
    NotApplicable,
    Missing,
    Installed,
}

impl Applicability {
    /// The usual rule pair: installable on `product` (the `os` fact), installed when
    /// the system lists `kb`.
    pub fn for_product_kb(product: &str, kb: &str) -> Self {
        Applicability {
            is_installable: Rule::Fact(FactTest {
                name: "os".into(),
                equals: Some(product.into()),
                ..Default::default()
            }),
            is_installed: Rule::Installed(kb.into()),
            prerequisites: vec![],
        }
    }

    pub fn evaluate(&self, facts: &Facts) -> ScanVerdict {
        if self.is_installed.holds(facts) {
            return ScanVerdict::Installed;
        }
        let prerequisites_met = self.prerequisites.iter().all(|p| facts.has_installed(p));
        if prerequisites_met && self.is_installable.holds(facts) {
            ScanVerdict::Missing
        } else {
            ScanVerdict::NotApplicable
        }
    }

    /// Structural problems (a fact test with no comparison), as messages.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.is_installable.problems("isInstallable", &mut out);
        self.is_installed.problems("isInstalled", &mut out);
        out
    }
}

impl Rule {
    pub fn holds(&self, facts: &Facts) -> bool {
        match self {
            Rule::All(rules) => rules.iter().all(|r| r.holds(facts)),
            Rule::Any(rules) => rules.iter().any(|r| r.holds(facts)),
            Rule::Not(rule) => !rule.holds(facts),
            Rule::Installed(id) => facts.has_installed(id),
            Rule::Always(b) => *b,
            Rule::Fact(test) => test.holds(facts),
            Rule::Package(test) => test.holds(facts),
            Rule::RpmPackage(test) => test.holds(facts),
        }
    }

    fn problems(&self, path: &str, out: &mut Vec<String>) {
        match self {
            Rule::All(rules) | Rule::Any(rules) => {
                for (i, r) in rules.iter().enumerate() {
                    r.problems(&format!("{path}[{i}]"), out)
                }
            }
            Rule::Not(r) => r.problems(path, out),
            Rule::Fact(t) => {
                let given =
                    [t.equals.is_some(), t.in_.is_some(), t.version_at_least.is_some(), t.version_below.is_some()]
                        .iter()
                        .filter(|b| **b)
                        .count();
                if given != 1 {
                    out.push(format!(
                        "{path}.fact: give exactly one of equals, in, versionAtLeast, versionBelow (found {given})"
                    ));
                }
            }
            Rule::Package(t) => {
                for v in [&t.version_below, &t.version_at_least].into_iter().flatten() {
                    if let Err(e) = v.parse::<debversion::Version>() {
                        out.push(format!("{path}.package.{}: {v:?} is not a Debian version ({e})", t.name));
                    }
                }
            }
            Rule::RpmPackage(t) => {
                for v in [&t.version_below, &t.version_at_least].into_iter().flatten() {
                    if let Err(e) = check_rpm_version(v) {
                        out.push(format!("{path}.rpmPackage.{}: {v:?} is not an RPM version ({e})", t.name));
                    }
                }
            }
            Rule::Installed(_) | Rule::Always(_) => {}
        }
    }
}

impl FactTest {
    fn holds(&self, facts: &Facts) -> bool {
        let Some(value) = facts.values.get(&self.name) else {
            return false;
        };
        if let Some(eq) = &self.equals {
            return value == eq;
        }
        if let Some(set) = &self.in_ {
            return set.iter().any(|v| v == value);
        }
        if let Some(min) = &self.version_at_least {
            return compare_dotted(value, min) != std::cmp::Ordering::Less;
        }
        if let Some(max) = &self.version_below {
            return compare_dotted(value, max) == std::cmp::Ordering::Less;
        }
        false
    }
}

impl PackageTest {
    fn holds(&self, facts: &Facts) -> bool {
        let Some(installed) = facts.packages.get(&self.name) else { return false };
        let below =
            self.version_below.as_ref().is_none_or(|v| compare_debian(installed, v) == std::cmp::Ordering::Less);
        let at_least =
            self.version_at_least.as_ref().is_none_or(|v| compare_debian(installed, v) != std::cmp::Ordering::Less);
        below && at_least
    }
}

impl RpmPackageTest {
    fn holds(&self, facts: &Facts) -> bool {
        let installed = match &self.arch {
            None => facts.packages.get(&self.name),
            Some(arch) => {
                let mut key = String::with_capacity(self.name.len() + 1 + arch.len());
                key.push_str(&self.name);
                key.push('.');
                key.push_str(arch);
                facts.packages.get(&key)
            }
        };
        let Some(installed) = installed else { return false };
        let below = self.version_below.as_ref().is_none_or(|v| compare_rpm(installed, v) == std::cmp::Ordering::Less);
        let at_least =
            self.version_at_least.as_ref().is_none_or(|v| compare_rpm(installed, v) != std::cmp::Ordering::Less);
        below && at_least
    }
}

/// RPM version order, as `rpmvercmp` and `rpm.vercmp` order `[epoch:]version[-release]`
/// (a missing epoch is 0; `~` sorts before anything, `^` after the base but before any
/// further part). The comparison itself is the `rpm-version` crate's.
pub fn compare_rpm(a: &str, b: &str) -> std::cmp::Ordering {
    rpm_version::rpm_evr_compare(a, b)
}

/// What rpm accepts as an `[epoch:]version[-release]` in a package header: a numeric
/// epoch, a non-empty version and release, no whitespace and no further `:` or `-`.
pub fn check_rpm_version(evr: &str) -> Result<(), String> {
    let (epoch, vr) = match evr.split_once(':') {
        Some((e, vr)) => (Some(e), vr),
        None => (None, evr),
    };
    if let Some(e) = epoch
        && (e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("the epoch {e:?} is not a number"));
    }
    let (version, release) = match vr.split_once('-') {
        Some((v, r)) => (v, Some(r)),
        None => (vr, None),
    };
    if version.is_empty() {
        return Err("the version is empty".into());
    }
    if release == Some("") {
        return Err("the release after `-` is empty".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._+~^".contains(c);
    for part in [Some(version), release].into_iter().flatten() {
        if let Some(c) = part.chars().find(|&c| !allowed(c)) {
            return Err(format!("{c:?} is not allowed in a version or release"));
        }
    }
    Ok(())
}

/// Debian version order, as `dpkg --compare-versions` (epoch, upstream, revision, with
/// `~` sorting before everything). Unparseable versions compare as text, last.
pub fn compare_debian(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<debversion::Version>(), b.parse::<debversion::Version>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// Compare dotted numeric versions ("10.0.20348.2113"); non-numeric parts compare as text.
pub fn compare_dotted(a: &str, b: &str) -> std::cmp::Ordering {
    let mut pa = a.split('.');
    let mut pb = b.split('.');
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (x, y) => {
                let x = x.unwrap_or("0");
                let y = y.unwrap_or("0");
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn c1_prerequisites_gate_applicability() {
        let mut a = Applicability::for_product_kb("Windows Server 2022", "KB2");
        a.prerequisites = vec!["KB-SSU".into()];
        let without = Facts::from_pairs(&[("os", "Windows Server 2022")], &[]);
        let with = Facts::from_pairs(&[("os", "Windows Server 2022")], &["kb-ssu"]);
        assert_eq!(a.evaluate(&without), ScanVerdict::NotApplicable);
        assert_eq!(a.evaluate(&with), ScanVerdict::Missing);
    }

    #[test]
    fn c1_rules_combine_facts_and_versions() {
        let rule = Rule::All(vec![
            Rule::Fact(FactTest {
                name: "arch".into(),
                in_: Some(vec!["x64".into(), "arm64".into()]),
                ..Default::default()
            }),
            Rule::Fact(FactTest {
                name: "build".into(),
                version_below: Some("10.0.22631.4460".into()),
                ..Default::default()
            }),
            Rule::Not(Box::new(Rule::Installed("KB9".into()))),
        ]);
        let old = Facts::from_pairs(&[("arch", "x64"), ("build", "10.0.22631.4391")], &[]);
        let new = Facts::from_pairs(&[("arch", "x64"), ("build", "10.0.22631.10000")], &[]);
        let arm_patched = Facts::from_pairs(&[("arch", "arm64"), ("build", "10.0.1")], &["KB9"]);
        assert!(rule.holds(&old));
        assert!(!rule.holds(&new), "numeric, not text, version order");
        assert!(!rule.holds(&arm_patched));
    }

    #[test]
    fn c1_package_rules_use_debian_version_order() {
        let below = Rule::Package(PackageTest {
            name: "openssl".into(),
            version_below: Some("3.0.15-1~deb12u1".into()),
            ..Default::default()
        });
        let old = Facts::from_packages(&[("openssl", "3.0.14-1~deb12u2")]);
        let tilde = Facts::from_packages(&[("openssl", "3.0.15-1~deb12u1~pre1")]);
        let fixed = Facts::from_packages(&[("openssl", "3.0.15-1~deb12u1")]);
        let epoch = Facts::from_packages(&[("openssl", "1:1.0")]);
        assert!(below.holds(&old));
        assert!(below.holds(&tilde), "~ sorts before the empty string");
        assert!(!below.holds(&fixed));
        assert!(!below.holds(&epoch), "an epoch outranks any upstream version");
        assert!(!below.holds(&Facts::default()), "not installed");
    }

    /// `dpkg --compare-versions` is the reference; compare with it on tricky pairs and on
    /// every installed package of this machine against its successor spellings.
    #[test]
    fn debian_version_order_matches_dpkg() {
        if std::process::Command::new("dpkg").arg("--version").output().is_err() {
            panic!("dpkg is needed as the reference for Debian version order");
        }
        let mut pairs: Vec<(String, String)> = [
            ("1.0", "1.0-1"),
            ("1.0~rc1", "1.0"),
            ("1:0.9", "2.0"),
            ("2.0-1", "2.0-1+deb12u1"),
            ("2.0+dfsg", "2.0-1"),
            ("1.2.3a", "1.2.3"),
            ("0", "0~"),
            ("1.0-1~bpo12+1", "1.0-1"),
            ("3.0.15-1~deb12u1", "3.0.15-1"),
            ("a1", "1a"),
            ("7.88.1-10+deb12u12", "7.88.1-10+deb12u5"),
            ("2:1.0", "1:9.9"),
            ("1.0.0", "1.0"),
            ("1.0-0", "1.0"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        if let Ok(status) = std::fs::read_to_string("/var/lib/dpkg/status") {
            let versions: Vec<&str> = status.lines().filter_map(|l| l.strip_prefix("Version: ")).take(60).collect();
            for w in versions.windows(2) {
                pairs.push((w[0].to_string(), w[1].to_string()));
            }
        }
        for (a, b) in pairs {
            let dpkg_lt = std::process::Command::new("dpkg")
                .args(["--compare-versions", &a, "lt", &b])
                .status()
                .unwrap()
                .success();
            let dpkg_eq = std::process::Command::new("dpkg")
                .args(["--compare-versions", &a, "eq", &b])
                .status()
                .unwrap()
                .success();
            let ours = compare_debian(&a, &b);
            let want = if dpkg_lt {
                std::cmp::Ordering::Less
            } else if dpkg_eq {
                std::cmp::Ordering::Equal
            } else {
                std::cmp::Ordering::Greater
            };
            assert_eq!(ours, want, "{a} vs {b}");
        }
    }

    #[test]
    fn c1_rpm_package_rules_use_rpm_version_order_and_architecture() {
        let below = |arch: Option<&str>| {
            Rule::RpmPackage(RpmPackageTest {
                name: "openssl-libs".into(),
                arch: arch.map(Into::into),
                version_below: Some("1:3.0.7-27.el9".into()),
                ..Default::default()
            })
        };
        let facts = |pairs: &[(&str, &str)]| Facts::from_packages(pairs);
        assert!(below(None).holds(&facts(&[("openssl-libs", "1:3.0.7-25.el9")])));
        assert!(!below(None).holds(&facts(&[("openssl-libs", "1:3.0.7-27.el9")])));
        assert!(!below(None).holds(&facts(&[("openssl-libs", "2:1.0-1")])), "the epoch outranks the version");
        assert!(below(None).holds(&facts(&[("openssl-libs", "3.0.8-1.el9")])), "no epoch is epoch 0");
        assert!(below(None).holds(&facts(&[("openssl-libs", "1:3.0.7-27.el9~rc1")])), "~ sorts before the end");
        assert!(!below(None).holds(&facts(&[("openssl-libs", "1:3.0.7-27.el9^1")])), "^ sorts after the end");
        assert!(!below(None).holds(&Facts::default()), "not installed");
        let multilib = facts(&[
            ("openssl-libs", "1:3.0.7-25.el9"),
            ("openssl-libs.x86_64", "1:3.0.7-27.el9"),
            ("openssl-libs.i686", "1:3.0.7-25.el9"),
        ]);
        assert!(!below(Some("x86_64")).holds(&multilib), "the x86_64 package is fixed");
        assert!(below(Some("i686")).holds(&multilib), "the i686 package is not");
        assert!(!below(Some("aarch64")).holds(&multilib), "no aarch64 package installed");

        let bad = Applicability {
            is_installable: Rule::RpmPackage(RpmPackageTest {
                name: "x".into(),
                version_below: Some("a:1.0-1".into()),
                ..Default::default()
            }),
            is_installed: Rule::RpmPackage(RpmPackageTest {
                name: "x".into(),
                version_at_least: Some("1.0 -1".into()),
                ..Default::default()
            }),
            prerequisites: vec![],
        };
        let problems = bad.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("isInstallable.rpmPackage.x: \"a:1.0-1\" is not an RPM version"),
            "{problems:?}"
        );
        for good in ["1.0", "1.0-1", "0:1.0-1.el9", "5:2.2.6-1.el9", "1.0~rc1^git2-1.fc40", "2.02-150.el9_0.1"] {
            assert_eq!(check_rpm_version(good), Ok(()), "{good}");
        }
        for bad in ["", ":1.0", "1.0-", "-1", "1.0-1-2", "1:2:3", "1.0 1", "1.0-1/2"] {
            assert!(check_rpm_version(bad).is_err(), "{bad}");
        }
    }

    /// Every `[epoch:]version-release` of the committed real RPM advisory data: the fixed
    /// versions of the AlmaLinux 9 OSV advisories and the package versions of the Fedora
    /// `updateinfo.xml` (read here directly, not through the importers).
    fn real_rpm_versions() -> Vec<(String, String)> {
        use std::io::Read;
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rpm");
        let mut out = Vec::new();
        let bytes = std::fs::read(data.join("almalinux9-osv.zip")).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        for i in 0..archive.len() {
            let mut text = String::new();
            archive.by_index(i).unwrap().read_to_string(&mut text).unwrap();
            let advisory: serde_json::Value = serde_json::from_str(&text).unwrap();
            for affected in advisory["affected"].as_array().unwrap() {
                for range in affected["ranges"].as_array().unwrap() {
                    for event in range["events"].as_array().unwrap() {
                        if let Some(fixed) = event["fixed"].as_str() {
                            out.push((affected["package"]["name"].as_str().unwrap().to_string(), fixed.to_string()));
                        }
                    }
                }
            }
        }
        let mut xml = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(data.join("fedora-core-updates-5-x86_64-updateinfo.xml.gz")).unwrap(),
        )
        .read_to_string(&mut xml)
        .unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        for p in doc.descendants().filter(|n| n.has_tag_name("package")) {
            let epoch = p.attribute("epoch").filter(|e| *e != "0");
            let vr = format!("{}-{}", p.attribute("version").unwrap(), p.attribute("release").unwrap());
            let evr = match epoch {
                Some(e) => format!("{e}:{vr}"),
                None => vr,
            };
            out.push((p.attribute("name").unwrap().to_string(), evr));
        }
        out
    }

    /// `rpm.vercmp` of the machine's rpm is the reference. Pairs: consecutive versions of
    /// each package (as the data lists them), consecutive versions across packages, each
    /// version against itself and against spellings with `~`, `^`, an epoch, a missing
    /// release, and hand-picked edge cases; thousands in one rpm run.
    #[test]
    fn rpm_version_order_matches_rpm_vercmp_on_real_versions() {
        let versions = real_rpm_versions();
        assert!(versions.len() > 20_000, "{}", versions.len());
        let mut by_package: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, v) in &versions {
            by_package.entry(name).or_default().push(v);
        }
        let mut pairs: Vec<(String, String)> = [
            ("1.0", "1.0-1"),
            ("1.0~rc1-1", "1.0-1"),
            ("1.0^git1-1", "1.0-1"),
            ("1.0^git1-1", "1.0.1-1"),
            ("1.0^", "1.0"),
            ("1.0~", "1.0"),
            ("1.0~~", "1.0~"),
            ("1:0.9-1", "2.0-1"),
            ("0:1.0-1", "1.0-1"),
            ("1.0a-1", "1.0-1"),
            ("1.0.a-1", "1.0.1-1"),
            ("a1", "1a"),
            ("1..0", "1.0"),
            ("1.0.", "1.0"),
            ("1.001-1", "1.1-1"),
            ("1.0_1-1", "1.0.1-1"),
            ("1.0+git-1", "1.0-1"),
            ("10-1", "9-1"),
            ("2.02-150.el9_0.1", "2.02-150.el9"),
            ("5.14.0-427.13.1.el9_4", "5.14.0-427.el9"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        for list in by_package.values() {
            for w in list.windows(2) {
                pairs.push((w[0].to_string(), w[1].to_string()));
            }
        }
        let all: Vec<&str> = by_package.values().flatten().copied().collect();
        for (i, w) in all.windows(2).enumerate() {
            pairs.push((w[0].to_string(), w[1].to_string()));
            if i % 7 == 0 {
                let v = w[0];
                pairs.push((v.to_string(), v.to_string()));
                let vr = v.split_once(':').map_or(v, |(_, vr)| vr);
                pairs.push((v.to_string(), format!("{v}~rc1")));
                pairs.push((format!("{v}^20240101git"), v.to_string()));
                pairs.push((vr.to_string(), format!("1:{vr}")));
                pairs.push((vr.split_once('-').map_or(vr, |(ver, _)| ver).to_string(), vr.to_string()));
            }
        }
        pairs.sort();
        pairs.dedup();
        assert!(pairs.len() > 5_000, "{}", pairs.len());

        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("pairs.lua");
        let mut lua = String::from("local p = {\n");
        for (a, b) in &pairs {
            assert!(!a.contains(['"', '\\']) && !b.contains(['"', '\\']));
            lua.push_str(&format!("{{\"{a}\", \"{b}\"}},\n"));
        }
        lua.push_str("}\nfor _, x in ipairs(p) do io.write(rpm.vercmp(x[1], x[2]), \"\\n\") end\n");
        std::fs::write(&script, lua).unwrap();
        let out = std::process::Command::new("rpm")
            .arg("--eval")
            .arg(format!("%{{lua: dofile(\"{}\")}}", script.display()))
            .output()
            .expect("rpm is the reference for RPM version order; run scripts/ensure-rpm-tools");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let answers: Vec<i32> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(answers.len(), pairs.len());
        let mut disagree = Vec::new();
        for ((a, b), want) in pairs.iter().zip(answers) {
            let want = want.cmp(&0);
            if compare_rpm(a, b) != want {
                disagree.push(format!("{a} vs {b}: rpm {want:?}, ours {:?}", compare_rpm(a, b)));
            }
        }
        assert!(
            disagree.is_empty(),
            "{} of {} pairs disagree: {:?}",
            disagree.len(),
            pairs.len(),
            &disagree[..disagree.len().min(20)]
        );
        println!("{} real RPM version pairs: rpm.vercmp agrees on every one", pairs.len());
    }

    #[test]
    fn c1_a_fact_test_needs_exactly_one_comparison() {
        let a = Applicability {
            is_installable: Rule::Fact(FactTest { name: "os".into(), ..Default::default() }),
            is_installed: Rule::Always(false),
            prerequisites: vec![],
        };
        assert_eq!(a.problems().len(), 1);
        assert!(a.problems()[0].starts_with("isInstallable.fact"));
    }
}
