//! The `rpm-updateinfo` importer: a repository's `updateinfo.xml` (the errata format of
//! Fedora, EPEL, RHEL, Rocky, AlmaLinux, Oracle Linux and SUSE) → one update per advisory
//! and release (`<collection>`), applicable while an installed binary package of the
//! advisory's architecture is older than the advisory's version (RPM version order).
//! A source is the file (plain, `.gz`, `.xz`) or a repository (a URL or directory whose
//! `repodata/repomd.xml` points to it).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use jiff::civil::Date;
use sha2::Digest;

use super::applicability::{check_rpm_version, compare_rpm};
use super::rpm::{classification, is_binary_arch, needs_reboot};
use super::source::{Fetched, Fetcher};
use super::{Applicability, RpmPackageTest, Rule, Severity, Update};
use crate::Error;
use crate::resources::CatalogSource;

fn catalog_error(source: &str, message: impl Into<String>) -> Error {
    Error::Catalog { source_name: source.to_string(), message: message.into() }
}

/// One binary package an advisory updates to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nevra {
    pub name: String,
    /// `[epoch:]version-release`, the epoch left out when 0.
    pub evr: String,
    pub arch: String,
}

/// An advisory of one release, while it is read (split `<update>` elements of one id
/// are merged: old Fedora repositories list one per source package).
struct Draft {
    update: Update,
    /// Where the advisory was first seen, for errors: `update #3 (FEDORA-2007-78)`.
    at: String,
    kind: String,
    release: String,
    /// Sorted, one entry per (name, arch): the highest version listed.
    packages: Vec<Nevra>,
}

/// `updateinfo.xml` (possibly compressed) → updates, sorted by id.
///
/// Mapping, one update per (advisory `<id>`, `<collection>`):
/// - id `<advisory id>-<collection short name, as a slug>` (`FEDORA-2007-78-fc5`; the
///   advisory id alone when the collection has no name), kb the advisory id, title
///   `<title>` (else the id), classification from `type` (security → "Security Updates",
///   bugfix/recommended/optional → "Updates", enhancement/newpackage/feature → "Feature
///   Packs"), severity from `<severity>` (Critical/Urgent, Important/High,
///   Moderate/Medium, Low; None/Unspecified or absent: Unspecified), products the
///   collection's `<name>` (else `<release>`, else its short name), released the date of
///   `<issued>` (else `<updated>`; `YYYY-MM-DD…` or seconds since 1970), CVEs the `cve`
///   references, reboot required when any package (or the advisory) has
///   `<reboot_suggested>` true, or when it updates a kernel, glibc, systemd… (see
///   `rpm::needs_reboot`).
/// - Packages: each binary `<package>`, its name, version, release and architecture from
///   `<filename>` when that names a different package than the attributes (old
///   repositories give the source package's name and the repository's arch there), the
///   epoch from the attribute. Source packages (`src`, `nosrc`) are skipped.
/// - Applicability per (name, arch): installable when the package of that architecture
///   is installed below the advisory's version (a `noarch` package: installed for any
///   architecture); installed when some is installed and none is below.
/// - Supersedence per release: an advisory supersedes another when it updates every
///   (package, arch) the other does to an equal or higher version and one to a higher
///   version (as `debian-dsa`).
///
/// Errors name the source and the advisory (`update #3 (FEDORA-2007-78)`), the package
/// and field, or the line and column of an XML error: malformed or truncated XML, an
/// advisory without binary packages, an unknown architecture, a version rpm would not
/// accept, an unknown type or severity.
pub fn parse(source: &str, bytes: &[u8]) -> crate::Result<Vec<Update>> {
    let bytes = super::compression::decompress(source, bytes)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        catalog_error(source, format!("not UTF-8 text at byte {}; is this an updateinfo.xml?", e.valid_up_to()))
    })?;
    let doc = roxmltree::Document::parse(text).map_err(|e| {
        catalog_error(source, format!("not well-formed XML: {e}; the file is damaged or truncated, fetch it again"))
    })?;
    let root = doc.root_element();
    if root.has_tag_name("repomd") {
        return Err(catalog_error(
            source,
            "this is a repository's repomd.xml, not its updateinfo.xml; give the repository (its URL or directory) \
             as the source and the updateinfo it lists is read",
        ));
    }
    if !root.has_tag_name("updates") {
        return Err(catalog_error(
            source,
            format!("the root element is <{}>, not <updates>; is this an updateinfo.xml?", root.tag_name().name()),
        ));
    }
    let mut drafts: Vec<Draft> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (n, node) in root.children().filter(|c| c.is_element()).enumerate() {
        if !node.has_tag_name("update") {
            continue;
        }
        read_update(source, &doc, node, n + 1, &mut drafts, &mut by_id)?;
    }
    link_supersedence(&mut drafts);
    let mut updates: Vec<Update> = drafts
        .into_iter()
        .map(|mut d| {
            d.update.applicability = applicability(&d.packages);
            d.update.reboot_required |= d.packages.iter().any(|p| needs_reboot(&p.name));
            d.update.supersedes.sort();
            d.update
        })
        .collect();
    updates.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(updates)
}

