//! Debian catalog importers: `debian-packages` turns a repository `Packages` index into one
//! update per source package version, `debian-dsa` turns the security tracker's DSA list into
//! one update per advisory and release. DSA rules test *source* packages: a client reports
//! `src:<source>` → installed source version among its package facts, from each entry of
//! /var/lib/dpkg/status (`Source: name (version)`, else `Source: name` with `Version`, else
//! `Package` with `Version`).

use std::collections::{HashMap, HashSet};

use jiff::civil::Date;

use crate::catalog::{Applicability, PackageTest, Rule, Severity, Update, UpdateFile};

/// Options for [`parse_packages`].
#[derive(Clone, Debug, Default)]
pub struct PackagesOptions {
    /// Product name for `products`, e.g. "Debian 12 (bookworm)"; default derived from the
    /// source name (a Debian codename in it, e.g. `bookworm-security`) or "Debian".
    pub product: Option<String>,
    /// Only these architectures (empty: all; "all" packages always kept).
    pub architectures: Vec<String>,
    /// Release date to stamp updates with when the index has none (the index has no
    /// dates). Default 1970-01-01: parsing must be deterministic, so it never reads the
    /// clock; a sync passes its own date.
    pub released: Option<Date>,
}

/// Options for [`parse_dsa`].
#[derive(Clone, Debug, Default)]
pub struct DsaOptions {
    /// Keep only these releases (e.g. ["bookworm"]); empty: all.
    pub releases: Vec<String>,
}

/// A Debian repository `Packages` index (plain text; the caller decompresses) → one
/// update per (source package, version) that carries its binary packages.
///
/// - id `<source>_<source version>`, kb `<source> <source version>`, title
///   `<source> <version>: <description>` (the description of the binary named like the
///   source, else of the first binary in index order).
/// - Classification "Security Updates" when the source name or product mentions
///   "security", else "Updates"; severity Unspecified (the index has none).
/// - Applicability over binary packages: installable when some binary is installed below
///   its version in this group; installed when some binary is installed and none is below.
/// - Supersedes every lower version of the same source present in the index.
/// - Files: one per binary; `url` is the index's `Filename`, relative to the repository
///   root — the caller prefixes the mirror URL.
/// - Reboot required when a binary is a kernel image (`linux-image-*`, not debug
///   symbols), `libc6` or `systemd`: the running kernel, the C library and PID 1 are only
///   replaced by a restart.
pub fn parse_packages(source: &str, text: &[u8], options: &PackagesOptions) -> crate::Result<Vec<Update>> {
    let text = as_text(source, text, "Packages index")?;
    let product = options.product.clone().unwrap_or_else(|| product_from_source(source));
    let security =
        source.to_ascii_lowercase().contains("security") || product.to_ascii_lowercase().contains("security");
    let classification = if security { "Security Updates" } else { "Updates" };
    let released = options.released.unwrap_or(Date::constant(1970, 1, 1));

    // Group the binaries by (source, source version), keeping index order.
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut checked_versions: HashSet<&str> = HashSet::new();
    for stanza in Stanzas::new(text) {
        let stanza = stanza.map_err(|m| catalog_error(source, m))?;
        let Some(binary) =
            stanza.into_binary(&options.architectures, &mut checked_versions).map_err(|m| catalog_error(source, m))?
        else {
            continue;
        };
        let key = (binary.source, binary.source_version);
        let g = *group_of.entry(key).or_insert_with(|| {
            groups.push(Group { source: key.0, version: key.1, binaries: Vec::new() });
            groups.len() - 1
        });
        groups[g].binaries.push(binary);
    }

    // Order versions of each source (Debian order) for supersedence and output order.
    let parsed: Vec<debversion::Version> =
        groups.iter().map(|g| g.version.parse().expect("source versions were checked while parsing")).collect();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| groups[a].source.cmp(groups[b].source).then_with(|| parsed[a].cmp(&parsed[b])));

    let mut updates = Vec::with_capacity(groups.len());
    let mut run_start = 0;
    for (pos, &g) in order.iter().enumerate() {
        if groups[order[run_start]].source != groups[g].source {
            run_start = pos;
        }
        // Everything earlier in this source's run is a lower (or, spelled differently, an
        // equal) version; only strictly lower ones are superseded.
        let supersedes = order[run_start..pos]
            .iter()
            .filter(|&&older| parsed[older] < parsed[g])
            .map(|&older| groups[older].id())
            .collect();
        updates.push(groups[g].to_update(&product, classification, released, supersedes));
    }
    Ok(updates)
}

/// The Debian security tracker's DSA list (data/DSA/list format) → one update per
/// advisory and release.
///
/// - id `<DSA id>-<release>`, kb the DSA id, title the header text after the date,
///   classification "Security Updates", severity Unspecified, products
///   `Debian (<release>)`, released the header date, CVEs sorted.
/// - A release line with `<not-affected>`, `<unfixed>` or any other `<marker>` instead of a
///   version fixes nothing: it gives no update (nor a package in one). Text after the
///   version (`(bug #1234; medium)`) is a note and ignored.
/// - Applicability over source packages (`src:<name>`, see the module doc): one package →
///   installable below the fixed version, installed at or above it. Several packages in
///   one release → installable when any is installed below its fixed version, installed
///   when some is installed and none is below. A package listed twice keeps the higher
///   version.
/// - Supersedence, per release: an update supersedes another when it fixes every package
///   the other fixes at an equal or higher version, and one at a higher version — for
///   one-package advisories, a higher fixed version of the same source (so a regression
///   update `DSA-5356-2` supersedes `DSA-5356-1`). A multi-package advisory is not
///   superseded by one fixing only part of its packages.
/// - Reboot required for kernel, C library and systemd sources (`linux`, `linux-2.6*`,
///   `linux-signed-*`, `kernel-image-*`, `glibc`, `eglibc`, `systemd`).
pub fn parse_dsa(source: &str, text: &[u8], options: &DsaOptions) -> crate::Result<Vec<Update>> {
    let text = as_text(source, text, "DSA list")?;
    let advisories = parse_advisories(text).map_err(|m| catalog_error(source, m))?;

    let wanted = |release: &str| options.releases.is_empty() || options.releases.iter().any(|r| r == release);
    let mut updates = Vec::new();
    // For each update (same index): the (package, fixed version) pairs it fixes.
    let mut fixes_of: Vec<Vec<PackageFix>> = Vec::new();
    let mut releases_of: Vec<&str> = Vec::new();
    for advisory in &advisories {
        let mut releases: Vec<&str> = Vec::new();
        for fix in &advisory.fixes {
            if !releases.contains(&fix.release) {
                releases.push(fix.release);
            }
        }
        for release in releases.into_iter().filter(|r| wanted(r)) {
            let mut fixes: Vec<PackageFix> = Vec::new();
            for fix in advisory.fixes.iter().filter(|f| f.release == release) {
                let Some(version) = &fix.version else { continue };
                match fixes.iter_mut().find(|(p, _, _)| *p == fix.package) {
                    Some(existing) if *existing.1 < *version => *existing = (fix.package, version, fix.text),
                    Some(_) => {}
                    None => fixes.push((fix.package, version, fix.text)),
                }
            }
            if fixes.is_empty() {
                continue;
            }
            updates.push(advisory.to_update(release, &fixes));
            fixes_of.push(fixes);
            releases_of.push(release);
        }
    }

    // Candidates: a higher fixed version of the same (release, package).
    let mut by_package: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (u, fixes) in fixes_of.iter().enumerate() {
        for (package, _, _) in fixes {
            by_package.entry((releases_of[u], package)).or_default().push(u);
        }
    }
    let fixed = |u: usize, package: &str| fixes_of[u].iter().find(|(p, _, _)| *p == package).map(|(_, v, _)| *v);
    let mut supersedes: Vec<Vec<usize>> = vec![Vec::new(); updates.len()];
    for ((_, package), members) in &by_package {
        for &newer in members {
            for &older in members {
                let (Some(n), Some(o)) = (fixed(newer, package), fixed(older, package)) else { continue };
                if n > o
                    && !supersedes[newer].contains(&older)
                    && fixes_of[older].iter().all(|(p, v, _)| fixed(newer, p).is_some_and(|nv| nv >= *v))
                {
                    supersedes[newer].push(older);
                }
            }
        }
    }
    let ids: Vec<String> = updates.iter().map(|u| u.id.clone()).collect();
    for (update, older) in updates.iter_mut().zip(supersedes) {
        update.supersedes = older.into_iter().map(|o| ids[o].clone()).collect();
        update.supersedes.sort();
    }
    Ok(updates)
}

