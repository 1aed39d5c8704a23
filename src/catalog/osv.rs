//! OSV advisories (<https://ossf.github.io/osv-schema/>) for the Debian and Ubuntu
//! ecosystems (Debian version order, source packages) and the RPM ecosystems AlmaLinux,
//! Rocky Linux, openSUSE and SUSE (RPM version order, binary packages), as osv.dev and
//! the distributions serve them, turned into catalog updates: one update per advisory and
//! ecosystem, applicable while an installed package is older than the fix.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::applicability::{check_rpm_version, compare_debian, compare_rpm};
use super::{Applicability, PackageTest, RpmPackageTest, Rule, Severity, Update};
use crate::Error;

/// Options of the OSV importer.
#[derive(Clone, Debug, Default)]
pub struct OsvOptions {
    /// Keep only these ecosystems by prefix (e.g. `["Debian:12", "AlmaLinux:9"]`);
    /// empty: every supported ecosystem. A prefix matches whole `:`-separated parts:
    /// `Ubuntu:24.04` keeps `Ubuntu:24.04:LTS`, `Debian:1` keeps nothing of `Debian:12`.
    /// Ecosystems other than Debian, Ubuntu, AlmaLinux, Rocky Linux, openSUSE and SUSE
    /// are never imported (they are reported, see [`Skipped`]).
    pub ecosystems: Vec<String>,
}

/// OSV advisories → updates. `bytes` is one advisory (JSON object), a JSON array of
/// advisories, or a zip archive of `*.json` advisories (as osv.dev serves per ecosystem).
///
/// Mapping, one update per (advisory, supported ecosystem), sorted by id:
/// - Affected entries of unsupported ecosystems are skipped and reported per ecosystem
///   with counts (a warning; an error when nothing at all is left to import, see
///   [`parse_with_report`]); entries of ecosystems `options` filters out are skipped and
///   counted (`tracing::debug!`); so is an advisory left with none.
/// - id `<osv id>-<ecosystem slug>` (`DSA-5380-1-debian-12`, `USN-6986-1-ubuntu-24.04-lts`,
///   `ALSA-2024:1234-almalinux-9`), kb the OSV id, title `summary`, else the first line of
///   `details`, else the id; products the ecosystem's pretty name (`Debian 12`,
///   `Ubuntu 24.04 LTS`, `AlmaLinux 9`); released the UTC date of `published` (else
///   `modified`); expired when `withdrawn` is present; CVEs the `CVE-` ids among the id,
///   `aliases`, `upstream` and `related`; reboot required for kernel, microcode, C library
///   and systemd packages.
/// - Classification "Security Updates", except for RPM advisories whose id names another
///   type (`ALBA`/`RLBA` bug fixes: "Updates"; `ALEA`/`RLEA`, SUSE `-FU-`: "Feature Packs").
/// - Severity: the distribution's own rating first (for Red Hat rebuilds, the word that
///   starts the summary: `Important: openssl security update`), else the CVSS v3 base
///   score (see `Ratings`).
/// - Applicability: Debian and Ubuntu name SOURCE packages (clients report `src:<name>`,
///   Debian version order); the RPM ecosystems name BINARY packages (RPM version order,
///   any architecture). Installable when installed below the `fixed` event of the
///   ECOSYSTEM range, installed at or above it. Several packages: installable when any is
///   below its fix, installed when some is installed and none is below. A package without
///   a fixed version (introduced only: "not fixed yet"; `last_affected`; no ECOSYSTEM
///   range) is skipped and counted; an update needs one.
/// - Supersedence across everything parsed together (see `link_supersedence`).
///
/// Errors name the file (`archive.zip!/DSA-5380-1.json` inside a zip), the line and column
/// of a JSON syntax error, or the field of a schema problem (`affected[0].ranges[0]: …`,
/// prefixed `[i].` inside an array).
pub fn parse(source: &str, bytes: &[u8], options: &OsvOptions) -> crate::Result<Vec<Update>> {
    parse_with_report(source, bytes, options).map(|(updates, _)| updates)
}

/// [`parse`], with what was skipped for being of an unsupported ecosystem. Each such
/// ecosystem is logged at warn; when advisories were read but none is of a supported
/// ecosystem, that is an error naming the ecosystems with their counts (a catalog of a
/// format patchops does not read must not import as empty).
pub fn parse_with_report(source: &str, bytes: &[u8], options: &OsvOptions) -> crate::Result<(Vec<Update>, Skipped)> {
    check_options(source, options)?;
    let mut importer = Importer::new(options);
    importer.add(source, bytes)?;
    importer.finish(source)
}

/// Every `*.json` file of a directory (sorted by name), as one catalog.
pub fn parse_dir(dir: &Path, options: &OsvOptions) -> crate::Result<Vec<Update>> {
    check_options(&dir.display().to_string(), options)?;
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut importer = Importer::new(options);
    for path in &files {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.clone(), source })?;
        importer.add(&path.display().to_string(), &bytes)?;
    }
    importer.finish(&dir.display().to_string()).map(|(updates, _)| updates)
}

