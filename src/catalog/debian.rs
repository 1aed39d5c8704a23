//! Debian catalog importers: `debian-packages` turns a repository `Packages` index into one
//! update per source package version, `debian-dsa` turns the security tracker's DSA list into
//! one update per advisory and release. DSA rules test *source* packages: a client reports
//! `src:<source>` → installed source version in its packages facts (taken from the `Source:`
//! field of /var/lib/dpkg/status, or `Package:`/`Version:` when it has none).

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read};

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

/// Decompress by magic bytes: gzip, xz, lz4 frame (as apt stores lists), or plain.
pub fn decompress(source: &str, bytes: &[u8]) -> crate::Result<Vec<u8>> {
    let fail = |offset: u64, message: String| catalog_error(source, format!("byte offset {offset}: {message}"));
    match compression(bytes) {
        None => Ok(bytes.to_vec()),
        Some(Compression::Gzip) => {
            let mut input = Cursor::new(bytes);
            let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
            let result = flate2::bufread::MultiGzDecoder::new(&mut input).read_to_end(&mut out);
            result.map_err(|e| {
                fail(input.position(), format!("the gzip data is truncated or corrupt ({e}); download the file again"))
            })?;
            Ok(out)
        }
        Some(Compression::Xz) => {
            let mut input = Cursor::new(bytes);
            let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
            lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| {
                fail(input.position(), format!("the xz data is truncated or corrupt ({e}); download the file again"))
            })?;
            Ok(out)
        }
        Some(Compression::Lz4) => {
            // lz4_flex ends quietly when a frame stops at a block boundary, so walk the frame
            // structure first: a missing end mark is a truncated file, not a short one.
            check_lz4_frames(bytes).map_err(|(offset, message)| fail(offset as u64, message))?;
            let mut input = Cursor::new(bytes);
            let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
            let result = lz4_flex::frame::FrameDecoder::new(&mut input).read_to_end(&mut out);
            result.map_err(|e| {
                fail(input.position(), format!("the lz4 data is corrupt ({e}); download the file again"))
            })?;
            Ok(out)
        }
        Some(other) => Err(fail(
            0,
            format!(
                "{} data is not supported; decompress it first or fetch the .gz, .xz or .lz4 variant",
                other.name()
            ),
        )),
    }
}

fn catalog_error(source: &str, message: impl Into<String>) -> crate::Error {
    crate::Error::Catalog { source_name: source.to_string(), message: message.into() }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    Gzip,
    Xz,
    Lz4,
    Zstd,
    Bzip2,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
        }
    }
}

fn compression(bytes: &[u8]) -> Option<Compression> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Compression::Xz)
    } else if bytes.starts_with(&LZ4_MAGIC.to_le_bytes()) {
        Some(Compression::Lz4)
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if bytes.len() >= 10
        && bytes.starts_with(b"BZh")
        && bytes[3].is_ascii_digit()
        && bytes[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
    {
        Some(Compression::Bzip2)
    } else {
        None
    }
}

const LZ4_MAGIC: u32 = 0x184D_2204;

/// Walk the lz4 frames (header, block sizes, end mark, checksums) without decoding; on a
/// problem, the byte offset where it is and what is wrong.
fn check_lz4_frames(bytes: &[u8]) -> Result<(), (usize, String)> {
    let truncated = |what: &str, frame: usize| {
        (
            bytes.len(),
            format!(
                "the lz4 data ends inside {what} of the frame starting at byte offset {frame}; \
                 the file is truncated, download it again"
            ),
        )
    };
    let u32_at = |pos: usize| bytes.get(pos..pos + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let mut pos = 0;
    while pos < bytes.len() {
        let frame = pos;
        let magic = u32_at(pos).ok_or_else(|| truncated("the magic number", frame))?;
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            // A skippable frame: size, then that many bytes.
            let size = u32_at(pos + 4).ok_or_else(|| truncated("the size", frame))? as usize;
            pos += 8 + size;
            if pos > bytes.len() {
                return Err(truncated("a skippable frame", frame));
            }
            continue;
        }
        if magic != LZ4_MAGIC {
            return Err((
                pos,
                format!("expected an lz4 frame (magic 04 22 4D 18) after the previous one, found {:08x}", magic),
            ));
        }
        let (&flags, _) =
            bytes.get(pos + 4..pos + 6).and_then(|b| b.split_first()).ok_or_else(|| truncated("the header", frame))?;
        if flags >> 6 != 1 {
            return Err((pos + 4, format!("unsupported lz4 frame version {} (expected 1)", flags >> 6)));
        }
        let block_checksum = flags & 0x10 != 0;
        let content_size = flags & 0x08 != 0;
        let content_checksum = flags & 0x04 != 0;
        let dictionary = flags & 0x01 != 0;
        pos += 4 + 2 + if content_size { 8 } else { 0 } + if dictionary { 4 } else { 0 } + 1;
        if pos > bytes.len() {
            return Err(truncated("the header", frame));
        }
        loop {
            let size = u32_at(pos).ok_or_else(|| truncated("a block header (the end mark is missing)", frame))?;
            pos += 4;
            if size == 0 {
                break;
            }
            pos += (size & 0x7FFF_FFFF) as usize + if block_checksum { 4 } else { 0 };
            if pos > bytes.len() {
                return Err(truncated("a block", frame));
            }
        }
        if content_checksum {
            pos += 4;
            if pos > bytes.len() {
                return Err(truncated("the content checksum", frame));
            }
        }
    }
    Ok(())
}

/// The text as UTF-8, or an error saying where it is not (and whether it is still
/// compressed, the usual cause).
fn as_text<'a>(source: &str, text: &'a [u8], what: &str) -> crate::Result<&'a str> {
    if let Some(kind) = compression(text) {
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
    version.parse::<debversion::Version>().map(|_| ()).map_err(|e| {
        format!("line {line}: {field} {version:?} is not a Debian version ({e}); fix the index or report it to the repository")
    })
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
    let parsed = version.parse::<debversion::Version>().map_err(|e| {
        format!("{expected}; {version:?} (the fixed version of {package} in {release}) is not a Debian version ({e})")
    })?;
    Ok(Fix { release, package, version: Some(parsed), text: version })
}