/// Packages indexes come as apt stores them (gzip, xz, lz4, zstd, or plain).
pub use super::compression::decompress;

fn catalog_error(source: &str, message: impl Into<String>) -> crate::Error {
    crate::Error::Catalog { source_name: source.to_string(), message: message.into() }
}

/// The text as UTF-8, or an error saying where it is not (and whether it is still
/// compressed, the usual cause).
fn as_text<'a>(source: &str, text: &'a [u8], what: &str) -> crate::Result<&'a str> {
    if let Some(kind) = super::compression::detect(text) {
        return Err(catalog_error(
            source,
            format!("byte offset 0: the {what} is {}-compressed; pass it through decompress first", kind.name()),
        ));
    }
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    std::str::from_utf8(text).map_err(|e| {
        let offset = e.valid_up_to();
        let line = 1 + text[..offset].iter().filter(|&&b| b == b'\n').count();
        catalog_error(
            source,
            format!("byte offset {offset} (line {line}): the {what} is not valid UTF-8; check the file is not corrupt or in another encoding"),
        )
    })
}

/// "Debian 12 (bookworm)" from a source name mentioning a codename, else "Debian".
fn product_from_source(source: &str) -> String {
    const RELEASES: &[(&str, &str)] = &[
        ("woody", "3.0"),
        ("sarge", "3.1"),
        ("etch", "4"),
        ("lenny", "5"),
        ("squeeze", "6"),
        ("wheezy", "7"),
        ("jessie", "8"),
        ("stretch", "9"),
        ("buster", "10"),
        ("bullseye", "11"),
        ("bookworm", "12"),
        ("trixie", "13"),
        ("forky", "14"),
        ("duke", "15"),
    ];
    let lower = source.to_ascii_lowercase();
    for token in lower.split(|c: char| !c.is_ascii_alphanumeric()) {
        if let Some((name, number)) = RELEASES.iter().find(|(name, _)| *name == token) {
            return format!("Debian {number} ({name})");
        }
        if token == "sid" || token == "unstable" {
            return "Debian unstable (sid)".to_string();
        }
    }
    "Debian".to_string()
}

/// One binary package of a Packages index, as far as the importer needs it.
struct Binary<'a> {
    name: &'a str,
    version: &'a str,
    source: &'a str,
    source_version: &'a str,
    description: &'a str,
    file: Option<UpdateFile>,
}

/// The binaries built from one (source, source version).
struct Group<'a> {
    source: &'a str,
    version: &'a str,
    binaries: Vec<Binary<'a>>,
}

impl Group<'_> {
    fn id(&self) -> String {
        format!("{}_{}", self.source, self.version)
    }

    fn to_update(&self, product: &str, classification: &str, released: Date, supersedes: Vec<String>) -> Update {
        let described = self.binaries.iter().find(|b| b.name == self.source).unwrap_or(&self.binaries[0]);
        let title = if described.description.is_empty() {
            format!("{} {}", self.source, self.version)
        } else {
            format!("{} {}: {}", self.source, self.version, described.description)
        };
        // One test per binary name; when several stanzas share a name (indexes of several
        // architectures concatenated, binNMUs on one of them), the lowest version counts:
        // a system at that version has the fix for its architecture.
        let mut packages: Vec<(&str, &str)> = self.binaries.iter().map(|b| (b.name, b.version)).collect();
        packages.sort_by(|a, b| a.0.cmp(b.0).then_with(|| super::applicability::compare_debian(a.1, b.1)));
        packages.dedup_by(|later, earlier| later.0 == earlier.0);
        let mut files: Vec<UpdateFile> = Vec::new();
        for file in self.binaries.iter().filter_map(|b| b.file.as_ref()) {
            if !files.iter().any(|f| f.url == file.url) {
                files.push(file.clone());
            }
        }
        files.sort_by(|a, b| a.url.cmp(&b.url));
        Update {
            id: self.id(),
            kb: Some(format!("{} {}", self.source, self.version)),
            title,
            classification: classification.to_string(),
            severity: Severity::Unspecified,
            products: vec![product.to_string()],
            released,
            supersedes,
            expired: false,
            reboot_required: packages.iter().any(|(name, _)| binary_needs_reboot(name)),
            max_run_time: crate::time::Duration::from_mins(10),
            cves: Vec::new(),
            applicability: package_rules(&packages),
            files,
        }
    }
}

fn binary_needs_reboot(name: &str) -> bool {
    (name.starts_with("linux-image-") && !name.ends_with("-dbg") && !name.ends_with("-dbgsym"))
        || name == "libc6"
        || name == "systemd"
}

fn source_needs_reboot(name: &str) -> bool {
    matches!(name, "linux" | "glibc" | "eglibc" | "systemd")
        || name.starts_with("linux-2.6")
        || name.starts_with("linux-signed-")
        || name.starts_with("kernel-image-")
}

/// Rules over packages, each with the version that fixes it: installable when one is
/// installed below its version; installed when one is installed and none is below.
fn package_rules(packages: &[(&str, &str)]) -> Applicability {
    let test = |name: &str, below: Option<&str>, at_least: Option<&str>| {
        Rule::Package(PackageTest {
            name: name.to_string(),
            version_below: below.map(str::to_string),
            version_at_least: at_least.map(str::to_string),
        })
    };
    if let [(name, version)] = packages {
        return Applicability {
            is_installable: test(name, Some(version), None),
            is_installed: test(name, None, Some(version)),
            prerequisites: Vec::new(),
        };
    }
    let below: Vec<Rule> = packages.iter().map(|(name, version)| test(name, Some(version), None)).collect();
    let present: Vec<Rule> = packages.iter().map(|(name, _)| test(name, None, None)).collect();
    Applicability {
        is_installable: Rule::Any(below.clone()),
        is_installed: Rule::All(vec![Rule::Any(present), Rule::Not(Box::new(Rule::Any(below)))]),
        prerequisites: Vec::new(),
    }
}

fn check_version(version: &str, field: &str, line: usize) -> Result<(), String> {
    parse_version(version).map(|_| ()).map_err(|e| {
        format!("line {line}: {field} {version:?} is not a Debian version ({e}); fix the index or report it to the repository")
    })
}

/// A Debian version, with dpkg's checks that debversion leaves out: the epoch is a number
/// and the upstream version is not empty.
fn parse_version(version: &str) -> Result<debversion::Version, String> {
    let upstream = match version.split_once(':') {
        Some((epoch, _)) if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(format!("the epoch {epoch:?} is not a number"));
        }
        Some((_, rest)) => rest,
        None => version,
    };
    if upstream.is_empty() || upstream.starts_with('-') {
        return Err("the upstream version is empty".to_string());
    }
    version.parse::<debversion::Version>().map_err(|e| e.to_string())
}