/// One `<update>` element: a draft per collection, merged with an earlier element of the
/// same advisory and release.
fn read_update(
    source: &str,
    doc: &roxmltree::Document,
    node: roxmltree::Node,
    number: usize,
    drafts: &mut Vec<Draft>,
    by_id: &mut HashMap<String, usize>,
) -> crate::Result<()> {
    let line = doc.text_pos_at(node.range().start).row;
    let child_text = |name: &str| {
        node.children().find(|c| c.has_tag_name(name)).and_then(|c| c.text()).map(str::trim).filter(|t| !t.is_empty())
    };
    let Some(id) = child_text("id") else {
        return Err(catalog_error(
            source,
            format!("update #{number} (line {line}): no <id>; every advisory needs one"),
        ));
    };
    let at = format!("update #{number} ({id}, line {line})");
    let fail = |message: String| catalog_error(source, format!("{at}: {message}"));
    let kind = node.attribute("type").unwrap_or_default().trim().to_ascii_lowercase();
    let class = classification(&kind).ok_or_else(|| {
        fail(format!(
            "type {kind:?} is not an advisory type (security, bugfix, enhancement, newpackage, recommended, optional, feature)"
        ))
    })?;
    let severity = match child_text("severity") {
        None => Severity::Unspecified,
        Some(word) => severity(word).ok_or_else(|| {
            fail(format!("<severity> {word:?} is not one of Critical, Important, Moderate, Low, None"))
        })?,
    };
    let date_of = |name: &str| -> crate::Result<Option<Date>> {
        let Some(date) = node.children().find(|c| c.has_tag_name(name)).and_then(|c| c.attribute("date")) else {
            return Ok(None);
        };
        parse_date(date).map(Some).ok_or_else(|| {
            fail(format!("<{name} date={date:?}> is not a date (YYYY-MM-DD[ HH:MM:SS] or seconds since 1970)"))
        })
    };
    let released = match (date_of("issued")?, date_of("updated")?) {
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => return Err(fail("no <issued date=…> (nor <updated>): the release date is needed".into())),
    };
    let mut cves: Vec<String> = node
        .descendants()
        .filter(|r| r.has_tag_name("reference") && r.attribute("type").is_some_and(|t| t.eq_ignore_ascii_case("cve")))
        .filter_map(|r| {
            r.attribute("id")
                .filter(|i| i.starts_with("CVE-"))
                .or_else(|| r.attribute("href").and_then(|h| h.find("CVE-").map(|i| &h[i..])))
                .map(|c| c.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-')).next().unwrap_or(c).to_string())
        })
        .collect();
    cves.sort();
    cves.dedup();
    let truthy = |n: roxmltree::Node| {
        n.has_tag_name("reboot_suggested")
            && n.text().is_none_or(|t| matches!(t.trim().to_ascii_lowercase().as_str(), "" | "1" | "true" | "yes"))
    };
    let advisory_reboot = node.children().any(truthy);
    let release_element = child_text("release");
    let title = child_text("title").unwrap_or(id).to_string();

    let collections: Vec<roxmltree::Node> = node
        .children()
        .filter(|c| c.has_tag_name("pkglist"))
        .flat_map(|p| p.children().filter(|c| c.has_tag_name("collection")))
        .collect();
    let mut any_package = false;
    for collection in collections {
        let short = collection.attribute("short").map(str::trim).filter(|s| !s.is_empty());
        let name = collection
            .children()
            .find(|c| c.has_tag_name("name"))
            .and_then(|c| c.text())
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let release = short.or(name).unwrap_or_default().to_string();
        let product = name.or(release_element).or(short).map(str::to_string);
        let mut packages = Vec::new();
        let mut reboot = advisory_reboot;
        for (k, p) in collection.children().filter(|c| c.has_tag_name("package")).enumerate() {
            match package(p).map_err(|m| fail(format!("package #{} ({}): {m}", k + 1, describe(p))))? {
                Some(nevra) => {
                    reboot |= p.children().any(truthy);
                    packages.push(nevra);
                }
                None => continue,
            }
        }
        if packages.is_empty() {
            continue;
        }
        any_package = true;
        let update_id = if release.is_empty() { id.to_string() } else { format!("{id}-{}", slug(&release)) };
        if let Some(&i) = by_id.get(&update_id) {
            // The same advisory again (old repositories list one <update> per source package).
            let draft = &mut drafts[i];
            if draft.kind != kind {
                return Err(fail(format!(
                    "listed again with type {kind:?}, but {} says {:?}; one advisory has one type",
                    draft.at, draft.kind
                )));
            }
            draft.update.released = draft.update.released.min(released);
            draft.update.reboot_required |= reboot;
            for c in &cves {
                if !draft.update.cves.contains(c) {
                    draft.update.cves.push(c.clone());
                }
            }
            draft.update.cves.sort();
            draft.packages.extend(packages);
            normalise(&mut draft.packages);
            continue;
        }
        normalise(&mut packages);
        by_id.insert(update_id.clone(), drafts.len());
        drafts.push(Draft {
            update: Update {
                id: update_id,
                kb: Some(id.to_string()),
                title: title.clone(),
                classification: class.to_string(),
                severity,
                products: product.into_iter().collect(),
                released,
                supersedes: vec![],
                expired: false,
                reboot_required: reboot,
                max_run_time: crate::time::Duration::from_mins(10),
                cves: cves.clone(),
                applicability: Applicability {
                    is_installable: Rule::Always(false),
                    is_installed: Rule::Always(false),
                    prerequisites: vec![],
                },
                files: vec![],
            },
            at: at.clone(),
            kind: kind.clone(),
            release,
            packages,
        });
    }
    if !any_package {
        return Err(fail(
            "no binary package in its <pkglist>; an advisory must name the packages that fix it \
             (is the repository's updateinfo.xml cut short?)"
                .into(),
        ));
    }
    Ok(())
}

/// `name-version-release.arch` of a `<package>` element, for errors.
fn describe(p: roxmltree::Node) -> String {
    let filename = p.children().find(|c| c.has_tag_name("filename")).and_then(|c| c.text()).map(str::trim);
    match filename {
        Some(f) if !f.is_empty() => f.to_string(),
        _ => format!(
            "{}-{}-{}.{}",
            p.attribute("name").unwrap_or("?"),
            p.attribute("version").unwrap_or("?"),
            p.attribute("release").unwrap_or("?"),
            p.attribute("arch").unwrap_or("?")
        ),
    }
}

/// The binary package a `<package>` element installs; None for a source package.
fn package(p: roxmltree::Node) -> Result<Option<Nevra>, String> {
    let attr = |name: &str| -> Result<&str, String> {
        p.attribute(name).map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| format!("no {name} attribute"))
    };
    let (mut name, mut version, mut release, mut arch) =
        (attr("name")?, attr("version")?, attr("release")?, attr("arch")?);
    let epoch = p.attribute("epoch").map(str::trim).filter(|e| !e.is_empty() && *e != "0");
    if let Some(filename) = p.children().find(|c| c.has_tag_name("filename")).and_then(|c| c.text()).map(str::trim)
        && !filename.is_empty()
    {
        let file = Path::new(filename).file_name().and_then(|f| f.to_str()).unwrap_or(filename);
        let (n, v, r, a) = split_filename(file)
            .ok_or_else(|| format!("<filename> {filename:?} is not name-version-release.arch.rpm"))?;
        // Old repositories give the source package's name and version and the repository's
        // arch in the attributes; the file is what gets installed.
        (name, version, release, arch) = (n, v, r, a);
    }
    if matches!(arch, "src" | "nosrc") {
        return Ok(None);
    }
    if !is_binary_arch(arch) {
        return Err(format!(
            "architecture {arch:?} is not an RPM architecture (x86_64, aarch64, i686, noarch, ppc64le, s390x…)"
        ));
    }
    let evr = match epoch {
        Some(e) => format!("{e}:{version}-{release}"),
        None => format!("{version}-{release}"),
    };
    check_rpm_version(&evr).map_err(|e| format!("{evr:?} is not an RPM version ({e})"))?;
    Ok(Some(Nevra { name: name.to_string(), evr, arch: arch.to_string() }))
}

