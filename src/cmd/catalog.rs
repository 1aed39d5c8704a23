//! `patchops catalog …`: sync, import, show, diff — the Update Repository of the seed's
//! five objects (O-REPO): browse and search the catalog, see what a sync changed.

use std::path::PathBuf;
use std::process::ExitCode;

use jiff::Timestamp;

use crate::catalog::delta::CatalogDiff;
use crate::catalog::source::Fetched;
use crate::catalog::sync::{Syncer, import, merge};
use crate::catalog::{Catalog, Update, native};
use crate::git::RepoArgs;
use crate::output::OutputFormat;
use crate::resources::{CatalogFormat, CatalogSource, UpdateCatalogSpec};
use crate::{Error, Result};

#[derive(clap::Subcommand, Debug)]
pub enum CatalogCommand {
    /// Synchronize every UpdateCatalog of the desired state now; a new catalog version
    /// only when the content changed.
    Sync {
        #[command(flatten)]
        repo: RepoArgs,
        /// Store: a SQLite file path or a postgres:// URL.
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
        store: String,
        /// Accept a sync that drops more than a source's allowed share of its updates (or
        /// all of them); without it such a sync is refused and the catalog stays.
        #[arg(long)]
        allow_shrink: bool,
    },
    /// Import vendor data (MSRC CVRF, Debian Packages or DSA list, OSV, RPM updateinfo, native).
    Import {
        #[command(flatten)]
        args: ImportArgs,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Browse and search the catalog (the Update Repository).
    Show {
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
        store: String,
        /// Catalog version (default: the current one).
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        filter: Filter,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// What changed between two catalog versions: added, changed, removed, expired,
    /// newly superseded. Exit 0 when nothing changed, 2 when something did, 1 on error.
    #[command(
        after_help = "Examples:\n  patchops catalog diff 3 4\n  patchops catalog diff 3 4 -o json | jq '.added | length'"
    )]
    Diff {
        from: u64,
        to: u64,
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
        store: String,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// The delta a client at catalog version FROM fetches to reach TO (default: the
    /// current version): new or changed updates and removed ids, as JSON or YAML.
    Delta {
        from: u64,
        to: Option<u64>,
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
        store: String,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Json)]
        output: OutputFormat,
    },
    /// Print the JSON Schema of the native catalog format.
    Schema,
}