/// The fields of one stanza the importer uses, each with the line it is on.
#[derive(Default)]
struct Stanza<'a> {
    line: usize,
    package: Option<(&'a str, usize)>,
    source: Option<(&'a str, usize)>,
    version: Option<(&'a str, usize)>,
    architecture: Option<(&'a str, usize)>,
    filename: Option<(&'a str, usize)>,
    size: Option<(&'a str, usize)>,
    sha256: Option<(&'a str, usize)>,
    description: Option<(&'a str, usize)>,
}

impl<'a> Stanza<'a> {
    fn set(&mut self, name: &str, value: &'a str, line: usize) -> Result<(), String> {
        const FIELDS: [&str; 8] =
            ["Package", "Source", "Version", "Architecture", "Filename", "Size", "SHA256", "Description"];
        let Some(canonical) = FIELDS.iter().find(|f| f.eq_ignore_ascii_case(name)) else { return Ok(()) };
        let slot = match *canonical {
            "Package" => &mut self.package,
            "Source" => &mut self.source,
            "Version" => &mut self.version,
            "Architecture" => &mut self.architecture,
            "Filename" => &mut self.filename,
            "Size" => &mut self.size,
            "SHA256" => &mut self.sha256,
            _ => &mut self.description,
        };
        if let Some((_, first)) = slot {
            return Err(format!(
                "line {line}: field {canonical} appears twice in the stanza starting at line {} (first on line {first}); \
                 a stanza has each field once — is a blank line missing between two packages?",
                self.line
            ));
        }
        *slot = Some((value, line));
        Ok(())
    }

    /// The binary this stanza describes; None when the architecture filter drops it.
    fn into_binary(
        self,
        architectures: &[String],
        checked: &mut HashSet<&'a str>,
    ) -> Result<Option<Binary<'a>>, String> {
        let missing = |field: &str| {
            format!(
                "line {}: the stanza starting here has no {field} field; every stanza of a Packages index \
                 needs Package and Version (is this a Packages index?)",
                self.line
            )
        };
        let (name, _) = self.package.filter(|(v, _)| !v.is_empty()).ok_or_else(|| missing("Package"))?;
        let (version, version_line) = self.version.filter(|(v, _)| !v.is_empty()).ok_or_else(|| missing("Version"))?;
        if let Some((arch, _)) = self.architecture {
            if !architectures.is_empty() && arch != "all" && !architectures.iter().any(|a| a == arch) {
                return Ok(None);
            }
        } else if !architectures.is_empty() {
            return Ok(None);
        }
        if checked.insert(version) {
            check_version(version, "Version", version_line)?;
        }
        let (source, source_version) = match self.source {
            None => (name, version),
            Some((value, line)) => match value.split_once('(') {
                None => (value, version),
                Some((source, rest)) => {
                    let Some(source_version) = rest.strip_suffix(')').map(str::trim) else {
                        return Err(format!(
                            "line {line}: Source {value:?} should be `name` or `name (version)`; the closing parenthesis is missing"
                        ));
                    };
                    if checked.insert(source_version) {
                        check_version(source_version, "Source version", line)?;
                    }
                    (source.trim_end(), source_version)
                }
            },
        };
        let file = match self.filename {
            None => None,
            Some((filename, _)) => {
                let (sha256, sha_line) = self.sha256.ok_or_else(|| {
                    format!(
                        "line {}: package {name} has a Filename but no SHA256; patchops verifies content by sha256, \
                         use an index with SHA256 fields",
                        self.line
                    )
                })?;
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("line {sha_line}: SHA256 {sha256:?} of package {name} is not 64 hex digits"));
                }
                let (size, size_line) = self
                    .size
                    .ok_or_else(|| format!("line {}: package {name} has a Filename but no Size", self.line))?;
                let size = size.parse::<u64>().map_err(|_| {
                    format!("line {size_line}: Size {size:?} of package {name} is not a number of bytes")
                })?;
                let basename = filename.rsplit('/').next().unwrap_or(filename);
                Some(UpdateFile {
                    name: basename.to_string(),
                    url: filename.to_string(),
                    sha256: sha256.to_ascii_lowercase(),
                    size,
                })
            }
        };
        Ok(Some(Binary {
            name,
            version,
            source,
            source_version,
            description: self.description.map_or("", |(d, _)| d),
            file,
        }))
    }
}

/// The stanzas of a deb822 text (blank-line separated `Field: value` paragraphs with
/// space-indented continuation lines).
struct Stanzas<'a> {
    lines: std::iter::Enumerate<std::str::Split<'a, char>>,
    done: bool,
}

impl<'a> Stanzas<'a> {
    fn new(text: &'a str) -> Self {
        Stanzas { lines: text.split('\n').enumerate(), done: false }
    }
}

impl<'a> Iterator for Stanzas<'a> {
    type Item = Result<Stanza<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut stanza = Stanza::default();
        for (i, raw) in self.lines.by_ref() {
            let number = i + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.bytes().all(|b| b == b' ' || b == b'\t') {
                if stanza.line != 0 {
                    return Some(Ok(stanza));
                }
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if stanza.line == 0 {
                    self.done = true;
                    return Some(Err(format!(
                        "line {number}: a continuation line (starting with a space) before any field; \
                         a stanza starts with `Field: value`"
                    )));
                }
                continue;
            }
            if stanza.line == 0 {
                stanza.line = number;
            }
            let Some((name, value)) = line.split_once(':').filter(|(name, _)| !name.is_empty() && !name.contains(' '))
            else {
                self.done = true;
                return Some(Err(format!(
                    "line {number}: expected `Field: value` or a continuation line starting with a space, found {:?}",
                    truncate(line, 60)
                )));
            };
            if let Err(message) = stanza.set(name, value.trim(), number) {
                self.done = true;
                return Some(Err(message));
            }
        }
        self.done = true;
        (stanza.line != 0).then_some(Ok(stanza))
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// One advisory of the DSA list.
struct Advisory<'a> {
    id: &'a str,
    title: &'a str,
    released: Date,
    cves: Vec<&'a str>,
    fixes: Vec<Fix<'a>>,
}

/// A source package, its fixed version (parsed, and as written) in one release.
type PackageFix<'a, 'v> = (&'a str, &'v debversion::Version, &'a str);

/// One `[release] - package version` line; `version` None for `<not-affected>` and the
/// other markers.
struct Fix<'a> {
    release: &'a str,
    package: &'a str,
    version: Option<debversion::Version>,
    text: &'a str,
}

impl Advisory<'_> {
    fn to_update(&self, release: &str, fixes: &[PackageFix]) -> Update {
        let names: Vec<String> = fixes.iter().map(|(package, _, _)| format!("src:{package}")).collect();
        let packages: Vec<(&str, &str)> =
            names.iter().zip(fixes).map(|(name, (_, _, text))| (name.as_str(), *text)).collect();
        let mut cves: Vec<String> = self.cves.iter().map(|c| c.to_string()).collect();
        cves.sort();
        cves.dedup();
        Update {
            id: format!("{}-{release}", self.id),
            kb: Some(self.id.to_string()),
            title: self.title.to_string(),
            classification: "Security Updates".to_string(),
            severity: Severity::Unspecified,
            products: vec![format!("Debian ({release})")],
            released: self.released,
            supersedes: Vec::new(),
            expired: false,
            reboot_required: fixes.iter().any(|(package, _, _)| source_needs_reboot(package)),
            max_run_time: crate::time::Duration::from_mins(10),
            cves,
            applicability: package_rules(&packages),
            files: Vec::new(),
        }
    }
}

fn parse_advisories(text: &str) -> Result<Vec<Advisory<'_>>, String> {
    let mut advisories: Vec<Advisory> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let number = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            advisories.push(parse_header(line).map_err(|m| format!("line {number}: {m}"))?);
            continue;
        }
        let Some(advisory) = advisories.last_mut() else {
            return Err(format!(
                "line {number}: an indented line before the first advisory header `[DD Mon YYYY] DSA-NNNN-N package - title`"
            ));
        };
        let body = line.trim();
        if let Some(ids) = body.strip_prefix('{') {
            let ids = ids
                .strip_suffix('}')
                .ok_or_else(|| format!("line {number}: a CVE list `{{CVE-… CVE-…}}` without its closing brace"))?;
            advisory.cves.extend(ids.split_whitespace());
        } else if body.starts_with('[') {
            advisory.fixes.push(parse_fix(body).map_err(|m| format!("line {number}: {m}"))?);
        } else if !body.starts_with("NOTE:") {
            return Err(format!(
                "line {number}: expected `{{CVE ids}}`, `[release] - package version` or `NOTE: …` under advisory {}, found {:?}",
                advisory.id,
                truncate(body, 60)
            ));
        }
    }
    Ok(advisories)
}