/// `openssl-libs-3.0.7-27.el9.x86_64.rpm` → (`openssl-libs`, `3.0.7`, `27.el9`, `x86_64`).
fn split_filename(file: &str) -> Option<(&str, &str, &str, &str)> {
    let stem = file.strip_suffix(".rpm")?;
    let (nvr, arch) = stem.rsplit_once('.')?;
    let (nv, release) = nvr.rsplit_once('-')?;
    let (name, version) = nv.rsplit_once('-')?;
    (!name.is_empty() && !version.is_empty() && !release.is_empty() && !arch.is_empty())
        .then_some((name, version, release, arch))
}

/// Sort by (name, arch) and keep the highest version of each.
fn normalise(packages: &mut Vec<Nevra>) {
    packages.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)).then_with(|| compare_rpm(&b.evr, &a.evr)));
    packages.dedup_by(|later, first| later.name == first.name && later.arch == first.arch);
}

fn severity(word: &str) -> Option<Severity> {
    match word.trim().to_ascii_lowercase().as_str() {
        "critical" | "urgent" => Some(Severity::Critical),
        "important" | "high" => Some(Severity::Important),
        "moderate" | "medium" => Some(Severity::Moderate),
        "low" => Some(Severity::Low),
        "none" | "unspecified" | "" => Some(Severity::Unspecified),
        _ => None,
    }
}

/// `2007-01-15 11:26:31.79`, `2024-01-01`, or seconds since 1970 (SUSE) → the UTC date.
fn parse_date(text: &str) -> Option<Date> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let ts = jiff::Timestamp::from_second(text.parse().ok()?).ok()?;
        return Some(ts.to_zoned(jiff::tz::TimeZone::UTC).date());
    }
    text.get(..10)?.parse().ok()
}