pub fn run(command: CatalogCommand) -> Result<ExitCode> {
    match command {
        CatalogCommand::Schema => {
            print!("{}", crate::catalog::native::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        CatalogCommand::Sync { repo, store, allow_shrink } => {
            let state = crate::process::state_dir();
            let source = crate::git::git_source(&repo, &state);
            let (tree, desired) = crate::pipeline::load_desired(&source)?;
            let mut store = crate::store::open(&store)?;
            let mut syncer = crate::catalog::sync::Syncer::new(&state.join("catalog-cache"));
            syncer.allow_shrink = allow_shrink;
            let outcome = syncer.sync(
                store.as_mut(),
                &desired,
                Some((&source, tree.commit.as_str())),
                jiff::Timestamp::now(),
                true,
            )?;
            for (name, s) in &outcome.statuses {
                let c = s.conditions.first();
                println!(
                    "{name}: {} — {}",
                    c.map(|c| c.reason.as_str()).unwrap_or("-"),
                    c.map(|c| c.message.as_str()).unwrap_or("-")
                );
            }
            println!(
                "catalog version {} ({} updates){}",
                outcome.catalog.version,
                outcome.catalog.len(),
                if outcome.changed { ", new" } else { "" }
            );
            Ok(if outcome.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        CatalogCommand::Import { args, output } => import_files(&args, &crate::process::state_dir(), output),
        CatalogCommand::Show { store, version, filter, output } => {
            let store = crate::store::open_existing(&store)?;
            let catalog = match version {
                Some(v) => store.load_catalog_version(v)?,
                None => store.load_catalog()?,
            };
            Ok(show(&catalog, &filter, output))
        }
        CatalogCommand::Delta { from, to, store, output } => {
            let store = crate::store::open_existing(&store)?;
            let to = match to {
                Some(v) => v,
                None => store.catalog_versions()?.last().map_or(0, |v| v.version),
            };
            let delta = store.catalog_delta(from, to)?;
            match output {
                OutputFormat::Yaml => print!("{}", serde_saphyr::to_string(&delta).expect("deltas serialize")),
                _ => println!("{}", serde_json::to_string_pretty(&delta).expect("deltas serialize")),
            }
            Ok(ExitCode::SUCCESS)
        }
        CatalogCommand::Diff { from, to, store, output } => {
            let store = crate::store::open_existing(&store)?;
            let (a, b) = (store.load_catalog_version(from)?, store.load_catalog_version(to)?);
            Ok(diff(&a, &b, output))
        }
    }
}

/// Search criteria for `catalog show` (a saved search folder, on the command line).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Filter {
    /// Case-insensitive text in the id, KB or title, a CVE id the update fixes
    /// (`CVE-2025-21298`), or a vendor advisory id (`DSA-5380-1`, `ALSA-2024:1234`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Classification, e.g. "Security Updates".
    #[arg(long)]
    pub classification: Option<String>,
    /// Product, e.g. "Windows Server 2022".
    #[arg(long)]
    pub product: Option<String>,
    /// Leave out superseded and expired updates.
    #[arg(long)]
    pub active: bool,
}

impl Filter {
    fn matches(&self, catalog: &Catalog, i: usize) -> bool {
        let u = &catalog.updates[i];
        let text = |t: &str| t.to_lowercase().contains(&self.filter.as_deref().unwrap_or("").to_lowercase());
        let cve_or_advisory =
            |f: &str| u.cves.iter().any(|c| c.eq_ignore_ascii_case(f.trim())) || crate::site::view::is_advisory(u, f);
        let by_text =
            |f: &str| text(&u.id) || text(&u.title) || u.kb.as_deref().is_some_and(text) || cve_or_advisory(f);
        self.filter.as_deref().is_none_or(by_text)
            && self.classification.as_ref().is_none_or(|c| c.eq_ignore_ascii_case(&u.classification))
            && self.product.as_ref().is_none_or(|p| u.products.iter().any(|q| q.eq_ignore_ascii_case(p)))
            && !(self.active && (u.expired || catalog.is_superseded(i as u32)))
    }
}

/// `catalog show`: the updates of a version matching the filter.
pub fn show(catalog: &Catalog, filter: &Filter, output: OutputFormat) -> ExitCode {
    let rows: Vec<usize> = (0..catalog.len()).filter(|&i| filter.matches(catalog, i)).collect();
    match output {
        OutputFormat::Table | OutputFormat::Wide => {
            use crate::output::Shown::{Always, Wide};
            let mut t = crate::output::Columns::new(
                &[
                    ("ID", Always),
                    ("KB", Wide),
                    ("CLASSIFICATION", Wide),
                    ("SEVERITY", Always),
                    ("RELEASED", Always),
                    ("STATE", Always),
                    ("TITLE", Always),
                ],
                output,
            );
            let wide = output == OutputFormat::Wide;
            for &i in &rows {
                let u = &catalog.updates[i];
                let state = if u.expired {
                    "Expired".to_string()
                } else if catalog.is_superseded(i as u32) && wide {
                    let by: Vec<&str> =
                        catalog.superseded_by[i].iter().map(|&j| catalog.updates[j as usize].id.as_str()).collect();
                    format!("Superseded by {}", by.join(", "))
                } else if catalog.is_superseded(i as u32) {
                    "Superseded".to_string()
                } else {
                    "Active".to_string()
                };
                let title: String = if wide { u.title.clone() } else { clip(&u.title, 56) };
                t.row([
                    u.id.clone(),
                    u.kb.clone().unwrap_or_default(),
                    u.classification.clone(),
                    format!("{:?}", u.severity),
                    u.released.to_string(),
                    state,
                    title,
                ]);
            }
            println!("catalog version {}: {} of {} updates", catalog.version, rows.len(), catalog.len());
            println!("{t}");
        }
        OutputFormat::Json | OutputFormat::Yaml => {
            let updates: Vec<&Update> = rows.iter().map(|&i| &catalog.updates[i]).collect();
            let doc = serde_json::json!({ "version": catalog.version, "updates": updates });
            print_structured(&doc, output);
        }
    }
    ExitCode::SUCCESS
}

/// The text cut to `n` characters, with an ellipsis when it was longer.
fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_string();
    }
    text.chars().take(n - 1).chain(std::iter::once('…')).collect()
}

/// `catalog diff A B`.
pub fn diff(a: &Catalog, b: &Catalog, output: OutputFormat) -> ExitCode {
    let d = CatalogDiff::between(a, b);
    match output {
        OutputFormat::Table | OutputFormat::Wide => {
            println!("catalog {} → {}", d.from, d.to);
            let section = |name: &str, ids: &[String]| {
                println!("{name} ({}):", ids.len());
                for id in ids {
                    let title = b.index_of(id).or_else(|| a.index_of(id)).map(|i| {
                        let c = if b.index_of(id).is_some() { b } else { a };
                        c.updates[i as usize].title.clone()
                    });
                    println!("  {id}  {}", title.unwrap_or_default());
                }
            };
            section("added", &d.added);
            section("changed", &d.changed);
            section("removed", &d.removed);
            section("expired", &d.expired);
            println!("newly superseded ({}):", d.superseded.len());
            for (id, by) in &d.superseded {
                println!("  {id}  superseded by {}", by.join(", "));
            }
        }
        _ => print_structured(&serde_json::to_value(&d).expect("diffs serialize"), output),
    }
    if d.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_CHANGES) }
}

