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

/// What a client knows about itself: flat facts, the updates it has installed, and its
/// installed packages with their versions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    pub values: BTreeMap<String, String>,
    /// Installed update ids and KB numbers, upper-cased.
    pub installed: HashSet<String>,
    /// Installed packages: name → version.
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