/// `FC5` → `fc5`, `Fedora 40` → `fedora-40`.
fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// One test per (name, arch): the package of that arch (any arch for `noarch`).
fn applicability(packages: &[Nevra]) -> Applicability {
    let test = |p: &Nevra, below: bool, at_least: bool| {
        Rule::RpmPackage(RpmPackageTest {
            name: p.name.clone(),
            arch: (p.arch != "noarch").then(|| p.arch.clone()),
            version_below: below.then(|| p.evr.clone()),
            version_at_least: at_least.then(|| p.evr.clone()),
        })
    };
    if let [p] = packages {
        return Applicability {
            is_installable: test(p, true, false),
            is_installed: test(p, false, true),
            prerequisites: vec![],
        };
    }
    let below = Rule::Any(packages.iter().map(|p| test(p, true, false)).collect());
    Applicability {
        is_installed: Rule::All(vec![
            Rule::Any(packages.iter().map(|p| test(p, false, false)).collect()),
            Rule::Not(Box::new(below.clone())),
        ]),
        is_installable: below,
        prerequisites: vec![],
    }
}

/// Per release and (package, arch), all pairs: `newer` supersedes `older` when it updates
/// every (package, arch) of `older` to an equal or higher version, one higher.
fn link_supersedence(drafts: &mut [Draft]) {
    let mut groups: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
    for (d, draft) in drafts.iter().enumerate() {
        for p in &draft.packages {
            groups.entry((draft.release.as_str(), p.name.as_str(), p.arch.as_str())).or_default().push(d);
        }
    }
    let version = |d: usize, name: &str, arch: &str| {
        let packages = &drafts[d].packages;
        packages
            .binary_search_by(|p| (p.name.as_str(), p.arch.as_str()).cmp(&(name, arch)))
            .ok()
            .map(|i| packages[i].evr.as_str())
    };
    let mut links: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for ((_, name, arch), members) in &groups {
        for &newer in members {
            for &older in members {
                let (Some(n), Some(o)) = (version(newer, name, arch), version(older, name, arch)) else { continue };
                if compare_rpm(n, o).is_gt()
                    && !links.get(&newer).is_some_and(|l| l.contains(&older))
                    && drafts[older]
                        .packages
                        .iter()
                        .all(|p| version(newer, &p.name, &p.arch).is_some_and(|v| compare_rpm(v, &p.evr).is_ge()))
                {
                    links.entry(newer).or_default().push(older);
                }
            }
        }
    }
    for (newer, olders) in links {
        let ids: Vec<String> = olders.iter().map(|&o| drafts[o].update.id.clone()).collect();
        drafts[newer].update.supersedes = ids;
    }
}

// ---------------------------------------------------------------------------------------
// Repositories.

/// Fetch an `rpm-updateinfo` source. A file or URL that is an updateinfo document is
/// returned as it is; a repository — a directory or URL without a file name, or its
/// `repodata/repomd.xml` — is read through its `repomd.xml`: the `updateinfo` it lists is
/// fetched and checked against the listed checksum.
pub fn fetch(
    fetcher: &Fetcher,
    source: &CatalogSource,
    desired: Option<(&crate::git::GitSource, &str)>,
) -> crate::Result<Fetched> {
    let repository_dir = source.file.as_deref().map(Path::new).and_then(|p| {
        if p.is_dir() {
            Some(p.to_path_buf())
        } else if p.ends_with("repodata/repomd.xml") {
            p.parent().and_then(Path::parent).map(Path::to_path_buf)
        } else {
            None
        }
    });
    if let Some(dir) = repository_dir {
        let repomd = fetcher.fetch_file(&dir.join("repodata/repomd.xml"))?;
        let href = updateinfo_location(&repomd)?;
        let fetched = fetcher.fetch_file(&dir.join(&href.0))?;
        return verify(fetched, &href);
    }
    if let Some(url) = &source.url {
        let is_repository = url.ends_with('/') || !has_file_name(url);
        let repomd_url = if url.ends_with("/repodata/repomd.xml") {
            Some(url.clone())
        } else if is_repository {
            Some(format!("{}/repodata/repomd.xml", url.trim_end_matches('/')))
        } else {
            None
        };
        if let Some(repomd_url) = repomd_url {
            let base = repomd_url.strip_suffix("repodata/repomd.xml").expect("built above").to_string();
            let repomd = fetcher.fetch_url(&repomd_url)?;
            let href = updateinfo_location(&repomd)?;
            let fetched = fetcher.fetch_url(&format!("{base}{}", href.0))?;
            return verify(fetched, &href);
        }
    }
    fetcher.fetch(source, desired)
}

/// The last path segment has an extension (`updateinfo.xml.gz`): a file, not a repository.
fn has_file_name(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().is_some_and(|last| last.contains('.') && !last.contains(':'))
}