fn print_structured(v: &serde_json::Value, output: OutputFormat) {
    if output == OutputFormat::Yaml {
        print!("{}", serde_saphyr::to_string(v).expect("values serialize"));
    } else {
        println!("{}", serde_json::to_string_pretty(v).expect("values serialize"));
    }
}

/// Arguments of `catalog import`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// Format of the files.
    #[arg(long, value_parser = parse_format)]
    pub format: CatalogFormat,
    /// Files (compressed or not) or http(s) URLs; several are merged into one catalog. For
    /// rpm-updateinfo also a repository (its URL or directory, read through repodata/repomd.xml).
    #[arg(required = true)]
    pub files: Vec<String>,
    /// Product name for sources that name none (debian-packages).
    #[arg(long)]
    pub product: Option<String>,
    /// Write the result as a native catalog file (commit it to the desired-state repository).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also save the result as a new catalog version in this store.
    #[arg(long)]
    pub store: Option<String>,
    /// Save to --store even when the result has far fewer updates than the store's
    /// current catalog (more than half fewer, or none).
    #[arg(long)]
    pub allow_shrink: bool,
}

fn parse_format(s: &str) -> std::result::Result<CatalogFormat, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("unknown format {s:?}; use native, msrc-cvrf, debian-packages, debian-dsa, osv or rpm-updateinfo")
    })
}

