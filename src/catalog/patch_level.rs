//! A simulated patch level, for simulated clients and the facts-document agent: which
//! updates a machine patched through a date has installed, and what installing an update
//! does to the versions of the packages it names.

use std::collections::HashMap;

use super::{Catalog, Facts};

/// A simulated patch level: every update for the machine's `os` fact released on or
/// before `through` counts as installed.
pub fn mark_patched(facts: &mut Facts, catalog: &Catalog, through: jiff::civil::Date) {
    let os = facts.values.get("os").cloned();
    for u in &catalog.updates {
        if u.released <= through && u.products.iter().any(|p| Some(p) == os.as_ref()) {
            facts.installed.insert(u.id.to_ascii_uppercase());
            if let Some(kb) = &u.kb {
                facts.installed.insert(kb.to_ascii_uppercase());
            }
            install_packages(&mut facts.packages, u);
        }
    }
}

/// A simulated package manager: the installed packages an update's package rules name
/// (the `package`/`rpmPackage` tests with an upper bound) are raised to the versions
/// that fix them. Packages that are not installed stay so.
pub fn install_packages(packages: &mut HashMap<String, String>, update: &crate::catalog::Update) {
    use crate::catalog::Rule;
    use crate::catalog::applicability::{compare_debian, compare_rpm};
    fn walk(rule: &Rule, packages: &mut HashMap<String, String>) {
        match rule {
            Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| walk(r, packages)),
            Rule::Not(r) => walk(r, packages),
            Rule::Package(t) => {
                if let (Some(fixed), Some(have)) = (&t.version_below, packages.get_mut(&t.name))
                    && compare_debian(have, fixed).is_lt()
                {
                    fixed.clone_into(have);
                }
            }
            Rule::RpmPackage(t) => {
                let key = match &t.arch {
                    Some(arch) => format!("{}.{arch}", t.name),
                    None => t.name.clone(),
                };
                if let (Some(fixed), Some(have)) = (&t.version_below, packages.get_mut(&key))
                    && compare_rpm(have, fixed).is_lt()
                {
                    fixed.clone_into(have);
                }
            }
            Rule::Installed(_) | Rule::Fact(_) | Rule::Always(_) => {}
        }
    }
    if !packages.is_empty() {
        walk(&update.applicability.is_installable, packages);
    }
}