/// (href, checksum type, checksum) of the `updateinfo` data a repomd.xml lists.
fn updateinfo_location(repomd: &Fetched) -> crate::Result<(String, String, String)> {
    let source = repomd.name.as_str();
    let text = std::str::from_utf8(&repomd.bytes)
        .map_err(|e| catalog_error(source, format!("not UTF-8 text at byte {}", e.valid_up_to())))?;
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| catalog_error(source, format!("not well-formed XML: {e}; fetch it again")))?;
    if !doc.root_element().has_tag_name("repomd") {
        return Err(catalog_error(source, "the root element is not <repomd>; is this a repository's repomd.xml?"));
    }
    let data = doc
        .root_element()
        .children()
        .find(|c| c.has_tag_name("data") && c.attribute("type") == Some("updateinfo"))
        .ok_or_else(|| {
            catalog_error(
                source,
                "the repository lists no updateinfo (no <data type=\"updateinfo\">): it publishes no advisories",
            )
        })?;
    let href = data
        .children()
        .find(|c| c.has_tag_name("location"))
        .and_then(|l| l.attribute("href"))
        .ok_or_else(|| catalog_error(source, "<data type=\"updateinfo\"> has no <location href=…>"))?;
    let checksum = data.children().find(|c| c.has_tag_name("checksum"));
    let kind = checksum.and_then(|c| c.attribute("type")).unwrap_or_default().to_string();
    let sum = checksum.and_then(|c| c.text()).unwrap_or_default().trim().to_ascii_lowercase();
    Ok((href.to_string(), kind, sum))
}

/// Check the fetched updateinfo against the checksum repomd.xml lists (sha256 or sha512;
/// other kinds are not checked).
fn verify(fetched: Fetched, (href, kind, sum): &(String, String, String)) -> crate::Result<Fetched> {
    let actual = match kind.as_str() {
        "sha256" => hex::encode(sha2::Sha256::digest(&fetched.bytes)),
        "sha512" => hex::encode(sha2::Sha512::digest(&fetched.bytes)),
        other => {
            tracing::debug!(source = %fetched.name, checksum = other, "updateinfo checksum kind not checked");
            return Ok(fetched);
        }
    };
    if &actual != sum {
        return Err(catalog_error(
            &fetched.name,
            format!(
                "{kind} is {actual}, but repomd.xml lists {sum} for {href}; the repository changed while it was \
                 read or the mirror is inconsistent, sync again"
            ),
        ));
    }
    Ok(fetched)
}

#[cfg(test)]
mod test {
    use std::io::{Read, Write};
    use std::path::PathBuf;

    use super::*;
    use crate::catalog::{Catalog, Facts, ScanVerdict};

