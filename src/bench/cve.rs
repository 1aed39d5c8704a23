//! `patchops bench cve`: `cve --list` and `cve CVE-…` over the bench fleet (100,000 clients
//! × 2,000 updates by default), next to a reference measured in the same run — one plain
//! parallel pass over every reported state — and the ratio between them.

use std::process::ExitCode;
use std::time::Instant;

use jiff::Timestamp;
use rayon::prelude::*;

use crate::Result;
use crate::bench::{BenchArgs, synthetic};
use crate::catalog::Severity;
use crate::governance::exposure::{Scope, cve_index, cve_list, cve_report};

pub(crate) fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let out = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    (best, last.expect("at least one run"))
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let now = Timestamp::now();
    let (desired, mut catalog, fleet) = synthetic(args, now);
    // Each update fixes two CVEs of its own and one shared with a tenth of the catalog,
    // as cumulative updates do.
    for (i, u) in catalog.updates.iter_mut().enumerate() {
        u.cves = vec![
            format!("CVE-2025-{:05}", 2 * i),
            format!("CVE-2025-{:05}", 2 * i + 1),
            format!("CVE-2024-{:05}", i % 10),
        ];
        u.severity = if i % 3 == 0 { Severity::Critical } else { Severity::Important };
    }
    let states = fleet.state_count();
    println!(
        "patchops bench cve: {} clients × {} updates, {states} compliance states, {} threads",
        fleet.clients.len(),
        catalog.len(),
        rayon::current_num_threads()
    );
    // Reference: read every state once and count the missing ones per update.
    let (reference, missing) = best_of(3, || {
        fleet
            .clients
            .par_iter()
            .fold(
                || vec![0u32; catalog.len()],
                |mut acc, c| {
                    for s in &c.compliance.states {
                        if s.scan() == crate::compliance::ScanResult::Missing {
                            acc[s.key() as usize] += 1;
                        }
                    }
                    acc
                },
            )
            .reduce(|| vec![0u32; catalog.len()], |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect())
    });
    std::hint::black_box(missing);
    let (index_time, index) = best_of(3, || cve_index(&catalog));
    let (scope_time, scope) = best_of(3, || Scope::new(&desired, &catalog, &fleet, &index, now));
    let (list_time, rows) =
        best_of(3, || cve_list(&scope, &index, Severity::Unspecified, None, false).expect("no collection filter"));
    let cve = rows.first().map(|r| r.cve.clone()).unwrap_or_default();
    let recorded = Default::default();
    let (one_time, report) =
        best_of(3, || cve_report(&scope, &desired, &index, &cve, &recorded).expect("a listed CVE"));
    let ratio = |t: f64| t / reference;
    println!("  reference (one pass over every state):  {reference:.3} s");
    println!("  CVE index of the catalog ({} CVEs):    {index_time:.3} s", index.len());
    println!("  scope (collections, usable scans):        {scope_time:.3} s  ({:.1}× reference)", ratio(scope_time));
    println!(
        "  cve --list (every CVE, every machine):    {list_time:.3} s  ({:.1}× reference); with scope {:.3} s",
        ratio(list_time),
        list_time + scope_time
    );
    println!(
        "  cve {cve} ({} machines exposed):  {one_time:.3} s  ({:.1}× reference); with scope {:.3} s",
        report.fleet.exposed,
        ratio(one_time),
        one_time + scope_time
    );
    if let Some(rss) = crate::bench::peak_rss() {
        println!("  peak memory: {} MiB", rss / (1 << 20));
    }
    Ok(ExitCode::SUCCESS)
}