/// `[29 Mar 2023] DSA-5380-1 xorg-server - security update`
fn parse_header(line: &str) -> Result<Advisory<'_>, String> {
    let expected = "expected an advisory header `[DD Mon YYYY] DSA-NNNN-N package - title`";
    let (date, rest) = line
        .strip_prefix('[')
        .and_then(|l| l.split_once(']'))
        .ok_or_else(|| format!("{expected}, found {:?}", truncate(line, 60)))?;
    let released = parse_date(date).ok_or_else(|| format!("{expected}; {date:?} is not a date like `29 Mar 2023`"))?;
    let title = rest.trim();
    let id = title.split_whitespace().next().unwrap_or("");
    let well_formed = id.split_once('-').is_some_and(|(kind, number)| {
        !kind.is_empty()
            && kind.bytes().all(|b| b.is_ascii_uppercase())
            && number.split('-').count() <= 2
            && number.split('-').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if !well_formed {
        return Err(format!("{expected}; {id:?} is not an advisory id like DSA-5380-1"));
    }
    Ok(Advisory { id, title, released, cves: Vec::new(), fixes: Vec::new() })
}

fn parse_date(text: &str) -> Option<Date> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let mut parts = text.split_whitespace();
    let day: i8 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as i8 + 1;
    let year: i16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Date::new(year, month, day).ok()
}

/// `[bullseye] - xorg-server 2:1.20.11-1+deb11u6`, `[lenny] - vlc <not-affected> (note)`
fn parse_fix(body: &str) -> Result<Fix<'_>, String> {
    let expected = "expected `[release] - package fixed-version`";
    let (release, rest) = body[1..].split_once(']').ok_or_else(|| format!("{expected}; the `]` is missing"))?;
    if release.is_empty() || !release.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("{expected}; {release:?} is not a release codename"));
    }
    let rest = rest
        .trim_start()
        .strip_prefix('-')
        .ok_or_else(|| format!("{expected}; the ` - ` after [{release}] is missing"))?;
    let mut words = rest.split_whitespace();
    let (Some(package), Some(version)) = (words.next(), words.next()) else {
        return Err(format!("{expected}; found {:?}", truncate(body, 60)));
    };
    if version.starts_with('<') {
        return Ok(Fix { release, package, version: None, text: version });
    }
    let parsed = parse_version(version).map_err(|e| {
        format!("{expected}; {version:?} (the fixed version of {package} in {release}) is not a Debian version ({e})")
    })?;
    Ok(Fix { release, package, version: Some(parsed), text: version })
}

#[cfg(test)]
mod test {
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::time::Instant;

    use super::*;
    use crate::catalog::{Catalog, Facts, ScanVerdict};

    const SECURITY_INDEX: &str =
        "/var/lib/apt/lists/deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages.lz4";
    const MAIN_INDEX: &str = "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4";
    const DSA_LIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/debian/DSA-list.gz");
    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/debian/Packages");