    fn fedora() -> Vec<u8> {
        std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/rpm/fedora-core-updates-5-x86_64-updateinfo.xml.gz"),
        )
        .unwrap()
    }

    fn fedora_xml() -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(fedora().as_slice()).read_to_string(&mut text).unwrap();
        text
    }

    fn by_id<'a>(updates: &'a [Update], id: &str) -> &'a Update {
        updates.iter().find(|u| u.id == id).unwrap_or_else(|| panic!("no update {id}"))
    }

    fn message(err: Error) -> (String, String) {
        match err {
            Error::Catalog { source_name, message } => (source_name, message),
            other => panic!("expected a catalog error, got {other:?}"),
        }
    }

    /// Every (name, arch, version) an update's installable rule tests.
    fn tested(update: &Update) -> Vec<(String, Option<String>, String)> {
        let one = |r: &Rule| match r {
            Rule::RpmPackage(t) => (t.name.clone(), t.arch.clone(), t.version_below.clone().unwrap()),
            other => panic!("unexpected rule {other:?}"),
        };
        match &update.applicability.is_installable {
            Rule::Any(rules) => rules.iter().map(one).collect(),
            rule => vec![one(rule)],
        }
    }

    /// The Fedora Core 5 updateinfo, against an independent reading of the XML: one update
    /// per advisory id (the file splits six advisories over several <update> elements),
    /// each binary file of the advisory tested at its own name, arch and version.
    #[test]
    fn the_fedora_updateinfo_imports_one_update_per_advisory_and_release() {
        let updates = parse("fedora.xml.gz", &fedora()).unwrap();
        let xml = fedora_xml();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let elements: Vec<roxmltree::Node> = doc.descendants().filter(|n| n.has_tag_name("update")).collect();
        assert_eq!(elements.len(), 141);
        let mut ids: Vec<&str> =
            elements.iter().map(|u| u.children().find(|c| c.has_tag_name("id")).unwrap().text().unwrap()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(updates.len(), ids.len());
        assert_eq!(updates.len(), 131);
        for u in &elements {
            let id = u.children().find(|c| c.has_tag_name("id")).unwrap().text().unwrap();
            let update = by_id(&updates, &format!("{id}-fc5"));
            assert_eq!(update.kb.as_deref(), Some(id));
            assert_eq!(update.products, ["Fedora Core 5"]);
            let class = if u.attribute("type") == Some("security") { "Security Updates" } else { "Updates" };
            assert_eq!(update.classification, class, "{id}");
            let tests = tested(update);
            for p in u.descendants().filter(|n| n.has_tag_name("package")) {
                let file = p.children().find(|c| c.has_tag_name("filename")).unwrap().text().unwrap();
                let mut parts = file.trim_end_matches(".rpm").rsplitn(2, '.');
                let arch = parts.next().unwrap();
                if arch == "src" {
                    continue;
                }
                let mut nvr = parts.next().unwrap().rsplitn(3, '-');
                let (release, version, name) = (nvr.next().unwrap(), nvr.next().unwrap(), nvr.next().unwrap());
                let epoch = p.attribute("epoch").unwrap();
                let evr =
                    if epoch == "0" { format!("{version}-{release}") } else { format!("{epoch}:{version}-{release}") };
                let arch = (arch != "noarch").then(|| arch.to_string());
                assert!(tests.contains(&(name.to_string(), arch.clone(), evr.clone())), "{id}: {name} {arch:?} {evr}");
                if p.children().any(|c| c.has_tag_name("reboot_suggested")) {
                    assert!(update.reboot_required, "{id}");
                }
            }
        }

        // By hand from the file.
        let w3m = by_id(&updates, "FEDORA-2007-78-fc5");
        assert_eq!(w3m.title, "Fedora Update w3m-0.5.1-15.fc5");
        assert_eq!(w3m.released.to_string(), "2007-01-15");
        assert!(w3m.cves.is_empty() && !w3m.reboot_required);
        let fetchmail = by_id(&updates, "FEDORA-2007-41-fc5");
        assert_eq!(fetchmail.cves, ["CVE-2006-5867"]);
        let tcpdump = updates.iter().find(|u| u.title.contains("tcpdump")).unwrap();
        let verdict = |u: &Update, pkgs: &[(&str, &str)]| u.applicability.evaluate(&Facts::from_packages(pkgs));
        assert_eq!(verdict(tcpdump, &[("libpcap.x86_64", "14:0.9.4-3.fc5")]), ScanVerdict::Missing);
        assert_eq!(verdict(tcpdump, &[("libpcap.x86_64", "0.9.5-1")]), ScanVerdict::Missing, "epoch 14 outranks");
        assert_eq!(verdict(tcpdump, &[("libpcap.x86_64", "14:0.9.4-4.fc5")]), ScanVerdict::Installed);
        assert_eq!(verdict(tcpdump, &[("libpcap.ia64", "14:0.9.4-3.fc5")]), ScanVerdict::NotApplicable);
        let split = by_id(&updates, "FEDORA-2007-1337-fc5");
        let names: std::collections::BTreeSet<String> = tested(split).into_iter().map(|t| t.0).collect();
        assert!(names.contains("PyQt") && names.contains("sip"), "both <update> elements: {names:?}");

        // The kernel stream: each later kernel supersedes the ones whose packages it
        // carries at a higher version; the newest is superseded by none.
        let kernel = by_id(&updates, "FEDORA-2007-225-fc5");
        assert!(kernel.reboot_required);
        assert_eq!(verdict(kernel, &[("kernel.i686", "2.6.18-1.2257.fc5")]), ScanVerdict::Missing);
        assert_eq!(verdict(kernel, &[("kernel.i686", "2.6.19-1.2288.fc5")]), ScanVerdict::Installed);
        let catalog = Catalog::new(1, updates.clone(), &HashMap::new());
        let superseded = |id: &str| catalog.is_superseded(catalog.index_of(id).unwrap());
        assert!(superseded("FEDORA-2007-225-fc5") && superseded("FEDORA-2007-522-fc5"));
        assert!(!superseded("FEDORA-2007-599-fc5"));
        assert!(by_id(&updates, "FEDORA-2007-599-fc5").supersedes.contains(&"FEDORA-2007-522-fc5".to_string()));
        assert!(!superseded("FEDORA-2007-78-fc5"), "w3m has one update in the file");
    }

    const MODERN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="packager@almalinux.org" status="final" type="security" version="2">
    <id>ALSA-2024:0001</id>
    <title>Important: openssl security update</title>
    <issued date="2024-01-10 00:00:00"/>
    <updated date="2024-01-12 00:00:00"/>
    <severity>Important</severity>
    <references>
      <reference href="https://access.redhat.com/security/cve/CVE-2023-5678" id="CVE-2023-5678" type="cve" title=""/>
      <reference href="https://errata.almalinux.org/9/ALSA-2024-0001.html" id="ALSA-2024:0001" type="self"/>
    </references>
    <pkglist>
      <collection short="almalinux9-baseos">
        <name>AlmaLinux 9 BaseOS</name>
        <package name="openssl-libs" version="3.0.7" release="25.el9_3" epoch="1" arch="x86_64">
          <filename>openssl-libs-3.0.7-25.el9_3.x86_64.rpm</filename>
        </package>
        <package name="openssl-libs" version="3.0.7" release="25.el9_3" epoch="1" arch="i686">
          <filename>openssl-libs-3.0.7-25.el9_3.i686.rpm</filename>
        </package>
        <package name="openssl" version="3.0.7" release="25.el9_3" epoch="1" arch="src">
          <filename>openssl-3.0.7-25.el9_3.src.rpm</filename>
        </package>
        <package name="crypto-policies" version="20230731" release="1.git94f0e2c.el9_3.1" epoch="0" arch="noarch">
          <filename>crypto-policies-20230731-1.git94f0e2c.el9_3.1.noarch.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
  <update status="stable" type="enhancement">
    <id>SUSE-FU-2024:0002-1</id>
    <issued date="1704067200"/>
    <severity>moderate</severity>
    <reboot_suggested>true</reboot_suggested>
    <pkglist><collection><package name="zypper" epoch="0" version="1.14.68" release="150400.3.40.1" arch="aarch64"/></collection></pkglist>
  </update>
</updates>
"#;

    #[test]
    fn c1_multilib_packages_are_tested_per_architecture_and_noarch_for_any() {
        let updates = parse("updateinfo.xml", MODERN.as_bytes()).unwrap();
        let ids: Vec<&str> = updates.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["ALSA-2024:0001-almalinux9-baseos", "SUSE-FU-2024:0002-1"]);
        let openssl = &updates[0];
        assert_eq!(openssl.severity, Severity::Important);
        assert_eq!(openssl.cves, ["CVE-2023-5678"]);
        assert_eq!(openssl.products, ["AlmaLinux 9 BaseOS"]);
        assert_eq!(openssl.released.to_string(), "2024-01-10");
        assert!(!openssl.reboot_required);
        let verdict = |pkgs: &[(&str, &str)]| openssl.applicability.evaluate(&Facts::from_packages(pkgs));
        let fixed = "1:3.0.7-25.el9_3";
        let old = "1:3.0.7-24.el9";
        let policies = ("crypto-policies", "20230731-1.git94f0e2c.el9_3.1");
        assert_eq!(verdict(&[("openssl-libs.x86_64", fixed), policies]), ScanVerdict::Installed);
        assert_eq!(
            verdict(&[("openssl-libs.x86_64", fixed), ("openssl-libs.i686", old), policies]),
            ScanVerdict::Missing
        );
        assert_eq!(
            verdict(&[("openssl-libs.x86_64", fixed), ("openssl-libs.i686", fixed), policies]),
            ScanVerdict::Installed
        );
        assert_eq!(
            verdict(&[("openssl-libs.x86_64", fixed), ("crypto-policies", "20221215-1.git9a18988.el9")]),
            ScanVerdict::Missing
        );
        assert_eq!(verdict(&[("openssl-libs.aarch64", old)]), ScanVerdict::NotApplicable, "another architecture");
        assert_eq!(verdict(&[("openssl.x86_64", old)]), ScanVerdict::NotApplicable, "the source package is not tested");

        let zypper = &updates[1];
        assert_eq!(zypper.classification, "Feature Packs");
        assert_eq!(zypper.severity, Severity::Moderate);
        assert_eq!(zypper.released.to_string(), "2024-01-01", "seconds since 1970");
        assert!(zypper.reboot_required, "<reboot_suggested> of the advisory");
        assert_eq!(zypper.title, "SUSE-FU-2024:0002-1");
    }

    #[test]
    fn gzip_xz_and_zstd_files_import_like_the_plain_one() {
        let plain = parse("updateinfo.xml", MODERN.as_bytes()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(MODERN.as_bytes()).unwrap();
        assert_eq!(parse("updateinfo.xml.gz", &gz.finish().unwrap()).unwrap(), plain);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut MODERN.as_bytes(), &mut xz).unwrap();
        assert_eq!(parse("updateinfo.xml.xz", &xz).unwrap(), plain);
        let zst = ruzstd::encoding::compress_to_vec(MODERN.as_bytes(), ruzstd::encoding::CompressionLevel::Fastest);
        assert_eq!(parse("updateinfo.xml.zst", &zst).unwrap(), plain);
        // A cut-off zstd file is an error naming the file, not a shorter catalog.
        let (source, _) = message(parse("updateinfo.xml.zst", &zst[..zst.len() / 2]).unwrap_err());
        assert_eq!(source, "updateinfo.xml.zst");
    }

    #[test]
    fn bad_updateinfo_names_the_file_advisory_and_package() {
        let fail = |text: &str| message(parse("updateinfo.xml", text.as_bytes()).unwrap_err());
        let (source, m) = fail(&MODERN[..MODERN.len() / 2]);
        assert_eq!(source, "updateinfo.xml");
        assert!(m.starts_with("not well-formed XML") && m.contains("truncated"), "{m}");
        let (_, m) = fail("<updates><update type=\"security\"><id>X</id><issued date=\"2024-01-01\"/></updates>");
        assert!(m.contains("not well-formed XML") && m.contains("1:"), "{m}");

        let (_, m) = fail(&MODERN.replace(
            r#"arch="i686">
          <filename>openssl-libs-3.0.7-25.el9_3.i686.rpm"#,
            r#"arch="i686">
          <filename>openssl-libs-3.0.7-25.el9_3.x68_64.rpm"#,
        ));
        assert_eq!(
            m,
            "update #1 (ALSA-2024:0001, line 3): package #2 (openssl-libs-3.0.7-25.el9_3.x68_64.rpm): architecture \"x68_64\" is not an RPM architecture (x86_64, aarch64, i686, noarch, ppc64le, s390x…)"
        );
        let (_, m) = fail(&MODERN.replace(
            r#"<package name="zypper" epoch="0" version="1.14.68" release="150400.3.40.1" arch="aarch64"/>"#,
            "",
        ));
        assert!(m.starts_with("update #2 (SUSE-FU-2024:0002-1, line 31): no binary package in its <pkglist>"), "{m}");
        let only_source = MODERN.replace("x86_64\">", "src\">").replace("i686\">", "src\">");
        let only_source = only_source
            .replace(".x86_64.rpm", ".src.rpm")
            .replace(".i686.rpm", ".src.rpm")
            .replace(".noarch.rpm", ".src.rpm");
        let (_, m) = fail(&only_source);
        assert!(m.starts_with("update #1 (ALSA-2024:0001, line 3): no binary package"), "{m}");
        let (_, m) = fail(&MODERN.replace("type=\"enhancement\"", "type=\"hotfix\""));
        assert!(
            m.starts_with("update #2 (SUSE-FU-2024:0002-1, line 31): type \"hotfix\" is not an advisory type"),
            "{m}"
        );
        let (_, m) = fail(&MODERN.replace("<severity>moderate", "<severity>severe"));
        assert!(m.contains("<severity> \"severe\" is not one of"), "{m}");
        let (_, m) =
            fail(&MODERN.replace("<filename>openssl-libs-3.0.7-25.el9_3.x86_64.rpm", "<filename>openssl-libs.rpm"));
        assert!(
            m.contains(
                "package #1 (openssl-libs.rpm): <filename> \"openssl-libs.rpm\" is not name-version-release.arch.rpm"
            ),
            "{m}"
        );
        let (_, m) = fail(&MODERN.replace("<id>ALSA-2024:0001</id>", ""));
        assert!(m.starts_with("update #1 (line 3): no <id>"), "{m}");
        let (_, m) = fail(&MODERN.replace(r#"<issued date="1704067200"/>"#, r#"<issued date="last tuesday"/>"#));
        assert!(m.contains("<issued date=\"last tuesday\"> is not a date"), "{m}");
        let (_, m) = fail("<repomd><data type=\"primary\"/></repomd>");
        assert!(m.starts_with("this is a repository's repomd.xml"), "{m}");
        let (_, m) = fail("<html>rate limited</html>");
        assert!(m.contains("root element is <html>"), "{m}");
    }

    #[test]
    fn a_repository_directory_is_read_through_repomd_and_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("repodata")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(MODERN.as_bytes()).unwrap();
        let bytes = gz.finish().unwrap();
        let name = "0123-updateinfo.xml.gz";
        std::fs::write(dir.path().join("repodata").join(name), &bytes).unwrap();
        let repomd = |sum: &str| {
            format!(
                r#"<?xml version="1.0"?><repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision>
<data type="primary"><location href="repodata/p.xml.gz"/></data>
<data type="updateinfo"><checksum type="sha256">{sum}</checksum><location href="repodata/{name}"/></data></repomd>"#
            )
        };
        let sum = hex::encode(sha2::Sha256::digest(&bytes));
        std::fs::write(dir.path().join("repodata/repomd.xml"), repomd(&sum)).unwrap();
        let fetcher = Fetcher::new(dir.path(), std::time::Duration::from_secs(5));
        let source = |p: &Path| CatalogSource { file: Some(p.display().to_string()), ..Default::default() };
        for p in [dir.path().to_path_buf(), dir.path().join("repodata/repomd.xml")] {
            let fetched = fetch(&fetcher, &source(&p), None).unwrap();
            assert!(fetched.name.ends_with(name), "{}", fetched.name);
            assert_eq!(parse(&fetched.name, &fetched.bytes).unwrap(), parse("x", MODERN.as_bytes()).unwrap());
        }
        std::fs::write(dir.path().join("repodata/repomd.xml"), repomd(&"0".repeat(64))).unwrap();
        let (source_name, m) = message(fetch(&fetcher, &source(dir.path()), None).unwrap_err());
        assert!(source_name.ends_with(name));
        assert!(m.contains("but repomd.xml lists 0000") && m.contains("sync again"), "{m}");
        std::fs::write(dir.path().join("repodata/repomd.xml"), "<repomd><data type=\"primary\"/></repomd>").unwrap();
        let (_, m) = message(fetch(&fetcher, &source(dir.path()), None).unwrap_err());
        assert!(m.contains("lists no updateinfo"), "{m}");
    }
}
