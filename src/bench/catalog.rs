//! `patchops bench catalog`: import times of the real vendor data (both MSRC CVRF
//! documents, the whole Debian DSA list, this machine's bookworm-security `Packages`
//! index), a 100,000-update native catalog (time and peak memory), and the time to
//! serve a one-month delta from a SQLite store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use jiff::Timestamp;

use super::peak_rss;
use crate::catalog::{Applicability, Severity, Update, debian, msrc_cvrf, native, osv};
use crate::store::Store;
use crate::{Error, Result};

fn shared_data() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.join("tests/data")
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn timed<T>(label: &str, f: impl FnOnce() -> Result<T>, count: impl Fn(&T) -> usize) -> Result<T> {
    let t = Instant::now();
    let v = f()?;
    println!("  {label}: {} updates in {:.3} s", count(&v), t.elapsed().as_secs_f64());
    Ok(v)
}

/// A synthetic native catalog: `n` updates over 20 products, monthly.
pub fn synthetic_updates(n: usize, offset: usize) -> Vec<Update> {
    (offset..offset + n)
        .map(|i| {
            let product = format!("Product {:02}", i % 20);
            let kb = format!("KB{}", 6_000_000 + i);
            Update {
                id: format!("{kb}-p{}", i % 20),
                kb: Some(kb.clone()),
                title: format!("{} Cumulative Update for {product} ({kb})", 2020 + i / 20_000),
                classification: "Security Updates".into(),
                severity: Severity::Important,
                products: vec![product.clone()],
                released: jiff::civil::date(2020, 1, 14)
                    .checked_add(jiff::Span::new().days((i / 200) as i64))
                    .unwrap_or(jiff::civil::date(2030, 1, 1)),
                supersedes: if i >= 20 { vec![format!("KB{}", 6_000_000 + i - 20)] } else { vec![] },
                expired: false,
                reboot_required: true,
                max_run_time: crate::time::Duration::from_mins(60),
                cves: vec![format!("CVE-2026-{:05}", i % 100_000)],
                applicability: Applicability::for_product_kb(&product, &kb),
                files: vec![],
            }
        })
        .collect()
}

pub fn run() -> Result<ExitCode> {
    println!("patchops bench catalog ({} threads)", rayon::current_num_threads());
    let data = shared_data();
    let cvrf: Vec<(String, Vec<u8>)> = ["cvrfDocument-2016-Apr.xml.gz", "cvrfDocument-2023-Jan.xml.gz"]
        .iter()
        .map(|f| {
            let p = data.join("msrc-cvrf").join(f);
            Ok((p.display().to_string(), debian::decompress(f, &read(&p)?)?))
        })
        .collect::<Result<_>>()?;
    let docs: Vec<(&str, &[u8])> = cvrf.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    timed("msrc-cvrf, both documents merged", || msrc_cvrf::parse_many(&docs), |v| v.len())?;

    let dsa = data.join("debian/DSA-list.gz");
    let dsa_bytes = read(&dsa)?;
    timed(
        "debian-dsa, the whole DSA list (with gunzip)",
        || {
            debian::parse_dsa(
                "DSA-list",
                &debian::decompress("DSA-list.gz", &dsa_bytes)?,
                &debian::DsaOptions::default(),
            )
        },
        |v| v.len(),
    )?;

    let lists = Path::new("/var/lib/apt/lists");
    let security = std::fs::read_dir(lists).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("bookworm-security") && p.to_string_lossy().contains("_Packages"))
    });
    match security {
        Some(p) => {
            let bytes = read(&p)?;
            let options =
                debian::PackagesOptions { product: Some("Debian 12 (bookworm)".into()), ..Default::default() };
            let updates = timed(
                "debian-packages, bookworm-security index (with decompression)",
                || debian::parse_packages("security", &debian::decompress("security", &bytes)?, &options),
                |v| v.len(),
            )?;
            let catalog = crate::catalog::Catalog::new(1, updates, &Default::default());
            let mut times = Vec::new();
            let mut missing = 0;
            for _ in 0..10 {
                let t = Instant::now();
                let installed = crate::agent::scanners::dpkg::read_status(Path::new("/var/lib/dpkg/status"))?;
                let facts = crate::agent::scanners::dpkg::facts(&installed);
                let found = crate::agent::scanners::scan(&catalog, &facts);
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                missing = found.iter().filter(|(_, v)| *v == crate::catalog::ScanVerdict::Missing).count();
            }
            times.sort_by(|a, b| a.total_cmp(b));
            println!(
                "  dpkg scan of this machine (read status, facts, evaluate {} updates): median {:.1} ms; {missing} Missing",
                catalog.len(),
                times[5]
            );
        }
        None => println!("  debian-packages: no bookworm-security index in /var/lib/apt/lists (run apt-get update)"),
    }
    let _ = osv::OsvOptions::default();

    // 100,000 updates in the native format.
    let updates = synthetic_updates(100_000, 0);
    let text = serde_saphyr::to_string(&native::NativeCatalog { format: native::FORMAT.into(), updates })
        .map_err(|e| Error::Runtime(format!("cannot write the native catalog: {e}")))?;
    let before = peak_rss().unwrap_or(0);
    let t = Instant::now();
    let parsed = native::parse("synthetic.yaml", &text).map_err(Error::InvalidDesiredState)?;
    let elapsed = t.elapsed().as_secs_f64();
    let peak = peak_rss().unwrap_or(0);
    println!(
        "  native, 100,000 updates ({:.0} MB of YAML): {:.2} s, peak memory {:.0} MiB (process; {:.0} MiB before)",
        text.len() as f64 / 1e6,
        elapsed,
        peak as f64 / 1048576.0,
        before as f64 / 1048576.0
    );
    drop(text);

    // Deltas from a SQLite store: 100,000 updates, then one month of 2,000 new ones.
    let dir = tempfile_dir()?;
    let mut store = crate::store::sqlite::SqliteStore::open(&dir.join("catalog.db"))?;
    let now = Timestamp::now();
    let t = Instant::now();
    store.save_catalog(&parsed, now)?;
    println!("  saving 100,000 updates as catalog version 1: {:.2} s", t.elapsed().as_secs_f64());
    let mut next = parsed;
    next.extend(synthetic_updates(2_000, 100_000));
    let t = Instant::now();
    store.save_catalog(&next, now)?;
    println!("  saving version 2 (+2,000 updates; 20 older ones newly superseded): {:.2} s", t.elapsed().as_secs_f64());
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let delta = store.catalog_delta(1, 2)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        size = delta.upserts.len();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!("  delta 1 → 2 ({size} updates) from SQLite: median {:.1} ms, max {:.1} ms", times[5], times[9]);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("patchops-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    Ok(dir)
}