/// A filter that can never match (a misspelt ecosystem) would import nothing, silently.
fn check_options(source: &str, options: &OsvOptions) -> crate::Result<()> {
    match options.ecosystems.iter().find(|e| Family::of(e).is_none()) {
        Some(e) => Err(catalog_error(
            source,
            format!("ecosystem filter {e:?} is not a supported ecosystem; OSV spells them like {}", SUPPORTED_EXAMPLES),
        )),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// The OSV schema, as far as this importer reads it (unknown fields are ignored: OSV is
// extensible, and osv.dev adds fields over time).

#[derive(Deserialize)]
struct Advisory {
    id: String,
    #[serde(default)]
    modified: Option<String>,
    #[serde(default)]
    published: Option<String>,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    aliases: Option<Vec<String>>,
    #[serde(default)]
    upstream: Option<Vec<String>>,
    #[serde(default)]
    related: Option<Vec<String>>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    severity: Option<Vec<SeverityScore>>,
    #[serde(default)]
    affected: Option<Vec<Affected>>,
    #[serde(default)]
    database_specific: Option<Specific>,
}

#[derive(Deserialize)]
struct SeverityScore {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

/// `database_specific` / `ecosystem_specific`: only the rating fields matter here.
#[derive(Deserialize, Default)]
struct Specific {
    #[serde(default)]
    severity: Option<serde_json::Value>,
    #[serde(default)]
    urgency: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Affected {
    #[serde(default)]
    package: Option<Package>,
    #[serde(default)]
    severity: Option<Vec<SeverityScore>>,
    #[serde(default)]
    ranges: Option<Vec<Range>>,
    #[serde(default)]
    ecosystem_specific: Option<Specific>,
    #[serde(default)]
    database_specific: Option<Specific>,
}

#[derive(Deserialize)]
struct Package {
    #[serde(default)]
    ecosystem: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Range {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Option<Vec<Event>>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    introduced: Option<String>,
    #[serde(default)]
    fixed: Option<String>,
    #[serde(default)]
    last_affected: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Import.

/// The versions of one source package that an advisory says are affected.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Interval {
    /// `None`: from the first version (`introduced: "0"`).
    introduced: Option<String>,
    fixed: String,
}

/// One source package an update fixes.
#[derive(Debug)]
struct Fix {
    name: String,
    /// The highest fixed version: what the update installs.
    fixed: String,
    intervals: Vec<Interval>,
}

/// An update under construction, with what supersedence needs.
struct Draft {
    update: Update,
    source: String,
    ecosystem: String,
    family: Family,
    withdrawn: bool,
    /// Sorted by name, one per name.
    fixes: Vec<Fix>,
}

/// Affected entries of ecosystems this importer does not read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Ecosystem (as the advisories spell it; `(none)` when missing) → (advisories that
    /// name it, affected entries).
    pub ecosystems: BTreeMap<String, (usize, usize)>,
}

impl Skipped {
    /// `Ubuntu:Pro:18.04:LTS (12 advisories, 30 packages), PyPI (1 advisory, 1 package)`.
    pub fn describe(&self) -> String {
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        self.ecosystems
            .iter()
            .map(|(e, (a, p))| {
                format!("{e} ({}, {})", plural(*a, "advisory", "advisories"), plural(*p, "package", "packages"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How OSV spells the supported ecosystems, for messages.
const SUPPORTED_EXAMPLES: &str =
    "Debian:12, Ubuntu:24.04:LTS, AlmaLinux:9, Rocky Linux:9, openSUSE:Leap 15.5, SUSE:Linux Enterprise Server 15 SP5";

/// The packaging family of an ecosystem: what its package names mean and how its
/// versions compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// Debian, Ubuntu: source packages, Debian version order.
    Deb,
    /// AlmaLinux, Rocky Linux, openSUSE, SUSE: binary packages, RPM version order.
    Rpm,
}

impl Family {
    fn of(ecosystem: &str) -> Option<Family> {
        if has_prefix(ecosystem, "Debian") || has_prefix(ecosystem, "Ubuntu") {
            Some(Family::Deb)
        } else if ["AlmaLinux", "Rocky Linux", "openSUSE", "SUSE"].iter().any(|p| has_prefix(ecosystem, p)) {
            Some(Family::Rpm)
        } else {
            None
        }
    }

    fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Family::Deb => compare_debian(a, b),
            Family::Rpm => compare_rpm(a, b),
        }
    }

    fn check(self, version: &str) -> Result<(), String> {
        match self {
            Family::Deb => version
                .parse::<debversion::Version>()
                .map(|_| ())
                .map_err(|e| format!("{version:?} is not a Debian version ({e})")),
            Family::Rpm => check_rpm_version(version).map_err(|e| format!("{version:?} is not an RPM version ({e})")),
        }
    }
}

#[derive(Default)]
struct Stats {
    advisories: usize,
    skipped: Skipped,
    /// Affected entries of supported ecosystems (filtered out or not).
    supported_entries: usize,
    filtered_ecosystems: usize,
    unfixed_packages: usize,
    non_ecosystem_ranges: usize,
    without_fixed_package: usize,
    skipped_members: usize,
}

struct Importer<'a> {
    options: &'a OsvOptions,
    drafts: Vec<Draft>,
    by_id: HashMap<String, usize>,
    stats: Stats,
}

fn catalog_error(source: &str, message: impl Into<String>) -> Error {
    Error::Catalog { source_name: source.to_string(), message: message.into() }
}

impl<'a> Importer<'a> {
    fn new(options: &'a OsvOptions) -> Self {
        Importer { options, drafts: Vec::new(), by_id: HashMap::new(), stats: Stats::default() }
    }

    /// One file: a zip archive (by its magic number), a JSON array or a JSON object.
    fn add(&mut self, source: &str, bytes: &[u8]) -> crate::Result<()> {
        if bytes.starts_with(b"PK") {
            return self.add_zip(source, bytes);
        }
        let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        match text.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => {
                let advisories: Vec<Advisory> = from_json(source, text)?;
                for (i, advisory) in advisories.into_iter().enumerate() {
                    self.add_advisory(source, &format!("[{i}]."), advisory)?;
                }
                Ok(())
            }
            Some(_) => {
                let advisory: Advisory = from_json(source, text)?;
                self.add_advisory(source, "", advisory)
            }
            None => Err(catalog_error(
                source,
                "empty file; expected an OSV advisory (JSON object), a JSON array of them, or a zip archive of them",
            )),
        }
    }

    /// The `*.json` members of a zip archive, by name; other members are skipped.
    fn add_zip(&mut self, source: &str, bytes: &[u8]) -> crate::Result<()> {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| catalog_error(source, format!("not a readable zip archive ({e}); is it truncated?")))?;
        let mut members = Vec::with_capacity(archive.len());
        for i in 0..archive.len() {
            let name = match archive.name_for_index(i) {
                Some(Ok(name)) => name.into_owned(),
                Some(Err(e)) => return Err(catalog_error(source, format!("zip member #{i}: unreadable name ({e})"))),
                None => continue,
            };
            if name.ends_with('/') || !name.to_ascii_lowercase().ends_with(".json") {
                self.stats.skipped_members += 1;
                continue;
            }
            members.push((name, i));
        }
        members.sort();
        // A zip bomb stops at the cap, per member and for the members together.
        let limit = super::compression::Limits::from_env()?.zip;
        let mut total = 0u64;
        for (name, i) in members {
            let member = format!("{source}!/{name}");
            let mut buffer = Vec::new();
            archive
                .by_index(i)
                .and_then(|file| file.take(limit - total + 1).read_to_end(&mut buffer).map_err(Into::into))
                .map_err(|e| {
                    catalog_error(&member, format!("cannot read this zip member ({e}); is the archive truncated?"))
                })?;
            if total + buffer.len() as u64 > limit {
                return Err(catalog_error(
                    &member,
                    format!(
                        "the zip archive decompresses to more than it may: it is larger than the {} MiB limit; \
                         if the archive is genuine, raise the limit with {}",
                        limit >> 20,
                        super::compression::LIMIT_ENV
                    ),
                ));
            }
            total += buffer.len() as u64;
            if buffer.starts_with(b"PK") {
                return Err(catalog_error(&member, "a zip archive inside a zip archive is not supported"));
            }
            self.add(&member, &buffer)?;
        }
        Ok(())
    }

    fn add_advisory(&mut self, source: &str, at: &str, advisory: Advisory) -> crate::Result<()> {
        self.stats.advisories += 1;
        let problem = |field: &str, message: &str| {
            catalog_error(source, format!("{at}{field}: {message} (advisory {:?})", advisory.id))
        };
        if advisory.id.trim().is_empty() {
            return Err(problem("id", "empty"));
        }
        // Group the affected entries of the kept ecosystems, in first-seen order.
        let mut ecosystems: Vec<(String, Vec<usize>)> = Vec::new();
        let affected = advisory.affected.as_deref().unwrap_or_default();
        let mut unsupported: BTreeSet<&str> = BTreeSet::new();
        for (i, entry) in affected.iter().enumerate() {
            let ecosystem = entry.package.as_ref().map(|p| p.ecosystem.as_str()).unwrap_or_default();
            if Family::of(ecosystem).is_none() {
                let name = if ecosystem.trim().is_empty() { "(none)" } else { ecosystem };
                self.stats.skipped.ecosystems.entry(name.to_string()).or_default().1 += 1;
                unsupported.insert(name);
                continue;
            }
            self.stats.supported_entries += 1;
            if !self.options.ecosystems.is_empty() && !self.options.ecosystems.iter().any(|p| has_prefix(ecosystem, p))
            {
                self.stats.filtered_ecosystems += 1;
                continue;
            }
            match ecosystems.iter_mut().find(|(e, _)| e == ecosystem) {
                Some((_, entries)) => entries.push(i),
                None => ecosystems.push((ecosystem.to_string(), vec![i])),
            }
        }
        for name in unsupported {
            self.stats.skipped.ecosystems.get_mut(name).expect("counted above").0 += 1;
        }
        if ecosystems.is_empty() {
            return Ok(());
        }

        let released = released(&advisory).map_err(|(field, message)| problem(field, &message))?;
        let title = title(&advisory);
        let cves = cves(&advisory);
        for (ecosystem, entries) in ecosystems {
            let family = Family::of(&ecosystem).expect("only supported ecosystems are grouped");
            let mut fixes: Vec<Fix> = Vec::new();
            let mut unfixed_packages: Vec<&str> = Vec::new();
            let mut ratings = Ratings::default();
            ratings.add_scores(advisory.severity.as_deref());
            ratings.add_specific(advisory.database_specific.as_ref());
            if family == Family::Rpm {
                ratings.add_summary(advisory.summary.as_deref());
            }
            for i in entries {
                let entry = &affected[i];
                ratings.add_scores(entry.severity.as_deref());
                ratings.add_specific(entry.ecosystem_specific.as_ref());
                ratings.add_specific(entry.database_specific.as_ref());
                let name = entry.package.as_ref().map(|p| p.name.trim()).unwrap_or_default();
                if name.is_empty() {
                    return Err(problem(&format!("affected[{i}].package.name"), "missing or empty"));
                }
                let mut intervals = Vec::new();
                let mut unfixed = false;
                for (j, range) in entry.ranges.as_deref().unwrap_or_default().iter().enumerate() {
                    if range.kind != "ECOSYSTEM" {
                        self.stats.non_ecosystem_ranges += 1;
                        continue;
                    }
                    let field = format!("affected[{i}].ranges[{j}]");
                    match range_intervals(range, family).map_err(|(f, m)| problem(&format!("{field}{f}"), &m))? {
                        Some(mut found) => intervals.append(&mut found),
                        None => unfixed = true,
                    }
                }
                if unfixed || intervals.is_empty() {
                    // No fixed version for this package (OSV's "not fixed yet", an open
                    // range, or no ECOSYSTEM range): nothing to install, nothing to test.
                    self.stats.unfixed_packages += 1;
                    tracing::trace!(advisory = %advisory.id, %ecosystem, package = name, "no fixed version; package skipped");
                    unfixed_packages.push(name);
                    continue;
                }
                match fixes.iter_mut().find(|f| f.name == name) {
                    Some(fix) => fix.intervals.append(&mut intervals),
                    None => fixes.push(Fix { name: name.to_string(), fixed: String::new(), intervals }),
                }
            }
            // A package some entry leaves unfixed stays unfixed whatever another entry says.
            fixes.retain(|f| !unfixed_packages.contains(&f.name.as_str()));
            if fixes.is_empty() {
                self.stats.without_fixed_package += 1;
                continue;
            }
            fixes.sort_by(|a, b| a.name.cmp(&b.name));
            for fix in &mut fixes {
                fix.intervals.sort();
                fix.intervals.dedup();
                fix.fixed =
                    fix.intervals.iter().map(|iv| &iv.fixed).max_by(|a, b| family.compare(a, b)).cloned().unwrap();
            }
            let id = format!("{}-{}", advisory.id, slug(&ecosystem));
            let update = Update {
                id: id.clone(),
                kb: Some(advisory.id.clone()),
                title: title.clone(),
                classification: classification(family, &advisory.id).into(),
                severity: ratings.severity(),
                products: vec![pretty(&ecosystem)],
                released,
                supersedes: vec![],
                expired: advisory.withdrawn.is_some(),
                reboot_required: fixes.iter().any(|f| match family {
                    Family::Deb => needs_reboot(&f.name),
                    Family::Rpm => super::rpm::needs_reboot(&f.name),
                }),
                max_run_time: crate::time::Duration::from_mins(10),
                cves: cves.clone(),
                applicability: applicability(&fixes, family),
                files: vec![],
            };
            if let Some(&first) = self.by_id.get(&id) {
                return Err(problem(
                    "id",
                    &format!("duplicate advisory for {ecosystem} (first in {})", self.drafts[first].source),
                ));
            }
            self.by_id.insert(id, self.drafts.len());
            self.drafts.push(Draft {
                update,
                source: source.to_string(),
                ecosystem,
                family,
                withdrawn: advisory.withdrawn.is_some(),
                fixes,
            });
        }
        Ok(())
    }

    fn finish(mut self, source: &str) -> crate::Result<(Vec<Update>, Skipped)> {
        let s = &self.stats;
        if !s.skipped.ecosystems.is_empty() {
            if s.supported_entries == 0 {
                return Err(catalog_error(
                    source,
                    format!(
                        "none of the {} advisories is for an ecosystem patchops imports; found {}. Supported: {}",
                        s.advisories,
                        s.skipped.describe(),
                        SUPPORTED_EXAMPLES
                    ),
                ));
            }
            for (ecosystem, (advisories, packages)) in &s.skipped.ecosystems {
                tracing::warn!(
                    source,
                    ecosystem,
                    advisories,
                    packages,
                    "OSV entries of an ecosystem patchops does not import were skipped"
                );
            }
        }
        self.link_supersedence();
        let s = &self.stats;
        tracing::debug!(
            source,
            advisories = s.advisories,
            updates = self.drafts.len(),
            unsupported_ecosystems = s.skipped.ecosystems.len(),
            filtered_ecosystems = s.filtered_ecosystems,
            unfixed_packages = s.unfixed_packages,
            advisories_without_fix = s.without_fixed_package,
            non_ecosystem_ranges = s.non_ecosystem_ranges,
            skipped_zip_members = s.skipped_members,
            "OSV advisories imported (skipped: affected entries of other or filtered ecosystems, packages without a fixed version)"
        );
        let skipped = std::mem::take(&mut self.stats.skipped);
        let mut updates: Vec<Update> = self.drafts.into_iter().map(|d| d.update).collect();
        for u in &mut updates {
            u.supersedes.sort();
        }
        updates.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((updates, skipped))
    }

    /// B supersedes A when both are for the same ecosystem, neither is withdrawn, B fixes
    /// every source package A fixes at a fixed version at least as high, and at least one
    /// higher. "Later" is judged by fixed versions, not by publication dates (CVE records
    /// carry the CVE's date, not the fix's). Only direct supersedence is recorded: B is
    /// not listed when it supersedes some C that supersedes A (C is), which keeps long
    /// chains (hundreds of kernel advisories) linear in size.
    fn link_supersedence(&mut self) {
        let drafts = &mut self.drafts;
        // Each (ecosystem, package) group, sorted by fixed version; ranks from the order.
        let mut groups: HashMap<(&str, &str), Vec<(u32, usize)>> = HashMap::new();
        for (d, draft) in drafts.iter().enumerate() {
            if draft.withdrawn {
                continue;
            }
            for (f, fix) in draft.fixes.iter().enumerate() {
                groups.entry((draft.ecosystem.as_str(), fix.name.as_str())).or_default().push((f as u32, d));
            }
        }
        let fixed = |&(f, d): &(u32, usize)| drafts[d].fixes[f as usize].fixed.as_str();
        let mut ranks: Vec<Vec<u32>> = drafts.iter().map(|d| vec![0; d.fixes.len()]).collect();
        for members in groups.values_mut() {
            // One ecosystem per group, so one family.
            let family = drafts[members[0].1].family;
            members.sort_by(|a, b| family.compare(fixed(a), fixed(b)));
            let mut rank = 0;
            for k in 0..members.len() {
                if k > 0 && family.compare(fixed(&members[k - 1]), fixed(&members[k])) != Ordering::Equal {
                    rank += 1;
                }
                let (f, d) = members[k];
                ranks[d][f as usize] = rank;
            }
        }
        // Per group, candidates in an order where anything B dominates comes before B:
        // (rank here, number of packages, sum of ranks).
        let key =
            |d: usize, rank: u32| (rank, drafts[d].fixes.len(), ranks[d].iter().map(|&r| r as u64).sum::<u64>(), d);
        let groups: HashMap<(&str, &str), Vec<(u32, usize)>> = groups
            .into_iter()
            .map(|(k, mut members)| {
                let mut members: Vec<(u32, usize)> =
                    members.drain(..).map(|(f, d)| (ranks[d][f as usize], d)).collect();
                members.sort_by_key(|&(rank, d)| key(d, rank));
                (k, members)
            })
            .collect();

        let mut links: Vec<(usize, usize)> = Vec::new(); // (newer, older)
        let mut kept: Vec<usize> = Vec::new();
        for a in 0..drafts.len() {
            let older = &drafts[a];
            if older.withdrawn {
                continue;
            }
            // Scan the smallest group among A's packages.
            let (p0, members) = (0..older.fixes.len())
                .map(|f| (f, &groups[&(older.ecosystem.as_str(), older.fixes[f].name.as_str())]))
                .min_by_key(|(_, m)| m.len())
                .unwrap();
            let rank_a = ranks[a][p0];
            let start = members.partition_point(|&(rank, _)| rank < rank_a);
            kept.clear();
            let mut stop_above: Option<u32> = None;
            for &(rank, b) in &members[start..] {
                if stop_above.is_some_and(|r| rank > r) {
                    break;
                }
                let dominates = |newer: usize, older: usize| {
                    dominates(&drafts[newer], &ranks[newer], &drafts[older], &ranks[older])
                };
                if b == a || !dominates(b, a) || kept.iter().any(|&c| dominates(b, c)) {
                    continue;
                }
                kept.push(b);
                // A newer advisory for A's single package alone is below everything
                // further up this group: none of those can be direct.
                if older.fixes.len() == 1 && drafts[b].fixes.len() == 1 && stop_above.is_none() {
                    stop_above = Some(rank);
                }
            }
            links.extend(kept.iter().map(|&b| (b, a)));
        }
        for (newer, older) in links {
            let id = drafts[older].update.id.clone();
            drafts[newer].update.supersedes.push(id);
        }
    }
}

/// `newer` fixes every package of `older` at a version at least as high, one higher.
/// `*_ranks`: for each fix (same index), the rank of its fixed version among the fixed
/// versions of that package in that ecosystem (Debian version order).
fn dominates(newer: &Draft, newer_ranks: &[u32], older: &Draft, older_ranks: &[u32]) -> bool {
    if newer.ecosystem != older.ecosystem || newer.fixes.len() < older.fixes.len() {
        return false;
    }
    let mut higher = false;
    for (fix, &rank) in older.fixes.iter().zip(older_ranks) {
        let Ok(k) = newer.fixes.binary_search_by(|f| f.name.as_str().cmp(&fix.name)) else { return false };
        match newer_ranks[k].cmp(&rank) {
            Ordering::Less => return false,
            Ordering::Greater => higher = true,
            Ordering::Equal => {}
        }
    }
    higher
}

/// Deserialize with the JSON path of a type error; serde_json gives line and column.
fn from_json<T: DeserializeOwned>(source: &str, text: &[u8]) -> crate::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            format!("not valid JSON: {inner}")
        } else if path.is_empty() || path == "." {
            format!("not an OSV advisory: {inner}")
        } else {
            format!("{path}: {inner}")
        };
        catalog_error(source, message)
    })?;
    de.end().map_err(|e| catalog_error(source, format!("not valid JSON: {e}")))?;
    Ok(value)
}