/// `catalog import`: vendor data → updates; printed, written as a native file, or saved.
pub fn import_files(args: &ImportArgs, state_dir: &std::path::Path, output: OutputFormat) -> Result<ExitCode> {
    let now = Timestamp::now();
    let syncer = Syncer::new(&state_dir.join("catalog-cache"));
    let spec = UpdateCatalogSpec {
        source: CatalogSource::default(),
        format: args.format,
        sync_interval: crate::time::Duration::from_hours(1),
        product: args.product.clone(),
        products: vec![],
        classifications: vec![],
        max_shrink_percent: None,
        allow_shrink: false,
    };
    let mut store = args.store.as_deref().map(crate::store::open).transpose()?;
    let previous = match &store {
        Some(s) => s.load_catalog()?,
        None => Catalog::default(),
    };
    let started = std::time::Instant::now();
    let mut all = Vec::new();
    let mut documents: Vec<(String, Vec<u8>)> = Vec::new();
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new(args.files.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} importing {pos}/{len} {msg}")
                .expect("the template is valid"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    for f in &args.files {
        if let Some(bar) = &bar {
            bar.set_message(f.clone());
            bar.inc(1);
        }
        let fetched: Fetched = if args.format == CatalogFormat::RpmUpdateinfo {
            let is_url = f.starts_with("http://") || f.starts_with("https://");
            let source = CatalogSource {
                url: is_url.then(|| f.clone()),
                file: (!is_url).then(|| f.clone()),
                ..Default::default()
            };
            crate::catalog::rpm_updateinfo::fetch(&syncer.fetcher, &source, None)?
        } else if f.starts_with("http://") || f.starts_with("https://") {
            syncer.fetcher.fetch_url(f)?
        } else if std::path::Path::new(f).is_dir() && args.format == CatalogFormat::Osv {
            let updates =
                crate::catalog::osv::parse_dir(std::path::Path::new(f), &crate::catalog::osv::OsvOptions::default())?;
            all.push(updates);
            continue;
        } else {
            syncer.fetcher.fetch_file(std::path::Path::new(f))?
        };
        if args.format == CatalogFormat::MsrcCvrf {
            // Monthly documents are merged KB by KB (see `msrc_cvrf::parse_many`).
            documents.push((fetched.name.clone(), crate::catalog::sync::decompress(&fetched.name, &fetched.bytes)?));
            continue;
        }
        all.push(import(&spec, &fetched, &previous, now)?);
    }
    if !documents.is_empty() {
        let docs: Vec<(&str, &[u8])> = documents.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        all.push(crate::catalog::sync::filter(&spec, crate::catalog::msrc_cvrf::parse_many(&docs)?));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let updates = merge(all);
    let elapsed = started.elapsed();
    let catalog = Catalog::new(previous.version, updates.clone(), &Default::default());
    let superseded = (0..catalog.len()).filter(|&i| catalog.is_superseded(i as u32)).count();
    eprintln!(
        "imported {} updates ({} superseded) from {} file(s) in {:.2} s",
        updates.len(),
        superseded,
        args.files.len(),
        elapsed.as_secs_f64()
    );
    if let Some(out) = &args.out {
        let doc = native::NativeCatalog { format: native::FORMAT.to_string(), updates: updates.clone() };
        let text = if out.extension().is_some_and(|e| e == "json") {
            serde_json::to_string_pretty(&doc).expect("catalogs serialize")
        } else {
            serde_saphyr::to_string(&doc).expect("catalogs serialize")
        };
        std::fs::write(out, text).map_err(|source| Error::Io { path: out.clone(), source })?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(store) = store.as_mut() {
        if !args.allow_shrink
            && let Some(why) = crate::catalog::sync::shrink_refused(
                previous.len() as u64,
                updates.len() as u64,
                crate::resources::DEFAULT_MAX_SHRINK_PERCENT,
            )
        {
            return Err(Error::Catalog {
                source_name: args.files.join(", "),
                message: format!(
                    "not saved to {}: {why} compared with its catalog version {}; if this is intended, pass \
                     --allow-shrink",
                    store.location(),
                    previous.version
                ),
            });
        }
        let saved = store.save_catalog(&updates, now)?;
        eprintln!(
            "catalog version {} in {} ({})",
            saved.version,
            store.location(),
            if saved.changed { "new" } else { "unchanged" }
        );
    }
    if args.out.is_none() && args.store.is_none() {
        return Ok(show(&catalog, &Filter::default(), output));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::test_support::update;

    #[test]
    fn o_repo_search_criteria_filter_the_catalog_by_text_classification_product_and_state() {
        let mut old = update("KB1-srv", "Windows Server 2022", "2026-10-14");
        old.title = "2026-10 Cumulative Update".into();
        let mut new = update("KB2-srv", "Windows Server 2022", "2026-11-11");
        new.title = "2026-11 Cumulative Update".into();
        new.supersedes = vec!["KB1".into()];
        let mut defs = update("KB3-w11", "Windows 11", "2026-11-20");
        defs.classification = "Definition Updates".into();
        let catalog = Catalog::new(1, vec![old, new, defs], &Default::default());
        let ids = |f: Filter| -> Vec<String> {
            (0..catalog.len()).filter(|&i| f.matches(&catalog, i)).map(|i| catalog.updates[i].id.clone()).collect()
        };
        assert_eq!(ids(Filter { filter: Some("cumulative".into()), ..Default::default() }), vec!["KB1-srv", "KB2-srv"]);
        assert_eq!(
            ids(Filter { filter: Some("cumulative".into()), active: true, ..Default::default() }),
            vec!["KB2-srv"]
        );
        assert_eq!(
            ids(Filter { classification: Some("definition updates".into()), ..Default::default() }),
            vec!["KB3-w11"]
        );
        assert_eq!(ids(Filter { product: Some("Windows 11".into()), ..Default::default() }), vec!["KB3-w11"]);
        assert_eq!(ids(Filter { filter: Some("kb2".into()), ..Default::default() }), vec!["KB2-srv"], "by KB");
    }

    #[test]
    fn o_repo_a_text_filter_finds_updates_by_cve_and_by_advisory_id() {
        let mut kb = update("KB5-srv", "Windows Server 2022", "2026-11-11");
        kb.cves = vec!["CVE-2025-21298".into(), "CVE-2025-21311".into()];
        let mut dsa = update("DSA-5380-1-bookworm", "Debian 12", "2026-11-12");
        dsa.kb = Some("5380-1".into());
        dsa.cves = vec!["CVE-2025-21311".into()];
        let other = update("KB6-srv", "Windows Server 2022", "2026-11-11");
        let catalog = Catalog::new(1, vec![kb, dsa, other], &Default::default());
        let ids = |text: &str| -> Vec<String> {
            let f = Filter { filter: Some(text.into()), ..Default::default() };
            (0..catalog.len()).filter(|&i| f.matches(&catalog, i)).map(|i| catalog.updates[i].id.clone()).collect()
        };
        assert_eq!(ids("CVE-2025-21298"), vec!["KB5-srv"]);
        assert_eq!(ids("cve-2025-21311"), vec!["DSA-5380-1-bookworm", "KB5-srv"], "case-insensitive, every fix");
        assert_eq!(ids("DSA-5380-1"), vec!["DSA-5380-1-bookworm"], "the advisory without its release suffix");
        assert!(ids("CVE-2025-99999").is_empty());
    }
}