    fn fixture(source: &str, architectures: &[&str]) -> Vec<Update> {
        let text = std::fs::read(FIXTURE).unwrap();
        let options = PackagesOptions {
            architectures: architectures.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        parse_packages(source, &text, &options).unwrap()
    }

    fn find<'a>(updates: &'a [Update], id: &str) -> &'a Update {
        updates.iter().find(|u| u.id == id).unwrap_or_else(|| panic!("no update {id}"))
    }

    /// The (package, fixed version) pairs an update's installable rule tests.
    fn fixed_versions(update: &Update) -> Vec<(String, String)> {
        let pair = |rule: &Rule| match rule {
            Rule::Package(PackageTest { name, version_below: Some(v), version_at_least: None }) => {
                (name.clone(), v.clone())
            }
            other => panic!("unexpected rule {other:?}"),
        };
        match &update.applicability.is_installable {
            Rule::Any(rules) => rules.iter().map(pair).collect(),
            rule => vec![pair(rule)],
        }
    }

    fn verdict(update: &Update, packages: &[(&str, &str)]) -> ScanVerdict {
        update.applicability.evaluate(&Facts::from_packages(packages))
    }

    fn message(result: crate::Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(crate::Error::Catalog { source_name, message }) => {
                assert_eq!(source_name, "test");
                message
            }
            other => panic!("expected a catalog error, got {other:?}"),
        }
    }

    fn dsa_list() -> Option<Vec<u8>> {
        // The list is part of the repository (tests/data): its absence is a failure.
        let bytes = std::fs::read(DSA_LIST).unwrap_or_else(|e| panic!("{DSA_LIST}: {e}"));
        Some(decompress("debian-dsa", &bytes).unwrap())
    }

    fn date(text: &str) -> Date {
        text.parse().unwrap()
    }

    /// The distinct (source, source version) pairs of an index for the given
    /// architectures, read independently of `parse_packages`: one line per stanza field.
    fn source_versions_by_hand(text: &str, architectures: &[&str]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")).map(str::trim))
            };
            let (Some(package), Some(version), Some(arch)) =
                (field("Package"), field("Version"), field("Architecture"))
            else {
                continue;
            };
            if arch != "all" && !architectures.contains(&arch) {
                continue;
            }
            let (source, source_version) = match field("Source") {
                Some(s) => match s.split_once(' ') {
                    Some((name, v)) => (name, v.trim_matches(|c| c == '(' || c == ')')),
                    None => (s, version),
                },
                None => (package, version),
            };
            out.insert(format!("{source}_{source_version}"));
        }
        out
    }

    /// Checks that hold for any version of a bookworm-security index.
    fn check_bookworm_security(updates: &[Update]) -> &Update {
        assert!(updates.len() > 100, "{} updates", updates.len());
        for u in updates {
            assert_eq!(u.products, ["Debian 12 (bookworm)"]);
            assert_eq!(u.classification, "Security Updates");
            assert!(u.applicability.problems().is_empty(), "{}: {:?}", u.id, u.applicability.problems());
            assert!(!u.files.is_empty(), "{}", u.id);
        }
        let catalog = Catalog::new(1, updates.to_vec(), &HashMap::new());
        let current: Vec<&Update> = updates
            .iter()
            .filter(|u| u.id.starts_with("openssl_") && !catalog.is_superseded(catalog.index_of(&u.id).unwrap()))
            .collect();
        assert_eq!(current.len(), 1, "one current openssl");
        let openssl = current[0];
        let version = openssl.id.strip_prefix("openssl_").unwrap();
        let binaries = fixed_versions(openssl);
        assert!(binaries.iter().any(|(n, _)| n == "libssl3"), "{binaries:?}");
        assert!(binaries.iter().all(|(_, v)| v == version));
        assert!(openssl.files.iter().all(|f| f.url.starts_with("pool/updates/main/o/openssl/")));
        assert!(!openssl.reboot_required);
        let kernels: Vec<&Update> = updates.iter().filter(|u| u.id.starts_with("linux-signed-amd64_")).collect();
        assert!(kernels.iter().all(|u| u.reboot_required));
        openssl
    }

    const SECURITY_COPY: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/debian/bookworm-security-main-amd64-Packages-2026-12-01.xz");

    #[test]
    fn a_committed_bookworm_security_index_parses_into_one_update_per_source_version() {
        let compressed = std::fs::read(SECURITY_COPY).unwrap_or_else(|e| panic!("{SECURITY_COPY}: {e}"));
        let text = decompress("bookworm-security", &compressed).unwrap();
        let options = PackagesOptions { architectures: vec!["amd64".into()], ..Default::default() };
        let updates = parse_packages("bookworm-security", &text, &options).unwrap();
        let openssl = check_bookworm_security(&updates);

        let by_hand = source_versions_by_hand(std::str::from_utf8(&text).unwrap(), &["amd64"]);
        let ids: BTreeSet<String> = updates.iter().map(|u| u.id.clone()).collect();
        assert_eq!(ids, by_hand);
        // Counted by hand in this copy (awk over the stanzas, amd64 and all).
        assert_eq!(updates.len(), 426, "distinct (source, source version) pairs");
        assert_eq!(openssl.id, "openssl_3.0.22-1~deb12u2");
        assert_eq!(openssl.kb.as_deref(), Some("openssl 3.0.22-1~deb12u2"));
        assert_eq!(openssl.title, "openssl 3.0.22-1~deb12u2: Secure Sockets Layer toolkit - cryptographic utility");
        let names: Vec<String> = fixed_versions(openssl).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["libssl-dev", "libssl-doc", "libssl3", "openssl"]);
        let libssl3 = openssl.files.iter().find(|f| f.name == "libssl3_3.0.22-1~deb12u2_amd64.deb").unwrap();
        assert_eq!(libssl3.url, "pool/updates/main/o/openssl/libssl3_3.0.22-1~deb12u2_amd64.deb");
        assert_eq!(libssl3.sha256, "cb4784740daa9b3b0eaea2b444bbefa686794afbbf3d678d238c1fd9875f2efd");
        assert_eq!(libssl3.size, 2039888);
        // linux-signed-amd64: ten source versions; binaries carry their own version.
        let kernels = updates.iter().filter(|u| u.id.starts_with("linux-signed-amd64_")).count();
        assert_eq!(kernels, 10);
        let newest = find(&updates, "linux-signed-amd64_6.1.192+3");
        assert_eq!(newest.supersedes.len(), 9);
        assert_eq!(newest.supersedes[0], "linux-signed-amd64_6.1.172+1");
        let oldest = find(&updates, "linux-signed-amd64_6.1.172+1");
        assert!(oldest.supersedes.is_empty());
        assert!(fixed_versions(oldest).contains(&("linux-image-6.1.0-48-amd64".into(), "6.1.172-1".into())));
        assert_eq!(verdict(oldest, &[("linux-image-6.1.0-48-amd64", "6.1.170-1")]), ScanVerdict::Missing);
        assert_eq!(verdict(oldest, &[("linux-image-6.1.0-48-amd64", "6.1.172-1")]), ScanVerdict::Installed);
    }

    /// The machine's live index changes as Debian publishes updates: only relations that
    /// hold for every version of it are checked — the updates are exactly the index's
    /// (source, version) pairs, and supersedence follows `dpkg --compare-versions`.
    #[test]
    fn the_bookworm_security_index_of_this_machine_agrees_with_dpkg() {
        let Ok(compressed) = std::fs::read(SECURITY_INDEX) else {
            println!("note: {SECURITY_INDEX} is absent (no apt lists on this machine); skipped");
            return;
        };
        let start = Instant::now();
        let text = decompress("bookworm-security", &compressed).unwrap();
        let decompressed = start.elapsed();
        let options = PackagesOptions { architectures: vec!["amd64".into()], ..Default::default() };
        let updates = parse_packages("bookworm-security", &text, &options).unwrap();
        println!(
            "bookworm-security index: {} bytes lz4, {} bytes text, decompress {:?}, parse {:?}, {} updates",
            compressed.len(),
            text.len(),
            decompressed,
            start.elapsed() - decompressed,
            updates.len()
        );
        check_bookworm_security(&updates);
        let by_hand = source_versions_by_hand(std::str::from_utf8(&text).unwrap(), &["amd64"]);
        let ids: BTreeSet<String> = updates.iter().map(|u| u.id.clone()).collect();
        assert_eq!(ids, by_hand);

        // Every supersedence pair is ordered the same way by dpkg (one dpkg call per pair,
        // bounded to the first 200 pairs).
        let version = |id: &str| id.split_once('_').map(|(_, v)| v.to_string()).unwrap();
        let pairs: Vec<(String, String)> = updates
            .iter()
            .flat_map(|u| u.supersedes.iter().map(move |old| (version(&u.id), version(old))))
            .take(200)
            .collect();
        assert!(!pairs.is_empty(), "some source has several versions in the index");
        for (newer, older) in pairs {
            let status = std::process::Command::new("dpkg")
                .args(["--compare-versions", &newer, "gt", &older])
                .status()
                .expect("dpkg runs");
            assert!(status.success(), "dpkg does not order {newer} after {older}");
        }
    }

    #[test]
    fn the_full_bookworm_main_index_of_this_machine_parses() {
        let Ok(compressed) = std::fs::read(MAIN_INDEX) else {
            println!("note: {MAIN_INDEX} is absent (no apt lists on this machine); skipped");
            return;
        };
        let start = Instant::now();
        let text = decompress("bookworm", &compressed).unwrap();
        let decompressed = start.elapsed();
        let updates = parse_packages("bookworm", &text, &PackagesOptions::default()).unwrap();
        println!(
            "bookworm main index: {} bytes lz4, {} bytes text, decompress {:?}, parse {:?}, {} updates",
            compressed.len(),
            text.len(),
            decompressed,
            start.elapsed() - decompressed,
            updates.len()
        );
        assert!(updates.len() > 10_000);
        let bash = updates.iter().find(|u| u.id.starts_with("bash_")).unwrap();
        assert_eq!(bash.classification, "Updates");
        assert_eq!(bash.products, ["Debian 12 (bookworm)"]);
        assert!(fixed_versions(bash).iter().any(|(name, _)| name == "bash"));
    }

    #[test]
    fn c1_a_source_update_is_not_applicable_when_none_of_its_binaries_is_installed() {
        let updates = fixture("bookworm-security", &[]);
        let u = find(&updates, "openssl_3.0.15-1~deb12u1");
        assert_eq!(verdict(u, &[]), ScanVerdict::NotApplicable);
        assert_eq!(
            verdict(u, &[("bash", "5.2.15-2+b7"), ("libssl1.1", "1.1.1w-0+deb11u1")]),
            ScanVerdict::NotApplicable
        );
    }

    #[test]
    fn c1_a_source_update_is_missing_when_one_installed_binary_is_below_its_fixed_version() {
        let updates = fixture("bookworm-security", &[]);
        let u = find(&updates, "openssl_3.0.15-1~deb12u1");
        assert_eq!(verdict(u, &[("libssl3", "3.0.14-1~deb12u2")]), ScanVerdict::Missing);
        assert_eq!(
            verdict(u, &[("openssl", "3.0.15-1~deb12u1"), ("libssl3", "3.0.14-1~deb12u2")]),
            ScanVerdict::Missing
        );
        assert_eq!(
            verdict(u, &[("openssl", "3.0.16-1"), ("libssl-doc", "3.0.15-1~deb12u1~pre1")]),
            ScanVerdict::Missing
        );
    }

    #[test]
    fn c1_a_source_update_is_installed_when_every_installed_binary_is_at_or_above_its_fixed_version() {
        let updates = fixture("bookworm-security", &[]);
        let u = find(&updates, "openssl_3.0.15-1~deb12u1");
        assert_eq!(verdict(u, &[("libssl3", "3.0.15-1~deb12u1")]), ScanVerdict::Installed);
        assert_eq!(
            verdict(u, &[("openssl", "3.0.15-1~deb12u1"), ("libssl3", "3.0.16-1"), ("bash", "5.2.15-2+b7")]),
            ScanVerdict::Installed,
            "libssl-dev and libssl-doc need not be installed"
        );
        // An older update of the same source is installed on the same system.
        let older = find(&updates, "openssl_3.0.14-1~deb12u2");
        assert_eq!(verdict(older, &[("libssl3", "3.0.15-1~deb12u1")]), ScanVerdict::Installed);
    }

    #[test]
    fn newer_versions_of_a_source_supersede_every_older_version_in_the_index() {
        let updates = fixture("bookworm-security", &[]);
        assert_eq!(
            find(&updates, "openssl_3.0.15-1~deb12u1").supersedes,
            ["openssl_3.0.11-1~deb12u2", "openssl_3.0.14-1~deb12u2"]
        );
        assert_eq!(find(&updates, "openssl_3.0.14-1~deb12u2").supersedes, ["openssl_3.0.11-1~deb12u2"]);
        assert!(find(&updates, "openssl_3.0.11-1~deb12u2").supersedes.is_empty());
        assert!(find(&updates, "zutils-src_1.12-2").supersedes.is_empty(), "other sources are not superseded");
        let catalog = Catalog::new(1, updates, &HashMap::new());
        let superseded = |id: &str| catalog.is_superseded(catalog.index_of(id).unwrap());
        assert!(superseded("openssl_3.0.11-1~deb12u2"));
        assert!(superseded("openssl_3.0.14-1~deb12u2"));
        assert!(!superseded("openssl_3.0.15-1~deb12u1"));
    }

    #[test]
    fn binaries_group_by_source_and_source_version_with_their_files() {
        let updates = fixture("bookworm-security", &[]);
        let ids: Vec<&str> = updates.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "linux-signed-amd64_6.1.119+1",
                "openssl_3.0.11-1~deb12u2",
                "openssl_3.0.14-1~deb12u2",
                "openssl_3.0.15-1~deb12u1",
                "zutils-src_1.12-2"
            ]
        );
        let u = find(&updates, "openssl_3.0.15-1~deb12u1");
        assert_eq!(u.kb.as_deref(), Some("openssl 3.0.15-1~deb12u1"));
        assert_eq!(u.title, "openssl 3.0.15-1~deb12u1: Secure Sockets Layer toolkit - cryptographic utility");
        assert_eq!(u.classification, "Security Updates");
        assert_eq!(u.severity, Severity::Unspecified);
        assert_eq!(u.products, ["Debian 12 (bookworm)"]);
        assert_eq!(u.released, date("1970-01-01"), "the index has no dates");
        assert_eq!(u.max_run_time, crate::time::Duration::from_mins(10));
        assert!(!u.reboot_required);
        assert!(u.cves.is_empty());
        let names: Vec<&str> = u.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "libssl-dev_3.0.15-1~deb12u1_amd64.deb",
                "libssl-doc_3.0.15-1~deb12u1_all.deb",
                "libssl3_3.0.15-1~deb12u1_amd64.deb",
                "openssl_3.0.15-1~deb12u1_amd64.deb"
            ]
        );
        let libssl3 = &u.files[2];
        assert_eq!(libssl3.url, "pool/updates/main/o/openssl/libssl3_3.0.15-1~deb12u1_amd64.deb");
        assert_eq!(libssl3.size, 2027032);
        assert_eq!(libssl3.sha256.len(), 64);

        // A kernel: the source version (6.1.119+1) differs from the binary's (6.1.119-1).
        let kernel = find(&updates, "linux-signed-amd64_6.1.119+1");
        assert!(kernel.reboot_required);
        assert_eq!(kernel.title, "linux-signed-amd64 6.1.119+1: Linux 6.1 for 64-bit PCs (signed)");
        assert_eq!(fixed_versions(kernel), [("linux-image-6.1.0-28-amd64".to_string(), "6.1.119-1".to_string())]);
        assert_eq!(verdict(kernel, &[("linux-image-6.1.0-28-amd64", "6.1.119-1")]), ScanVerdict::Installed);

        // Another source name: plain updates, generic product, the caller's date.
        let text = std::fs::read(FIXTURE).unwrap();
        let options = PackagesOptions { released: Some(date("2024-11-20")), ..Default::default() };
        let plain = parse_packages("local-mirror", &text, &options).unwrap();
        let u = find(&plain, "openssl_3.0.15-1~deb12u1");
        assert_eq!(u.classification, "Updates");
        assert_eq!(u.products, ["Debian"]);
        assert_eq!(u.released, date("2024-11-20"));
        let options = PackagesOptions { product: Some("Debian 12 (bookworm) security".into()), ..Default::default() };
        let named = parse_packages("local-mirror", &text, &options).unwrap();
        assert_eq!(named[0].products, ["Debian 12 (bookworm) security"]);
        assert_eq!(named[0].classification, "Security Updates");
    }

    #[test]
    fn the_architecture_filter_keeps_matching_and_all_packages() {
        let amd64 = fixture("bookworm-security", &["amd64"]);
        let zutils = find(&amd64, "zutils-src_1.12-2");
        assert_eq!(
            fixed_versions(zutils),
            [("zutils".to_string(), "1.12-2+b1".to_string()), ("zutils-doc".to_string(), "1.12-2".to_string())]
        );
        assert_eq!(zutils.files.len(), 2);

        let arm64 = fixture("bookworm-security", &["arm64"]);
        let ids: Vec<&str> = arm64.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["openssl_3.0.15-1~deb12u1", "zutils-src_1.12-2"], "only libssl-doc is built for all");
        assert_eq!(fixed_versions(&arm64[0]), [("libssl-doc".to_string(), "3.0.15-1~deb12u1".to_string())]);
        assert_eq!(
            fixed_versions(&arm64[1]),
            [("zutils".to_string(), "1.12-2".to_string()), ("zutils-doc".to_string(), "1.12-2".to_string())]
        );

        // Without a filter both zutils builds count; the lower version decides (a system at
        // 1.12-2 has the fix for arm64).
        let all = fixture("bookworm-security", &[]);
        let zutils = find(&all, "zutils-src_1.12-2");
        assert_eq!(fixed_versions(zutils)[0], ("zutils".to_string(), "1.12-2".to_string()));
        assert_eq!(zutils.files.len(), 3);
    }

    #[test]
    fn the_dsa_list_parses_into_one_update_per_advisory_and_release() {
        let Some(text) = dsa_list() else { return };
        let start = Instant::now();
        let updates = parse_dsa("debian-dsa", &text, &DsaOptions::default()).unwrap();
        println!("DSA list: {} bytes text, parse {:?}, {} updates", text.len(), start.elapsed(), updates.len());
        // (advisory, release) pairs with a fixed version, counted with awk.
        assert_eq!(updates.len(), 6726);
        for u in &updates {
            assert!(u.applicability.problems().is_empty(), "{}: {:?}", u.id, u.applicability.problems());
            assert_eq!(u.classification, "Security Updates");
        }

        let u = find(&updates, "DSA-5380-1-bullseye");
        assert_eq!(u.kb.as_deref(), Some("DSA-5380-1"));
        assert_eq!(u.title, "DSA-5380-1 xorg-server - security update");
        assert_eq!(u.cves, ["CVE-2023-1393"]);
        assert_eq!(u.products, ["Debian (bullseye)"]);
        assert_eq!(u.released, date("2023-03-29"));
        assert_eq!(
            u.applicability.is_installable,
            Rule::Package(PackageTest {
                name: "src:xorg-server".into(),
                version_below: Some("2:1.20.11-1+deb11u6".into()),
                version_at_least: None
            })
        );
        assert_eq!(
            u.applicability.is_installed,
            Rule::Package(PackageTest {
                name: "src:xorg-server".into(),
                version_below: None,
                version_at_least: Some("2:1.20.11-1+deb11u6".into())
            })
        );
        // Every earlier xorg-server fix for bullseye (grep '[bullseye] - xorg-server').
        assert_eq!(
            u.supersedes,
            [
                "DSA-5027-1-bullseye",
                "DSA-5199-1-bullseye",
                "DSA-5278-1-bullseye",
                "DSA-5304-1-bullseye",
                "DSA-5342-1-bullseye"
            ]
        );

        // Two releases, fourteen CVEs.
        let jessie = find(&updates, "DSA-4000-1-jessie");
        let stretch = find(&updates, "DSA-4000-1-stretch");
        assert_eq!(jessie.released, date("2017-10-17"));
        assert_eq!(jessie.cves.len(), 14);
        assert_eq!(jessie.cves.first().map(String::as_str), Some("CVE-2017-12176"));
        assert_eq!(jessie.cves.last().map(String::as_str), Some("CVE-2017-13723"));
        assert_eq!(jessie.cves, stretch.cves);
        assert_eq!(fixed_versions(jessie), [("src:xorg-server".to_string(), "2:1.16.4-1+deb8u2".to_string())]);
        assert_eq!(fixed_versions(stretch), [("src:xorg-server".to_string(), "2:1.19.2-1+deb9u2".to_string())]);
        assert_eq!(stretch.products, ["Debian (stretch)"]);

        // CVEs come sorted (the list has CVE-2016-2842 last, after CVE-2016-0799).
        let wheezy = find(&updates, "DSA-3500-1-wheezy");
        assert_eq!(
            wheezy.cves,
            ["CVE-2016-0702", "CVE-2016-0705", "CVE-2016-0797", "CVE-2016-0798", "CVE-2016-0799", "CVE-2016-2842"]
        );
        assert_eq!(wheezy.released, date("2016-03-01"));
        assert_eq!(fixed_versions(wheezy), [("src:openssl".to_string(), "1.0.1e-2+deb7u20".to_string())]);
        assert_eq!(
            fixed_versions(find(&updates, "DSA-3500-1-jessie")),
            [("src:openssl".to_string(), "1.0.1k-3+deb8u4".to_string())]
        );

        // Eleven kernel packages in one release: one update testing all of them.
        let kernels = find(&updates, "DSA-1504-1-sarge");
        assert_eq!(fixed_versions(kernels).len(), 11);
        assert!(kernels.reboot_required);
        assert_eq!(verdict(kernels, &[("src:kernel-image-2.6.8-i386", "2.6.8-17")]), ScanVerdict::Missing);
        assert_eq!(verdict(kernels, &[("src:kernel-image-2.6.8-i386", "2.6.8-17sarge1")]), ScanVerdict::Installed);
    }

    #[test]
    fn a_regression_update_supersedes_the_advisory_it_fixes() {
        let Some(text) = dsa_list() else { return };
        let updates = parse_dsa("debian-dsa", &text, &DsaOptions::default()).unwrap();
        let regression = find(&updates, "DSA-5356-2-bullseye");
        assert_eq!(regression.title, "DSA-5356-2 sox - regression update");
        assert!(regression.cves.is_empty(), "the regression advisory lists no CVEs");
        assert!(regression.supersedes.contains(&"DSA-5356-1-bullseye".to_string()), "{:?}", regression.supersedes);
        assert!(!find(&updates, "DSA-5356-1-bullseye").supersedes.contains(&"DSA-5356-2-bullseye".to_string()));
        let catalog = Catalog::new(1, updates, &HashMap::new());
        let first = catalog.index_of("DSA-5356-1-bullseye").unwrap();
        assert_eq!(catalog.superseded_by[first as usize], [catalog.index_of("DSA-5356-2-bullseye").unwrap()]);
        // A newer xorg-server fix in stretch supersedes the older stretch one, not jessie's.
        let stretch = &catalog.updates[catalog.index_of("DSA-4000-1-stretch").unwrap() as usize];
        assert_eq!(stretch.supersedes, ["DSA-3905-1-stretch"]);
    }

    #[test]
    fn not_affected_and_unfixed_releases_produce_no_update() {
        let text = "[12 Apr 2011] DSA-2218-1 vlc - heap-based buffer overflow\n\
                    \t{CVE-2011-1684}\n\
                    \t[lenny] - vlc <not-affected> (Vulnerable code not present)\n\
                    \t[squeeze] - vlc 1.1.3-1squeeze5\n\
                    [01 Jan 2006] DSA-900-1 phpgroupware - several\n\
                    \t[woody] - phpgroupware <unfixed> (high)\n\
                    \t[sarge] - phpgroupware 0.9.16.005-3.sarge4 (bug #1234; high)\n\
                    \t[sarge] - phpgroupware-calendar <not-affected> (vulnerable code not present)\n\
                    [28 Jul 2009] DSA-1843-1 squid3 - denial of service\n\
                    \t[etch] - squid <not-affected> (Vulnerable code introduced in 3.x)\n";
        let updates = parse_dsa("test", text.as_bytes(), &DsaOptions::default()).unwrap();
        let ids: Vec<&str> = updates.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["DSA-2218-1-squeeze", "DSA-900-1-sarge"]);
        assert_eq!(
            fixed_versions(&updates[1]),
            [("src:phpgroupware".to_string(), "0.9.16.005-3.sarge4".to_string())],
            "the note after the version is not part of it; the not-affected package is left out"
        );

        let Some(list) = dsa_list() else { return };
        let updates = parse_dsa("debian-dsa", &list, &DsaOptions::default()).unwrap();
        assert!(updates.iter().any(|u| u.id == "DSA-2218-1-squeeze"));
        assert!(!updates.iter().any(|u| u.id == "DSA-2218-1-lenny"));
        assert!(!updates.iter().any(|u| u.kb.as_deref() == Some("DSA-4205-1")), "an end-of-life notice fixes nothing");
    }

    #[test]
    fn c1_dsa_updates_test_installed_source_package_versions() {
        let text = "[20 Feb 2023] DSA-5356-1 sox - security update\n\
                    \t{CVE-2021-3643}\n\
                    \t[bullseye] - sox 14.4.2+git20190427-2+deb11u1\n\
                    [22 Feb 2008] DSA-1504-1 kernel-image-2.6.8 - several issues\n\
                    \t[sarge] - kernel-image-2.6.8-i386 2.6.8-17sarge1\n\
                    \t[sarge] - kernel-source-2.6.8 2.6.8-17sarge1\n\
                    \tNOTE: two source packages, one update\n";
        let updates = parse_dsa("test", text.as_bytes(), &DsaOptions::default()).unwrap();
        let sox = find(&updates, "DSA-5356-1-bullseye");
        assert_eq!(verdict(sox, &[]), ScanVerdict::NotApplicable);
        assert_eq!(
            verdict(sox, &[("sox", "14.4.2+git20190427-2")]),
            ScanVerdict::NotApplicable,
            "binary names do not count"
        );
        assert_eq!(verdict(sox, &[("src:sox", "14.4.2+git20190427-2")]), ScanVerdict::Missing);
        assert_eq!(verdict(sox, &[("src:sox", "14.4.2+git20190427-2+deb11u1")]), ScanVerdict::Installed);
        assert!(!sox.reboot_required);

        let kernel = find(&updates, "DSA-1504-1-sarge");
        assert!(kernel.reboot_required);
        assert_eq!(verdict(kernel, &[("src:bash", "3.0-15")]), ScanVerdict::NotApplicable);
        assert_eq!(verdict(kernel, &[("src:kernel-source-2.6.8", "2.6.8-16sarge7")]), ScanVerdict::Missing);
        assert_eq!(
            verdict(
                kernel,
                &[("src:kernel-image-2.6.8-i386", "2.6.8-17sarge1"), ("src:kernel-source-2.6.8", "2.6.8-16")]
            ),
            ScanVerdict::Missing,
            "one source below its fixed version"
        );
        assert_eq!(verdict(kernel, &[("src:kernel-image-2.6.8-i386", "2.6.8-17sarge1")]), ScanVerdict::Installed);
    }

    #[test]
    fn a_multi_package_advisory_is_superseded_only_by_one_fixing_all_its_packages() {
        let text = "[03 Mar 2008] DSA-3-1 kernel - update\n\
                    \t[sarge] - kernel-a 3\n\
                    \t[sarge] - kernel-b 3\n\
                    [02 Feb 2008] DSA-2-1 kernel-a - update\n\
                    \t[sarge] - kernel-a 2\n\
                    [01 Jan 2008] DSA-1-1 kernel - update\n\
                    \t[sarge] - kernel-a 1\n\
                    \t[sarge] - kernel-b 1\n";
        let updates = parse_dsa("test", text.as_bytes(), &DsaOptions::default()).unwrap();
        assert_eq!(find(&updates, "DSA-3-1-sarge").supersedes, ["DSA-1-1-sarge", "DSA-2-1-sarge"]);
        assert!(find(&updates, "DSA-2-1-sarge").supersedes.is_empty(), "DSA-1-1 also fixes kernel-b");
        assert!(find(&updates, "DSA-1-1-sarge").supersedes.is_empty());
    }

    #[test]
    fn the_release_filter_keeps_only_the_named_releases() {
        let text = "[17 Oct 2017] DSA-4000-1 xorg-server - security update\n\
                    \t{CVE-2017-12176}\n\
                    \t[jessie] - xorg-server 2:1.16.4-1+deb8u2\n\
                    \t[stretch] - xorg-server 2:1.19.2-1+deb9u2\n";
        let options = DsaOptions { releases: vec!["stretch".into()] };
        let updates = parse_dsa("test", text.as_bytes(), &options).unwrap();
        let ids: Vec<&str> = updates.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["DSA-4000-1-stretch"]);
        let Some(list) = dsa_list() else { return };
        let updates = parse_dsa("debian-dsa", &list, &DsaOptions { releases: vec!["bullseye".into()] }).unwrap();
        assert_eq!(updates.len(), 410, "one update per [bullseye] line, counted with grep");
        assert!(updates.iter().all(|u| u.products == ["Debian (bullseye)"]));
    }

    fn big_text() -> Vec<u8> {
        // Several lz4 blocks (64 KiB each) and xz/gzip buffers' worth.
        [std::fs::read(FIXTURE).unwrap(), b"\n".to_vec()].concat().repeat(60)
    }

    #[test]
    fn a_truncated_gzip_stream_is_an_error_with_its_byte_offset() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&big_text()).unwrap();
        let gz = encoder.finish().unwrap();
        for cut in [gz.len() / 2, gz.len() - 4, 12] {
            let m = message(decompress("test", &gz[..cut]));
            assert!(m.starts_with("byte offset ") && m.contains("gzip data is truncated or corrupt"), "{cut}: {m}");
            assert!(m.contains("download the file again"), "{m}");
        }
    }

    #[test]
    fn a_truncated_lz4_frame_is_an_error_even_at_a_block_boundary() {
        let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
        encoder.write_all(&big_text()).unwrap();
        let lz4 = encoder.finish().unwrap();
        // The end mark only (a block boundary), inside a block, inside a block header,
        // inside the frame header.
        let first_block = u32::from_le_bytes(lz4[7..11].try_into().unwrap()) as usize & 0x7FFF_FFFF;
        for cut in [lz4.len() - 4, lz4.len() / 2, 7 + 4 + first_block + 2, 5] {
            let m = message(decompress("test", &lz4[..cut]));
            assert_eq!(m.split(':').next().unwrap(), format!("byte offset {cut}"), "{m}");
            assert!(m.contains("lz4 data ends inside") && m.contains("truncated"), "{cut}: {m}");
        }
        let mut corrupt = lz4.clone();
        corrupt[0] = 0x05;
        corrupt.splice(0..0, lz4.iter().copied());
        let m = message(decompress("test", &corrupt));
        assert!(m.starts_with(&format!("byte offset {}:", lz4.len())) && m.contains("expected an lz4 frame"), "{m}");
    }

    #[test]
    fn a_truncated_xz_stream_is_an_error_with_its_byte_offset() {
        let text = big_text();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &text[..], &mut xz).unwrap();
        for cut in [xz.len() / 2, xz.len() - 1, 8] {
            let m = message(decompress("test", &xz[..cut]));
            assert!(m.starts_with("byte offset ") && m.contains("xz data is truncated or corrupt"), "{cut}: {m}");
        }
    }

    #[test]
    fn a_stanza_without_version_is_an_error_naming_its_line() {
        let text = "Package: a\nVersion: 1.0-1\nArchitecture: all\n\nPackage: b\nDescription: no version\n more\nArchitecture: all\n";
        let m = message(parse_packages("test", text.as_bytes(), &PackagesOptions::default()));
        assert!(m.starts_with("line 5: ") && m.contains("no Version field"), "{m}");
        let text = "Version: 1.0\nArchitecture: all\n";
        let m = message(parse_packages("test", text.as_bytes(), &PackagesOptions::default()));
        assert!(m.starts_with("line 1: ") && m.contains("no Package field"), "{m}");
    }

    #[test]
    fn malformed_fields_are_errors_naming_their_line() {
        let cases = [
            (
                "Package: a\nVersion: 1.0\nFilename: pool/a.deb\nSize: big\nSHA256: ".to_string() + &"0".repeat(64),
                "line 4: Size \"big\"",
            ),
            ("Package: a\nVersion: 1.0\nFilename: pool/a.deb\nSize: 1\nSHA256: abc".into(), "line 5: SHA256 \"abc\""),
            (
                "Package: a\nVersion: 1.0\nFilename: pool/a.deb\nSize: 1".into(),
                "line 1: package a has a Filename but no SHA256",
            ),
            ("Package: a\nVersion: 1.0 beta\n".into(), "line 2: Version \"1.0 beta\" is not a Debian version"),
            ("Package: a\nSource: b (1.0\nVersion: 1.0\n".into(), "line 2: Source \"b (1.0\""),
            ("Package: a\nVersion: 1.0\nthis is not a field\n".into(), "line 3: expected `Field: value`"),
            ("\n\n description first\nPackage: a\n".into(), "line 3: a continuation line"),
            ("Package: a\nVersion: 1.0\nPackage: b\nVersion: 2.0\n".into(), "line 3: field Package appears twice"),
        ];
        for (text, want) in cases {
            let m = message(parse_packages("test", text.as_bytes(), &PackagesOptions::default()));
            assert!(m.starts_with(want), "{text:?}: {m}");
        }
    }

    #[test]
    fn a_dsa_header_that_does_not_parse_is_an_error_naming_its_line() {
        let good = "[29 Mar 2023] DSA-5380-1 xorg-server - security update\n\t{CVE-2023-1393}\n";
        let cases = [
            (format!("{good}[32 Mar 2023] DSA-5381-1 foo - security update\n"), "line 3: expected an advisory header"),
            (format!("{good}[29 Mar 2023] xorg-server - security update\n"), "line 3: expected an advisory header"),
            (format!("{good}DSA-5381-1 foo - security update\n"), "line 3: expected an advisory header"),
            (format!("{good}\t[bullseye] - foo\n"), "line 3: expected `[release] - package fixed-version`"),
            (format!("{good}\t[bullseye] - foo 1.0 beta\n"), ""),
            (format!("{good}\t[bullseye] - foo :1.0\n"), "line 3: expected `[release] - package fixed-version`"),
            (format!("{good}\t[bullseye] - foo 1.0_beta\n"), "line 3: expected `[release] - package fixed-version`"),
            (format!("{good}\t{{CVE-2023-1\n"), "line 3: a CVE list"),
            (format!("{good}\tsomething else\n"), "line 3: expected `{CVE ids}`"),
            ("\t{CVE-2023-1}\n".to_string(), "line 1: an indented line before the first advisory header"),
        ];
        for (text, want) in cases {
            let result = parse_dsa("test", text.as_bytes(), &DsaOptions::default());
            if want.is_empty() {
                assert!(result.is_ok(), "{text:?}: notes after the version are allowed");
                continue;
            }
            let m = message(result);
            assert!(m.starts_with(want), "{text:?}: {m}");
        }
    }

    #[test]
    fn non_utf8_text_is_an_error_with_its_byte_offset() {
        let m = message(parse_packages("test", b"Package: a\nDescription: caf\xe9\n", &PackagesOptions::default()));
        assert!(m.starts_with("byte offset 27 (line 2): the Packages index is not valid UTF-8"), "{m}");
        let m = message(parse_dsa("test", b"[29 Mar 2023] DSA-1-1 \xff - x\n", &DsaOptions::default()));
        assert!(m.starts_with("byte offset 22 (line 1): the DSA list is not valid UTF-8"), "{m}");
    }

    #[test]
    fn compressed_text_is_an_error_that_says_to_decompress_first() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"Package: a\nVersion: 1\n").unwrap();
        let gz = encoder.finish().unwrap();
        let m = message(parse_packages("test", &gz, &PackagesOptions::default()));
        assert!(m.contains("gzip-compressed; pass it through decompress first"), "{m}");
        let m = message(decompress("test", b"BZh91AY&SY\0\0"));
        assert!(m.starts_with("byte offset 0: bzip2 data is not supported"), "{m}");
        let m = message(decompress("test", &[0x28, 0xb5, 0x2f, 0xfd, 0, 0]));
        assert!(m.contains("the zstd data is truncated or corrupt"), "zstd is read, a broken one refused: {m}");
    }

    #[test]
    fn decompress_round_trips_gzip_xz_lz4_and_plain() {
        let text = big_text();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &text[..], &mut xz).unwrap();
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&text).unwrap();
        let lz4 = lz4.finish().unwrap();
        for (kind, bytes) in [("gzip", &gz), ("xz", &xz), ("lz4", &lz4), ("plain", &text)] {
            assert_eq!(decompress("test", bytes).unwrap(), text, "{kind}");
        }
        assert_eq!(decompress("test", b"").unwrap(), b"");
        // Decompressed, the fixture parses like the plain file.
        let parsed = parse_packages("test", &decompress("test", &lz4).unwrap(), &PackagesOptions::default()).unwrap();
        assert_eq!(parsed.len(), 5, "the same stanzas 60 times");
    }
}