/// "Security Updates" for every Debian and Ubuntu advisory; for the RPM ecosystems the
/// type the advisory id names (`ALBA-…` bug fix: "Updates"), else "Security Updates".
fn classification(family: Family, id: &str) -> &'static str {
    match family {
        Family::Deb => "Security Updates",
        Family::Rpm => super::rpm::kind_from_id(id).and_then(super::rpm::classification).unwrap_or("Security Updates"),
    }
}

/// `prefix` is `ecosystem` or a leading run of its `:`-separated parts.
fn has_prefix(ecosystem: &str, prefix: &str) -> bool {
    ecosystem.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
}

/// `Debian:12` → `Debian 12`, `Ubuntu:24.04:LTS` → `Ubuntu 24.04 LTS`.
fn pretty(ecosystem: &str) -> String {
    ecosystem.split(':').filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" ")
}

/// `Debian:12` → `debian-12`, `Ubuntu:24.04:LTS` → `ubuntu-24.04-lts`.
fn slug(ecosystem: &str) -> String {
    let mut out = String::with_capacity(ecosystem.len());
    for c in ecosystem.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Kernels (Debian's `linux`, `linux-signed-*`; Ubuntu's flavours `linux-aws`,
/// `linux-hwe-*`…), CPU microcode, the C library and systemd take effect only after a
/// restart (the same sources as the `debian-dsa` importer, plus Ubuntu's kernel flavours).
fn needs_reboot(source_package: &str) -> bool {
    let userland_linux = ["linux-base", "linux-atm", "linux-tools", "linux-ftpsync", "linux-apfs-rw"];
    source_package == "linux"
        || (source_package.starts_with("linux-") && !userland_linux.contains(&source_package))
        || source_package.starts_with("kernel-image-")
        || source_package.ends_with("-microcode")
        || matches!(source_package, "glibc" | "eglibc" | "systemd")
}

fn title(advisory: &Advisory) -> String {
    let summary = advisory.summary.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let first_line = || advisory.details.as_deref().and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()));
    summary.or_else(first_line).unwrap_or(&advisory.id).to_string()
}

/// CVE ids among the id, `aliases`, `upstream` and `related` (Debian and Ubuntu records
/// list the CVEs an advisory fixes in `upstream`, older ones in `related`).
fn cves(advisory: &Advisory) -> Vec<String> {
    let lists = [&advisory.aliases, &advisory.upstream, &advisory.related];
    let ids = std::iter::once(&advisory.id).chain(lists.into_iter().flatten().flatten());
    ids.filter(|s| s.starts_with("CVE-")).cloned().collect::<BTreeSet<_>>().into_iter().collect()
}

/// `published`, else `modified`, as a UTC date.
fn released(advisory: &Advisory) -> Result<jiff::civil::Date, (&'static str, String)> {
    let (field, text) = match (&advisory.published, &advisory.modified) {
        (Some(p), _) => ("published", p),
        (None, Some(m)) => ("modified", m),
        (None, None) => return Err(("published", "missing (and no modified either)".into())),
    };
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts.to_zoned(jiff::tz::TimeZone::UTC).date());
    }
    // Tolerate timestamps without an offset, and bare dates.
    text.get(..10)
        .and_then(|d| d.parse::<jiff::civil::Date>().ok())
        .ok_or_else(|| (field, format!("{text:?} is not an RFC 3339 timestamp")))
}

/// The affected intervals of one ECOSYSTEM range (OSV's evaluation: events in version
/// order; `introduced` opens, `fixed` closes). `Ok(None)`: some interval has no fixed
/// version (introduced only: "not fixed yet"; or `last_affected`), so the package has
/// no version that fixes it. `Err((field suffix, message))`: a schema problem.
fn range_intervals(range: &Range, family: Family) -> Result<Option<Vec<Interval>>, (String, String)> {
    let events = range.events.as_deref().unwrap_or_default();
    if events.is_empty() {
        return Err((String::new(), "ECOSYSTEM range without events (it needs an introduced event)".into()));
    }
    let mut sorted: Vec<(&str, &str)> = Vec::with_capacity(events.len());
    for (k, event) in events.iter().enumerate() {
        let given = [
            ("introduced", &event.introduced),
            ("fixed", &event.fixed),
            ("last_affected", &event.last_affected),
            ("limit", &event.limit),
        ];
        let mut found = given.iter().filter_map(|(kind, v)| v.as_deref().map(|v| (*kind, v)));
        let (Some((kind, version)), None) = (found.next(), found.next()) else {
            return Err((
                format!(".events[{k}]"),
                "an event has exactly one of introduced, fixed, last_affected, limit".into(),
            ));
        };
        if !(kind == "introduced" && version == "0")
            && let Err(message) = family.check(version)
        {
            return Err((format!(".events[{k}].{kind}"), message));
        }
        sorted.push((kind, version));
    }
    if !sorted.iter().any(|(kind, _)| *kind == "introduced") {
        return Err((String::new(), "ECOSYSTEM range without an introduced event".into()));
    }
    let version_order = |a: &str, b: &str| match (a, b) {
        ("0", "0") => Ordering::Equal,
        ("0", _) => Ordering::Less,
        (_, "0") => Ordering::Greater,
        _ => family.compare(a, b),
    };
    sorted.sort_by(|a, b| version_order(a.1, b.1));
    let mut intervals = Vec::new();
    let mut open: Option<&str> = None;
    for (kind, version) in sorted {
        match kind {
            "introduced" => {
                open.get_or_insert(version);
            }
            "fixed" => {
                if let Some(introduced) = open.take() {
                    let introduced = (introduced != "0").then(|| introduced.to_string());
                    intervals.push(Interval { introduced, fixed: version.to_string() });
                }
            }
            "last_affected" if open.is_some() => return Ok(None),
            _ => {}
        }
    }
    Ok(if open.is_some() { None } else { Some(intervals) })
}

/// Installable when some package is installed at an affected version; installed when
/// some package is installed and none is at an affected version. The usual case (one
/// package, affected below the fix) is exactly `src:<pkg>` below / at least the fix.
fn applicability(fixes: &[Fix], family: Family) -> Applicability {
    let test = |fix: &Fix, below: Option<&String>, at_least: Option<&String>| match family {
        Family::Deb => Rule::Package(PackageTest {
            name: format!("src:{}", fix.name),
            version_below: below.cloned(),
            version_at_least: at_least.cloned(),
        }),
        Family::Rpm => Rule::RpmPackage(RpmPackageTest {
            name: fix.name.clone(),
            arch: None,
            version_below: below.cloned(),
            version_at_least: at_least.cloned(),
        }),
    };
    let affected = |fix: &Fix| {
        let mut tests: Vec<Rule> =
            fix.intervals.iter().map(|iv| test(fix, Some(&iv.fixed), iv.introduced.as_ref())).collect();
        if tests.len() == 1 { tests.pop().unwrap() } else { Rule::Any(tests) }
    };
    let present = |fix: &Fix| test(fix, None, None);
    match fixes {
        [fix] => {
            let is_installed = match fix.intervals.as_slice() {
                [Interval { introduced: None, fixed }] => test(fix, None, Some(fixed)),
                _ => Rule::All(vec![present(fix), Rule::Not(Box::new(affected(fix)))]),
            };
            Applicability { is_installable: affected(fix), is_installed, prerequisites: vec![] }
        }
        _ => {
            let any_affected = Rule::Any(fixes.iter().map(affected).collect());
            Applicability {
                is_installed: Rule::All(vec![
                    Rule::Any(fixes.iter().map(present).collect()),
                    Rule::Not(Box::new(any_affected.clone())),
                ]),
                is_installable: any_affected,
                prerequisites: vec![],
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Severity.

/// The severity of one (advisory, ecosystem), from the best source available:
/// 1. the distribution's own rating, the analogue of the MSRC rating: Ubuntu's priority
///    (`severity[]` of type `Ubuntu`), Debian's urgency (`ecosystem_specific.urgency`),
///    or `database_specific.severity` (top level or per affected entry);
/// 2. otherwise the highest CVSS v3 base score computed from `severity[]` vectors
///    (Critical ≥ 9, Important ≥ 7, Moderate ≥ 4, Low > 0);
/// 3. otherwise Unspecified (the usual case for Debian DSA/DLA records).
///
/// Within a source the maximum wins (an advisory fixing several CVEs rates as the worst).
/// CVSS v2 and v4 vectors are not scored.
#[derive(Default)]
struct Ratings {
    vendor: Option<Severity>,
    cvss: Option<Severity>,
}

impl Ratings {
    fn add_scores(&mut self, scores: Option<&[SeverityScore]>) {
        for s in scores.unwrap_or_default() {
            match s.kind.as_str() {
                "CVSS_V3" => {
                    if let Some(score) = cvss3_base_score(&s.score).or_else(|| s.score.trim().parse().ok()) {
                        self.cvss = self.cvss.max(Some(from_score(score)));
                    }
                }
                "CVSS_V2" | "CVSS_V4" => {}
                _ => self.vendor = self.vendor.max(from_word(&s.score)),
            }
        }
    }

    fn add_specific(&mut self, specific: Option<&Specific>) {
        let Some(specific) = specific else { return };
        for value in [&specific.severity, &specific.urgency].into_iter().flatten() {
            if let Some(word) = value.as_str() {
                self.vendor = self.vendor.max(from_word(word));
            }
        }
    }

    /// Red Hat and its rebuilds start the summary with the rating: `Important: openssl
    /// security update`.
    fn add_summary(&mut self, summary: Option<&str>) {
        if let Some((word, _)) = summary.and_then(|s| s.split_once(':'))
            && matches!(word.trim(), "Critical" | "Important" | "Moderate" | "Low")
        {
            self.vendor = self.vendor.max(from_word(word));
        }
    }

    fn severity(&self) -> Severity {
        self.vendor.or(self.cvss).unwrap_or(Severity::Unspecified)
    }
}

/// Ubuntu priorities, Debian urgencies, GitHub-style ratings. Unknown words (Debian's
/// "not yet assigned", "end-of-life") give nothing.
fn from_word(word: &str) -> Option<Severity> {
    let word = word.trim().trim_end_matches(['*', '!']).to_ascii_lowercase();
    match word.as_str() {
        "critical" => Some(Severity::Critical),
        "high" | "important" => Some(Severity::Important),
        "medium" | "moderate" => Some(Severity::Moderate),
        "low" | "negligible" | "unimportant" => Some(Severity::Low),
        _ => None,
    }
}

fn from_score(score: f64) -> Severity {
    match score {
        s if s >= 9.0 => Severity::Critical,
        s if s >= 7.0 => Severity::Important,
        s if s >= 4.0 => Severity::Moderate,
        s if s > 0.0 => Severity::Low,
        _ => Severity::Unspecified,
    }
}

/// The CVSS v3.0/v3.1 base score of a vector (`CVSS:3.1/AV:N/AC:L/…`), by the
/// specification's formulas and round-up (v3.1's, which v3.0 values agree with).
fn cvss3_base_score(vector: &str) -> Option<f64> {
    let mut parts = vector.trim().split('/');
    if !matches!(parts.next()?, "CVSS:3.0" | "CVSS:3.1") {
        return None;
    }
    let mut metric: HashMap<&str, &str> = HashMap::new();
    for part in parts {
        let (k, v) = part.split_once(':')?;
        metric.insert(k, v);
    }
    let scope_changed = match *metric.get("S")? {
        "U" => false,
        "C" => true,
        _ => return None,
    };
    let av = match *metric.get("AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        _ => return None,
    };
    let ac = match *metric.get("AC")? {
        "L" => 0.77,
        "H" => 0.44,
        _ => return None,
    };
    let pr = match (*metric.get("PR")?, scope_changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        _ => return None,
    };
    let ui = match *metric.get("UI")? {
        "N" => 0.85,
        "R" => 0.62,
        _ => return None,
    };
    let cia = |k: &str| match *metric.get(k)? {
        "H" => Some(0.56),
        "L" => Some(0.22),
        "N" => Some(0.0),
        _ => None,
    };
    let iss = 1.0 - (1.0 - cia("C")?) * (1.0 - cia("I")?) * (1.0 - cia("A")?);
    let impact = if scope_changed { 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02f64).powi(15) } else { 6.42 * iss };
    if impact <= 0.0 {
        return Some(0.0);
    }
    let exploitability = 8.22 * av * ac * pr * ui;
    let raw =
        if scope_changed { (1.08 * (impact + exploitability)).min(10.0) } else { (impact + exploitability).min(10.0) };
    let int_input = (raw * 100_000.0).round() as i64;
    Some(if int_input % 10_000 == 0 { int_input as f64 / 100_000.0 } else { ((int_input / 10_000) + 1) as f64 / 10.0 })
}

#[cfg(test)]
mod test {
    //! The fixtures under `tests/data/osv/` and the advisories built here are hand-written
    //! in the OSV schema's shape (no network: nothing is downloaded from osv.dev).

    use std::io::Write;
    use std::path::PathBuf;

    use serde_json::{Value, json};

    use super::*;
    use crate::catalog::{Catalog, Facts, ScanVerdict};

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv")
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(fixtures().join(name)).unwrap()
    }

    fn all() -> OsvOptions {
        OsvOptions::default()
    }

    fn ids(updates: &[Update]) -> Vec<&str> {
        updates.iter().map(|u| u.id.as_str()).collect()
    }

    fn by_id<'a>(updates: &'a [Update], id: &str) -> &'a Update {
        updates.iter().find(|u| u.id == id).unwrap_or_else(|| panic!("no update {id} in {:?}", ids(updates)))
    }

    fn failure(err: Error) -> (String, String) {
        match err {
            Error::Catalog { source_name, message } => (source_name, message),
            other => panic!("expected a catalog error, got {other:?}"),
        }
    }

    /// A minimal advisory: one affected entry per (ecosystem, package, fixed version).
    fn advisory(id: &str, published: &str, affected: &[(&str, &str, &str)]) -> Value {
        let affected: Vec<Value> = affected
            .iter()
            .map(|(ecosystem, name, fixed)| {
                json!({
                    "package": {"ecosystem": ecosystem, "name": name},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
                })
            })
            .collect();
        json!({"id": id, "modified": published, "published": published, "summary": format!("{id} summary"), "affected": affected})
    }

    fn parse_values(values: &[Value]) -> crate::Result<Vec<Update>> {
        parse("test.json", serde_json::to_string(values).unwrap().as_bytes(), &all())
    }

    fn package(name: &str, below: Option<&str>, at_least: Option<&str>) -> Rule {
        Rule::Package(PackageTest {
            name: name.into(),
            version_below: below.map(Into::into),
            version_at_least: at_least.map(Into::into),
        })
    }

    fn zip(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in members {
            if name.ends_with('/') {
                writer.add_directory(name.trim_end_matches('/'), options).unwrap();
            } else {
                writer.start_file(*name, options).unwrap();
                writer.write_all(bytes).unwrap();
            }
        }
        writer.finish().unwrap().into_inner()
    }

    const FIXTURES: [&str; 6] = [
        "DEBIAN-CVE-2024-0727.json",
        "DLA-3530-1.json",
        "DSA-5532-1.json",
        "DSA-5764-1.json",
        "USN-6986-1.json",
        "USN-7022-1.json",
    ];

    /// The updates of the fixture directory. DEBIAN-CVE-2024-0727 has no fix for Debian 11:
    /// no update there.
    const FIXTURE_IDS: [&str; 8] = [
        "DEBIAN-CVE-2024-0727-debian-12",
        "DEBIAN-CVE-2024-0727-debian-13",
        "DLA-3530-1-debian-11",
        "DSA-5532-1-debian-12",
        "DSA-5764-1-debian-12",
        "USN-6986-1-ubuntu-22.04-lts",
        "USN-6986-1-ubuntu-24.04-lts",
        "USN-7022-1-ubuntu-24.04-lts",
    ];

    fn fixture_ids() -> Vec<&'static str> {
        FIXTURE_IDS.to_vec()
    }

    #[test]
    fn one_advisory_becomes_one_update_per_ecosystem() {
        let updates = parse("USN-6986-1.json", &fixture("USN-6986-1.json"), &all()).unwrap();
        assert_eq!(ids(&updates), ["USN-6986-1-ubuntu-22.04-lts", "USN-6986-1-ubuntu-24.04-lts"]);
        let noble = &updates[1];
        assert_eq!(noble.kb.as_deref(), Some("USN-6986-1"));
        assert_eq!(noble.title, "openssl vulnerability");
        assert_eq!(noble.classification, "Security Updates");
        assert_eq!(noble.severity, Severity::Moderate, "Ubuntu priority medium");
        assert_eq!(noble.products, ["Ubuntu 24.04 LTS"]);
        assert_eq!(noble.released.to_string(), "2024-09-03");
        assert_eq!(noble.cves, ["CVE-2024-6119"]);
        assert!(noble.supersedes.is_empty() && !noble.expired && !noble.reboot_required && noble.files.is_empty());
        assert_eq!(
            noble.applicability,
            Applicability {
                is_installable: package("src:openssl", Some("3.0.13-0ubuntu3.4"), None),
                is_installed: package("src:openssl", None, Some("3.0.13-0ubuntu3.4")),
                prerequisites: vec![],
            }
        );
        assert!(noble.applicability.problems().is_empty());
        assert_eq!(updates[0].products, ["Ubuntu 22.04 LTS"]);

        let dsa = parse("DSA-5532-1.json", &fixture("DSA-5532-1.json"), &all()).unwrap();
        assert_eq!(ids(&dsa), ["DSA-5532-1-debian-12"]);
        assert_eq!(dsa[0].title, "openssl - security update");
        assert_eq!(dsa[0].severity, Severity::Unspecified, "DSA records carry no rating");
        assert_eq!(dsa[0].products, ["Debian 12"]);
        assert_eq!(dsa[0].cves, ["CVE-2023-4807", "CVE-2023-5363"]);

        // Without a summary the title is the first line of the details; the CVE record's
        // Debian 11 entry has no fixed version, so it gives no update.
        let cve = parse("x.json", &fixture("DEBIAN-CVE-2024-0727.json"), &all()).unwrap();
        assert_eq!(ids(&cve), ["DEBIAN-CVE-2024-0727-debian-12", "DEBIAN-CVE-2024-0727-debian-13"]);
        assert!(cve[0].title.starts_with("Issue summary: Processing a maliciously formatted PKCS12 file"));
        assert_eq!(cve[0].severity, Severity::Low, "Debian urgency low");
    }

    #[test]
    fn only_debian_and_ubuntu_ecosystems_are_kept_and_options_narrow_them() {
        let kernel = parse("USN-7022-1.json", &fixture("USN-7022-1.json"), &all()).unwrap();
        assert_eq!(ids(&kernel), ["USN-7022-1-ubuntu-24.04-lts"], "the `Linux` (GIT range) entry is skipped");
        let mixed = advisory(
            "OSV-2024-1",
            "2024-05-01T00:00:00Z",
            &[
                ("PyPI", "requests", "2.32.0"),
                ("Alpine:v3.19", "openssl", "3.1.5-r0"),
                ("Debian:12", "python-requests", "2.28.1+dfsg-1+deb12u1"),
            ],
        );
        assert_eq!(ids(&parse_values(&[mixed]).unwrap()), ["OSV-2024-1-debian-12"]);

        let mut all_files = Vec::new();
        for name in FIXTURES {
            let text: Value = serde_json::from_slice(&fixture(name)).unwrap();
            all_files.push(text);
        }
        let bytes = serde_json::to_vec(&all_files).unwrap();
        let only = |prefixes: &[&str]| {
            let options = OsvOptions { ecosystems: prefixes.iter().map(|s| s.to_string()).collect() };
            ids(&parse("all.json", &bytes, &options).unwrap()).into_iter().map(str::to_string).collect::<Vec<_>>()
        };
        assert_eq!(
            only(&["Debian:12"]),
            ["DEBIAN-CVE-2024-0727-debian-12", "DSA-5532-1-debian-12", "DSA-5764-1-debian-12"]
        );
        assert_eq!(only(&["Ubuntu:24.04"]), ["USN-6986-1-ubuntu-24.04-lts", "USN-7022-1-ubuntu-24.04-lts"]);
        assert_eq!(only(&["Debian:11", "Ubuntu:22.04:LTS"]), ["DLA-3530-1-debian-11", "USN-6986-1-ubuntu-22.04-lts"]);
        assert_eq!(only(&["Debian:1"]), Vec::<String>::new(), "prefixes match whole parts");
        assert_eq!(only(&["Ubuntu"]).len(), 3);
        assert_eq!(only(&[]), fixture_ids());
        let typo = OsvOptions { ecosystems: vec!["debian:12".into()] };
        let (_, message) = failure(parse("all.json", &bytes, &typo).unwrap_err());
        assert!(message.contains("\"debian:12\" is not a supported ecosystem"), "{message}");
    }

    fn almalinux_zip() -> Vec<u8> {
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rpm/almalinux9-osv.zip")).unwrap()
    }

    /// The whole AlmaLinux 9 OSV dump, checked against an independent reading of its JSON:
    /// one update per (advisory, AlmaLinux ecosystem), and for every 50th advisory the
    /// id, title, products, date, CVEs, severity word and each package's fixed version.
    #[test]
    fn all_almalinux_9_advisories_import_with_rpm_version_order() {
        let bytes = almalinux_zip();
        let (updates, skipped) = parse_with_report("almalinux9-osv.zip", &bytes, &all()).unwrap();
        assert!(skipped.ecosystems.is_empty(), "{skipped:?}");

        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut expected = 0;
        let mut advisories = 0;
        for i in 0..archive.len() {
            let mut text = String::new();
            archive.by_index(i).unwrap().read_to_string(&mut text).unwrap();
            let a: Value = serde_json::from_str(&text).unwrap();
            advisories += 1;
            let mut by_ecosystem: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for entry in a["affected"].as_array().unwrap() {
                let fixed = entry["ranges"][0]["events"].as_array().unwrap().iter().find_map(|e| e["fixed"].as_str());
                let eco = entry["package"]["ecosystem"].as_str().unwrap().to_string();
                let name = entry["package"]["name"].as_str().unwrap().to_string();
                let slot = by_ecosystem.entry(eco).or_default();
                if let Some(fixed) = fixed {
                    let keep = slot.get(&name).is_none_or(|old| compare_rpm(old, fixed).is_lt());
                    if keep {
                        slot.insert(name, fixed.to_string());
                    }
                }
            }
            expected += by_ecosystem.values().filter(|p| !p.is_empty()).count();
            if i % 50 != 0 {
                continue;
            }
            let id = a["id"].as_str().unwrap();
            for (eco, packages) in &by_ecosystem {
                let u = by_id(&updates, &format!("{id}-almalinux-{}", eco.strip_prefix("AlmaLinux:").unwrap()));
                assert_eq!(u.kb.as_deref(), Some(id));
                let summary = a["summary"].as_str().unwrap();
                assert_eq!(u.title, summary);
                assert_eq!(u.products, [eco.replace(':', " ")]);
                assert_eq!(u.released.to_string(), a["published"].as_str().unwrap()[..10]);
                let cves: Vec<&str> = a["related"].as_array().unwrap().iter().filter_map(|c| c.as_str()).collect();
                let mut cves: Vec<&str> = cves.into_iter().filter(|c| c.starts_with("CVE-")).collect();
                cves.sort();
                cves.dedup();
                assert_eq!(u.cves, cves, "{id}");
                let word = summary.split(':').next().unwrap();
                let severity = match word {
                    "Critical" => Severity::Critical,
                    "Important" => Severity::Important,
                    "Moderate" => Severity::Moderate,
                    "Low" => Severity::Low,
                    _ => Severity::Unspecified,
                };
                assert_eq!(u.severity, severity, "{id}");
                let class = if id.starts_with("ALSA") { "Security Updates" } else { "Updates" };
                assert_eq!(u.classification, class, "{id}");
                // Every package, at its fixed version: Missing just below it, Installed at it.
                for (name, fixed) in packages {
                    let at = Facts::from_packages(&[(name, fixed)]);
                    assert_eq!(u.applicability.evaluate(&at), ScanVerdict::Installed, "{id} {name} {fixed}");
                    let older = format!("{}~", fixed);
                    let below = Facts::from_packages(&[(name, &older)]);
                    assert_eq!(u.applicability.evaluate(&below), ScanVerdict::Missing, "{id} {name} {older}");
                }
            }
        }
        assert_eq!(advisories, 1783);
        assert_eq!(updates.len(), expected);
        println!("{advisories} AlmaLinux OSV advisories → {} updates", updates.len());

        // Spot checks against the files, read by hand.
        let mutt = by_id(&updates, "ALSA-2022:8219-almalinux-9");
        assert_eq!(mutt.severity, Severity::Moderate);
        assert_eq!(mutt.cves, ["CVE-2022-1328"]);
        assert_eq!(
            mutt.applicability.is_installable,
            Rule::RpmPackage(RpmPackageTest {
                name: "mutt".into(),
                version_below: Some("5:2.2.6-1.el9".into()),
                ..Default::default()
            })
        );
        let verdict = |v: &str| mutt.applicability.evaluate(&Facts::from_packages(&[("mutt", v)]));
        assert_eq!(verdict("5:2.2.5-3.el9"), ScanVerdict::Missing);
        assert_eq!(verdict("2.2.7-1.el9"), ScanVerdict::Missing, "no epoch is epoch 0, below epoch 5");
        assert_eq!(verdict("5:2.2.6-1.el9_1"), ScanVerdict::Installed);
        assert_eq!(verdict("5:2.2.10-1.el9"), ScanVerdict::Installed, "numeric, not text, order");
        let qatzip = by_id(&updates, "ALBA-2022:8256-almalinux-9");
        assert_eq!(qatzip.classification, "Updates");
        assert_eq!(qatzip.severity, Severity::Important);

        // Supersedence within a package stream: a later kernel fix supersedes an earlier one
        // of the same AlmaLinux release, never across releases.
        let catalog = Catalog::new(1, updates.clone(), &HashMap::new());
        let superseded = (0..catalog.len()).filter(|&i| catalog.is_superseded(i as u32)).count();
        assert!(superseded > 100, "{superseded}");
        for u in &updates {
            for old in &u.supersedes {
                let old = by_id(&updates, old);
                assert_eq!(old.products, u.products, "{} supersedes {}", u.id, old.id);
            }
        }
    }

    #[test]
    fn unsupported_ecosystems_are_reported_with_counts_and_alone_are_an_error() {
        let mixed = [
            advisory("PYSEC-1", "2024-05-01T00:00:00Z", &[("PyPI", "requests", "2.32.0")]),
            advisory(
                "OSV-2",
                "2024-05-01T00:00:00Z",
                &[
                    ("PyPI", "urllib3", "2.2.2"),
                    ("PyPI", "idna", "3.7"),
                    ("AlmaLinux:9", "python3-idna", "2.10-7.el9_4.1"),
                ],
            ),
            advisory("ALPINE-3", "2024-05-01T00:00:00Z", &[("Alpine:v3.19", "openssl", "3.1.5-r0")]),
        ];
        let bytes = serde_json::to_vec(&mixed).unwrap();
        let (updates, skipped) = parse_with_report("mixed.json", &bytes, &all()).unwrap();
        assert_eq!(ids(&updates), ["OSV-2-almalinux-9"]);
        assert_eq!(skipped.ecosystems.get("PyPI"), Some(&(2, 3)));
        assert_eq!(skipped.ecosystems.get("Alpine:v3.19"), Some(&(1, 1)));
        assert_eq!(skipped.describe(), "Alpine:v3.19 (1 advisory, 1 package), PyPI (2 advisories, 3 packages)");

        let only_other = serde_json::to_vec(&[mixed[0].clone(), mixed[2].clone()]).unwrap();
        let (source, message) = failure(parse("other.json", &only_other, &all()).unwrap_err());
        assert_eq!(source, "other.json");
        assert!(
            message.starts_with(
                "none of the 2 advisories is for an ecosystem patchops imports; found Alpine:v3.19 (1 advisory, 1 package), PyPI (1 advisory, 1 package)"
            ),
            "{message}"
        );
        // Filtering every supported ecosystem out is what the user asked for: no error.
        let none = OsvOptions { ecosystems: vec!["Debian:12".into()] };
        assert!(parse("mixed.json", &bytes, &none).unwrap().is_empty());
    }

    #[test]
    fn rpm_ecosystems_use_binary_packages_rpm_order_and_their_advisory_types() {
        let rocky =
            advisory("RLSA-2024:1", "2024-03-01T00:00:00Z", &[("Rocky Linux:9", "kernel", "5.14.0-362.24.1.el9_3")]);
        let suse = advisory(
            "SUSE-RU-2024:0001-1",
            "2024-03-01T00:00:00Z",
            &[("SUSE:Linux Enterprise Server 15 SP5", "zypper", "1.14.68-150400.3.40.1")],
        );
        let leap = advisory(
            "openSUSE-SU-2024:0002-1",
            "2024-03-02T00:00:00Z",
            &[("openSUSE:Leap 15.5", "curl", "8.0.1-150400.5.44.1")],
        );
        let mut later =
            advisory("RLSA-2024:2", "2024-04-01T00:00:00Z", &[("Rocky Linux:9", "kernel", "5.14.0-362.24.2.el9_3")]);
        later["summary"] = json!("Critical: kernel security update");
        let updates = parse_values(&[rocky, suse, leap, later]).unwrap();
        assert_eq!(
            ids(&updates),
            [
                "RLSA-2024:1-rocky-linux-9",
                "RLSA-2024:2-rocky-linux-9",
                "SUSE-RU-2024:0001-1-suse-linux-enterprise-server-15-sp5",
                "openSUSE-SU-2024:0002-1-opensuse-leap-15.5"
            ]
        );
        let kernel = &updates[0];
        assert!(kernel.reboot_required);
        assert_eq!(kernel.products, ["Rocky Linux 9"]);
        assert_eq!(
            kernel.applicability.is_installed,
            Rule::RpmPackage(RpmPackageTest {
                name: "kernel".into(),
                version_at_least: Some("5.14.0-362.24.1.el9_3".into()),
                ..Default::default()
            })
        );
        assert_eq!(updates[1].supersedes, ["RLSA-2024:1-rocky-linux-9"], "rpm order: 24.2 after 24.1");
        assert_eq!(updates[1].severity, Severity::Critical, "the summary's rating word");
        assert_eq!(updates[2].classification, "Updates");
        assert_eq!(updates[2].products, ["SUSE Linux Enterprise Server 15 SP5"]);
        assert_eq!(updates[3].classification, "Security Updates");

        let mut bad = advisory("RLSA-2024:3", "2024-03-01T00:00:00Z", &[("Rocky Linux:9", "x", "1.0-1")]);
        bad["affected"][0]["ranges"][0]["events"][1]["fixed"] = json!("1.0-1-2");
        let (_, message) = failure(parse_values(&[bad]).unwrap_err());
        assert!(
            message.starts_with("[0].affected[0].ranges[0].events[1].fixed: \"1.0-1-2\" is not an RPM version"),
            "{message}"
        );
    }

    #[test]
    fn an_array_of_advisories_is_one_catalog() {
        let text = format!(
            "[\n{},\n{}\n]",
            String::from_utf8(fixture("DSA-5764-1.json")).unwrap(),
            String::from_utf8(fixture("DSA-5532-1.json")).unwrap()
        );
        let updates = parse("openssl.json", text.as_bytes(), &all()).unwrap();
        assert_eq!(ids(&updates), ["DSA-5532-1-debian-12", "DSA-5764-1-debian-12"], "sorted by id");
        assert_eq!(updates[1].supersedes, ["DSA-5532-1-debian-12"], "supersedence across the array");
        assert_eq!(parse("empty.json", b" [ ] ", &all()).unwrap(), vec![]);
    }

    #[test]
    fn a_zip_archive_of_advisories_is_one_catalog() {
        let mut members: Vec<(&str, Vec<u8>)> = FIXTURES.iter().map(|name| (*name, fixture(name))).collect();
        members.push(("README.txt", b"not an advisory, skipped".to_vec()));
        members.push(("nested/", Vec::new()));
        members.push((
            "nested/DSA-1-1.JSON",
            serde_json::to_vec(&advisory(
                "DSA-1-1",
                "2020-01-01T00:00:00Z",
                &[("Debian:10", "zlib", "1:1.2.11.dfsg-1+deb10u1")],
            ))
            .unwrap(),
        ));
        let members: Vec<(&str, &[u8])> = members.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let updates = parse("Debian-all.zip", &zip(&members), &all()).unwrap();
        let mut want = fixture_ids();
        want.insert(3, "DSA-1-1-debian-10");
        assert_eq!(ids(&updates), want);
        assert_eq!(updates, {
            let mut dir = parse_dir(&fixtures(), &all()).unwrap();
            dir.insert(3, by_id(&updates, "DSA-1-1-debian-10").clone());
            dir
        });
    }

    #[test]
    fn a_directory_of_advisories_is_one_catalog() {
        let updates = parse_dir(&fixtures(), &all()).unwrap();
        assert_eq!(ids(&updates), fixture_ids(), "README.md is skipped");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.json"), fixture("DSA-5764-1.json")).unwrap();
        std::fs::write(dir.path().join("a.json"), fixture("DSA-5532-1.json")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "skipped").unwrap();
        std::fs::create_dir(dir.path().join("sub.json")).unwrap();
        let updates = parse_dir(dir.path(), &all()).unwrap();
        assert_eq!(ids(&updates), ["DSA-5532-1-debian-12", "DSA-5764-1-debian-12"]);
        assert_eq!(updates[1].supersedes, ["DSA-5532-1-debian-12"], "supersedence across files");

        std::fs::write(dir.path().join("c.json"), fixture("DSA-5532-1.json")).unwrap();
        let (source, message) = failure(parse_dir(dir.path(), &all()).unwrap_err());
        assert!(source.ends_with("c.json"), "{source}");
        assert!(message.contains("duplicate") && message.contains("a.json"), "{message}");

        let missing = parse_dir(&dir.path().join("nope"), &all()).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
    }

    #[test]
    fn a_later_advisory_with_a_higher_fixed_version_supersedes_the_earlier() {
        let updates = parse_dir(&fixtures(), &all()).unwrap();
        let supersedes = |id: &str| by_id(&updates, id).supersedes.clone();
        // Debian 12 openssl: DSA-5532-1 (3.0.11-1~deb12u2) < DEBIAN-CVE-2024-0727
        // (3.0.13-1~deb12u1) < DSA-5764-1 (3.0.14-1~deb12u2); only direct links are kept.
        assert_eq!(supersedes("DSA-5764-1-debian-12"), ["DEBIAN-CVE-2024-0727-debian-12"]);
        assert_eq!(supersedes("DEBIAN-CVE-2024-0727-debian-12"), ["DSA-5532-1-debian-12"]);
        assert!(supersedes("DSA-5532-1-debian-12").is_empty());
        // Never across ecosystems (Debian 11, 13, Ubuntu all have openssl too).
        for id in ["DLA-3530-1-debian-11", "DEBIAN-CVE-2024-0727-debian-13", "USN-6986-1-ubuntu-24.04-lts"] {
            assert!(supersedes(id).is_empty(), "{id}");
        }
        let catalog = Catalog::new(1, updates, &HashMap::new());
        let superseded: Vec<&str> = (0..catalog.len() as u32)
            .filter(|&i| catalog.is_superseded(i))
            .map(|i| catalog.updates[i as usize].id.as_str())
            .collect();
        assert_eq!(superseded, ["DEBIAN-CVE-2024-0727-debian-12", "DSA-5532-1-debian-12"]);
    }

    #[test]
    fn supersedence_needs_every_package_of_the_earlier_advisory_at_a_higher_version() {
        let u = "Ubuntu:24.04:LTS";
        let updates = parse_values(&[
            advisory(
                "USN-1-1",
                "2024-01-01T00:00:00Z",
                &[(u, "linux", "6.8.0-10.10"), (u, "linux-aws", "6.8.0-1001.1")],
            ),
            advisory("USN-2-1", "2024-02-01T00:00:00Z", &[(u, "linux", "6.8.0-20.20")]),
            advisory(
                "USN-3-1",
                "2024-03-01T00:00:00Z",
                &[(u, "linux", "6.8.0-30.30"), (u, "linux-aws", "6.8.0-1001.1")],
            ),
            advisory(
                "USN-4-1",
                "2024-04-01T00:00:00Z",
                &[(u, "linux", "6.8.0-30.30"), (u, "linux-aws", "6.8.0-1001.1")],
            ),
            // Earlier publication date, higher version: versions decide, not dates.
            advisory(
                "USN-5-1",
                "2023-01-01T00:00:00Z",
                &[(u, "linux", "6.8.0-40.40"), (u, "linux-aws", "6.8.0-1002.2")],
            ),
        ])
        .unwrap();
        let supersedes = |id: &str| by_id(&updates, id).supersedes.clone();
        assert!(supersedes("USN-2-1-ubuntu-24.04-lts").is_empty(), "USN-2-1 leaves linux-aws of USN-1-1 unfixed");
        assert_eq!(supersedes("USN-3-1-ubuntu-24.04-lts"), ["USN-1-1-ubuntu-24.04-lts", "USN-2-1-ubuntu-24.04-lts"]);
        assert_eq!(
            supersedes("USN-4-1-ubuntu-24.04-lts"),
            supersedes("USN-3-1-ubuntu-24.04-lts"),
            "equal fixes do not supersede each other"
        );
        assert_eq!(supersedes("USN-5-1-ubuntu-24.04-lts"), ["USN-3-1-ubuntu-24.04-lts", "USN-4-1-ubuntu-24.04-lts"]);
        assert!(updates.iter().all(|u| u.reboot_required), "kernels");
    }

    #[test]
    fn supersedence_records_only_the_nearest_later_advisories() {
        let d = "Debian:12";
        let values: Vec<Value> = (1..=6)
            .map(|n| {
                advisory(&format!("DSA-{n}-1"), "2024-01-01T00:00:00Z", &[(d, "curl", &format!("7.88.1-10+deb12u{n}"))])
            })
            .chain([advisory("DSA-7-1", "2024-01-01T00:00:00Z", &[(d, "curl", "7.88.1-10+deb12u6")])])
            .collect();
        let updates = parse_values(&values).unwrap();
        for n in 2..=6 {
            assert_eq!(
                by_id(&updates, &format!("DSA-{n}-1-debian-12")).supersedes,
                [format!("DSA-{}-1-debian-12", n - 1)]
            );
        }
        assert_eq!(by_id(&updates, "DSA-7-1-debian-12").supersedes, ["DSA-5-1-debian-12"]);
        assert!(by_id(&updates, "DSA-1-1-debian-12").supersedes.is_empty());
    }

    #[test]
    fn a_withdrawn_advisory_is_expired_and_supersedes_nothing() {
        let mut withdrawn = advisory("DSA-9-1", "2024-03-01T00:00:00Z", &[("Debian:12", "curl", "7.88.1-10+deb12u9")]);
        withdrawn["withdrawn"] = json!("2024-03-02T00:00:00Z");
        let earlier = advisory("DSA-8-1", "2024-02-01T00:00:00Z", &[("Debian:12", "curl", "7.88.1-10+deb12u8")]);
        let updates = parse_values(&[withdrawn, earlier]).unwrap();
        assert!(by_id(&updates, "DSA-9-1-debian-12").expired);
        assert!(by_id(&updates, "DSA-9-1-debian-12").supersedes.is_empty());
        assert!(!by_id(&updates, "DSA-8-1-debian-12").expired);
    }

    #[test]
    fn c1_applicability_compares_the_installed_source_package_with_the_fixed_version() {
        let updates =
            parse_dir(&fixtures(), &OsvOptions { ecosystems: vec!["Debian:12".into(), "Ubuntu:24.04".into()] })
                .unwrap();
        let facts = Facts::from_packages(&[("src:openssl", "3.0.11-1~deb12u2")]);
        let verdict = |id: &str| by_id(&updates, id).applicability.evaluate(&facts);
        assert_eq!(verdict("DSA-5532-1-debian-12"), ScanVerdict::Installed, "fixed in exactly this version");
        assert_eq!(verdict("DEBIAN-CVE-2024-0727-debian-12"), ScanVerdict::Missing);
        assert_eq!(verdict("DSA-5764-1-debian-12"), ScanVerdict::Missing);
        assert_eq!(verdict("USN-7022-1-ubuntu-24.04-lts"), ScanVerdict::NotApplicable, "no kernel source installed");
        let older = Facts::from_packages(&[("src:openssl", "3.0.11-1~deb12u1")]);
        assert_eq!(by_id(&updates, "DSA-5532-1-debian-12").applicability.evaluate(&older), ScanVerdict::Missing);
        assert_eq!(
            by_id(&updates, "DSA-5532-1-debian-12").applicability.evaluate(&Facts::default()),
            ScanVerdict::NotApplicable
        );
    }

    #[test]
    fn c1_several_packages_compose_with_any_and_all() {
        let updates = parse("USN-7022-1.json", &fixture("USN-7022-1.json"), &all()).unwrap();
        let a = &updates[0].applicability;
        assert!(a.problems().is_empty());
        let verdict = |packages: &[(&str, &str)]| a.evaluate(&Facts::from_packages(packages));
        assert_eq!(verdict(&[("src:linux", "6.8.0-44.44")]), ScanVerdict::Missing);
        assert_eq!(verdict(&[("src:linux", "6.8.0-45.45")]), ScanVerdict::Installed);
        assert_eq!(
            verdict(&[("src:linux", "6.8.0-45.45"), ("src:linux-aws", "6.8.0-1014.15")]),
            ScanVerdict::Missing,
            "one flavour below its fix"
        );
        assert_eq!(
            verdict(&[("src:linux", "6.8.0-45.45"), ("src:linux-aws", "6.8.0-1015.16")]),
            ScanVerdict::Installed
        );
        assert_eq!(verdict(&[("src:bash", "5.2.21-2ubuntu4")]), ScanVerdict::NotApplicable);

        // A range that starts after the first version, and a package re-fixed in a later
        // range: installable only inside the affected intervals.
        let mut two = advisory("DSA-2-1", "2024-01-01T00:00:00Z", &[]);
        two["affected"] = json!([{
            "package": {"ecosystem": "Debian:12", "name": "zlib"},
            "ranges": [{"type": "ECOSYSTEM", "events": [
                {"introduced": "1:1.2.13.dfsg-1"}, {"fixed": "1:1.2.13.dfsg-1+deb12u1"},
                {"introduced": "1:1.3.dfsg-1"}, {"fixed": "1:1.3.dfsg-1+deb12u1"}
            ]}]
        }]);
        let updates = parse_values(&[two]).unwrap();
        let a = &updates[0].applicability;
        assert!(a.problems().is_empty());
        let verdict = |version: &str| a.evaluate(&Facts::from_packages(&[("src:zlib", version)]));
        assert_eq!(verdict("1:1.2.11.dfsg-2"), ScanVerdict::Installed, "older than the vulnerable code");
        assert_eq!(verdict("1:1.2.13.dfsg-1"), ScanVerdict::Missing);
        assert_eq!(verdict("1:1.2.13.dfsg-1+deb12u1"), ScanVerdict::Installed);
        assert_eq!(verdict("1:1.3.dfsg-1"), ScanVerdict::Missing);
        assert_eq!(verdict("1:1.3.dfsg-1+deb12u1"), ScanVerdict::Installed);
    }

    #[test]
    fn severity_prefers_the_distribution_rating_over_cvss() {
        let base = |extra: Value| {
            let mut a =
                advisory("USN-1-1", "2024-01-01T00:00:00Z", &[("Ubuntu:24.04:LTS", "curl", "8.5.0-2ubuntu10.4")]);
            for (k, v) in extra.as_object().unwrap() {
                a[k] = v.clone();
            }
            parse_values(&[a]).unwrap()[0].severity
        };
        let critical = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";
        assert_eq!(base(json!({})), Severity::Unspecified);
        assert_eq!(base(json!({"severity": [{"type": "CVSS_V3", "score": critical}]})), Severity::Critical);
        assert_eq!(
            base(json!({"severity": [{"type": "CVSS_V3", "score": critical}, {"type": "Ubuntu", "score": "low"}]})),
            Severity::Low
        );
        assert_eq!(base(json!({"database_specific": {"severity": "HIGH"}})), Severity::Important);
        assert_eq!(
            base(
                json!({"severity": [{"type": "Ubuntu", "score": "negligible"}, {"type": "Ubuntu", "score": "critical"}]})
            ),
            Severity::Critical
        );
        assert_eq!(
            base(
                json!({"severity": [{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}]})
            ),
            Severity::Unspecified
        );
        assert_eq!(base(json!({"database_specific": {"severity": "not yet assigned"}})), Severity::Unspecified);
        let kernel = parse("USN-7022-1.json", &fixture("USN-7022-1.json"), &all()).unwrap();
        assert_eq!(kernel[0].severity, Severity::Important, "CVSS 7.8");
    }

    #[test]
    fn cvss_v3_base_scores_follow_the_specification() {
        for (vector, score) in [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:L", 3.7),
            ("CVSS:3.0/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),
            ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.6),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ] {
            assert_eq!(cvss3_base_score(vector), Some(score), "{vector}");
        }
        assert_eq!(cvss3_base_score("CVSS:2.0/AV:N/AC:L/Au:N/C:P/I:P/A:P"), None);
        assert_eq!(cvss3_base_score("CVSS:3.1/AV:N/AC:L"), None);
    }

    #[test]
    fn a_json_syntax_error_names_the_file_line_and_column() {
        let text = b"{\n  \"id\": \"DSA-1-1\",\n  \"affected\": [\n    {\"package\": {\"ecosystem\": \"Debian:12\" \"name\": \"x\"}}\n  ]\n}\n";
        let (source, message) = failure(parse("DSA-1-1.json", text, &all()).unwrap_err());
        assert_eq!(source, "DSA-1-1.json");
        assert!(message.contains("line 4 column 43"), "{message}");
        assert!(message.starts_with("not valid JSON"), "{message}");

        let (_, message) = failure(parse("cut.json", &fixture("DSA-5532-1.json")[..200], &all()).unwrap_err());
        assert!(message.contains("EOF") && message.contains("line"), "{message}");

        let wrong_type = br#"[{"id": "DSA-1-1", "published": "2024-01-01T00:00:00Z"}, {"id": "DSA-2-1", "affected": [{"package": {"ecosystem": 12}}]}]"#;
        let (_, message) = failure(parse("list.json", wrong_type, &all()).unwrap_err());
        assert!(message.starts_with("[1].affected[0].package.ecosystem: invalid type"), "{message}");
        assert!(message.contains("line 1 column"), "{message}");

        let (_, message) = failure(parse("empty.json", b"  \n", &all()).unwrap_err());
        assert!(message.starts_with("empty file"), "{message}");
        let (_, message) = failure(parse("none.json", br#"{"summary": "x"}"#, &all()).unwrap_err());
        assert!(message.contains("missing field `id`"), "{message}");
    }

    #[test]
    fn a_range_without_a_fixed_event_skips_the_package_and_a_malformed_range_is_an_error() {
        // OSV's "not fixed yet": introduced only. Nothing to install: the package is skipped
        // (and counted); an advisory left with no package gives no update. `last_affected`
        // and a bare `versions` list give no fix either; curl, unfixed in one entry, stays
        // skipped although another entry fixes it.
        let mut unfixed = advisory("DEBIAN-CVE-2024-1", "2024-01-01T00:00:00Z", &[]);
        unfixed["affected"] = json!([
            {"package": {"ecosystem": "Debian:12", "name": "curl"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]},
            {"package": {"ecosystem": "Debian:12", "name": "openssl"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.13-1~deb12u1"}]}]},
            {"package": {"ecosystem": "Debian:11", "name": "openssl"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"last_affected": "1.1.1w-0+deb11u1"}]}]},
            {"package": {"ecosystem": "Debian:13", "name": "openssl"}, "versions": ["3.1.4-2"]},
            {"package": {"ecosystem": "Debian:12", "name": "curl"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "7.88.1-10+deb12u5"}]}]}
        ]);
        let updates = parse_values(&[unfixed]).unwrap();
        assert_eq!(ids(&updates), ["DEBIAN-CVE-2024-1-debian-12"]);
        assert_eq!(updates[0].applicability.is_installable, package("src:openssl", Some("3.0.13-1~deb12u1"), None));

        let broken = |range: Value| {
            let mut a = advisory("DSA-1-1", "2024-01-01T00:00:00Z", &[]);
            a["affected"] = json!([
                {"package": {"ecosystem": "Debian:12", "name": "ok"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0-1"}]}]},
                {"package": {"ecosystem": "Debian:12", "name": "curl"}, "ranges": [{"type": "GIT", "events": []}, range]}
            ]);
            failure(parse_values(&[a]).unwrap_err()).1
        };
        assert_eq!(
            broken(json!({"type": "ECOSYSTEM", "events": []})),
            "[0].affected[1].ranges[1]: ECOSYSTEM range without events (it needs an introduced event) (advisory \"DSA-1-1\")"
        );
        assert_eq!(
            broken(json!({"type": "ECOSYSTEM", "events": [{"fixed": "1.0-1"}]})),
            "[0].affected[1].ranges[1]: ECOSYSTEM range without an introduced event (advisory \"DSA-1-1\")"
        );
        assert!(
            broken(json!({"type": "ECOSYSTEM", "events": [{"introduced": "0", "fixed": "1.0-1"}]}))
                .starts_with("[0].affected[1].ranges[1].events[0]: an event has exactly one of")
        );
        assert!(
            broken(json!({"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "not a version"}]}))
                .starts_with("[0].affected[1].ranges[1].events[1].fixed: \"not a version\" is not a Debian version")
        );
        let mut nameless = advisory("DSA-1-1", "2024-01-01T00:00:00Z", &[("Debian:12", "x", "1.0")]);
        nameless["affected"][0]["package"]["name"] = json!("");
        assert!(
            failure(parse_values(&[nameless]).unwrap_err())
                .1
                .starts_with("[0].affected[0].package.name: missing or empty")
        );
        let mut undated = advisory("DSA-1-1", "2024-01-01T00:00:00Z", &[("Debian:12", "x", "1.0")]);
        undated["published"] = json!("yesterday");
        assert!(
            failure(parse_values(&[undated]).unwrap_err())
                .1
                .starts_with("[0].published: \"yesterday\" is not an RFC 3339 timestamp")
        );
    }

    #[test]
    fn a_non_json_file_in_a_zip_names_the_archive_member() {
        let bytes =
            zip(&[("DSA-5532-1.json", &fixture("DSA-5532-1.json")), ("DSA-5380-1.json", b"<html>rate limited</html>")]);
        let (source, message) = failure(parse("archive.zip", &bytes, &all()).unwrap_err());
        assert_eq!(source, "archive.zip!/DSA-5380-1.json");
        assert!(message.contains("line 1 column 1"), "{message}");
    }

    #[test]
    fn a_truncated_zip_is_an_error() {
        let bytes = zip(&FIXTURES
            .map(|name| (name, fixture(name)))
            .iter()
            .map(|(n, b)| (*n, b.as_slice()))
            .collect::<Vec<_>>());
        for cut in [bytes.len() / 2, bytes.len() - 10] {
            let (source, message) = failure(parse("archive.zip", &bytes[..cut], &all()).unwrap_err());
            assert_eq!(source, "archive.zip");
            assert!(message.starts_with("not a readable zip archive"), "{message}");
        }
        // Intact central directory, damaged member data.
        let mut damaged = bytes.clone();
        for b in &mut damaged[40..200] {
            *b = 0;
        }
        let (source, _) = failure(parse("archive.zip", &damaged, &all()).unwrap_err());
        assert!(source.starts_with("archive.zip"), "{source}");
    }

    #[test]
    fn a_generated_catalog_of_5000_advisories_parses() {
        // 5,000 advisories alternating between Debian 12 and Ubuntu 24.04: a quarter for
        // the kernel (like per-CVE records: 50 fixed versions, 25 records each per
        // ecosystem), the rest over 250 packages, every fifth with a second package, every
        // 50th withdrawn.
        let mut values = Vec::with_capacity(5000);
        for n in 0..5000u32 {
            let (pkg, seq) = (n % 250, n / 250);
            let ecosystem = if n % 2 == 0 { "Debian:12" } else { "Ubuntu:24.04:LTS" };
            let mut affected = vec![(ecosystem, format!("pkg{pkg}"), format!("1.{seq}-1+deb12u{}", n % 7))];
            if n % 4 == 1 {
                affected = vec![(ecosystem, "linux".into(), format!("6.1.{}-1", n / 100))];
            } else if n % 5 == 0 {
                affected.push((ecosystem, format!("lib{}", pkg % 40), format!("2.{seq}-1")));
            }
            let affected: Vec<(&str, &str, &str)> =
                affected.iter().map(|(e, p, v)| (*e, p.as_str(), v.as_str())).collect();
            let mut a = advisory(
                &format!("DSA-{n}-1"),
                &format!("2024-{:02}-{:02}T00:00:00Z", seq % 12 + 1, n % 28 + 1),
                &affected,
            );
            a["upstream"] = json!([format!("CVE-2024-{n:05}")]);
            a["severity"] = json!([{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H"}]);
            if n % 50 == 0 {
                a["withdrawn"] = json!("2024-12-01T00:00:00Z");
            }
            values.push(a);
        }
        let bytes = serde_json::to_vec(&values).unwrap();
        let start = std::time::Instant::now();
        let updates = parse("generated.json", &bytes, &all()).unwrap();
        let elapsed = start.elapsed();
        println!(
            "osv: parsed 5000 generated advisories ({} KiB) into {} updates in {elapsed:?}",
            bytes.len() / 1024,
            updates.len()
        );
        assert_eq!(updates.len(), 5000);
        assert!(updates.windows(2).all(|w| w[0].id < w[1].id));
        assert!(updates.iter().any(|u| !u.supersedes.is_empty()));
        assert_eq!(updates.iter().filter(|u| u.expired).count(), 100);
        // Direct supersedence only: a kernel record lists the (at most 25) records of the
        // fixed version just below its own, not every earlier one.
        let kernel = by_id(&updates, "DSA-4901-1-ubuntu-24.04-lts");
        assert_eq!(kernel.applicability.is_installable, package("src:linux", Some("6.1.49-1"), None));
        assert!(!kernel.supersedes.is_empty() && kernel.supersedes.len() <= 25, "{}", kernel.supersedes.len());
        assert!(kernel.supersedes.iter().all(|id| (4800..4900).contains(&id[4..8].parse::<u32>().unwrap())));

        let zipped = zip(&values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("DSA-{i}-1.json"), serde_json::to_vec(v).unwrap()))
            .collect::<Vec<_>>()
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect::<Vec<_>>());
        let start = std::time::Instant::now();
        let from_zip = parse("generated.zip", &zipped, &all()).unwrap();
        println!("osv: the same as a zip archive ({} KiB) in {:?}", zipped.len() / 1024, start.elapsed());
        assert_eq!(from_zip, updates);
    }
}
