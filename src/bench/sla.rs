//! `patchops bench sla`: `sla` over one year of daily status history.

use std::process::ExitCode;
use std::time::Instant;

use jiff::Timestamp;

use super::BenchArgs;
use super::cve::best_of;
use crate::Result;
use crate::catalog::Severity;

/// `patchops bench sla`: one year of daily status history of one deployment per ten
/// updates (the bench fleet's machines as targeted counts), written to a SQLite store
/// through the store's API, then `sla` read back from it: the history read, the series
/// built and the report decided. Approvals come from a generated list (their reading from
/// git is `bench audit`). The reference is a plain counting pass over the same history
/// rows inside SQLite.
pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    use crate::catalog::{Applicability, Catalog, Update};
    use crate::governance::sla::{Approval, Filter, load_history, report, series};
    use crate::resources::*;
    use jiff::{SignedDuration, civil::date};
    use std::collections::HashMap;

    let days = 365usize;
    let sites = 10usize;
    let per_deployment = 10usize;
    let deployments = args.updates.div_ceil(per_deployment);
    let start = date(2025, 1, 1);
    let day = |d: usize| crate::governance::sla::released_at(start) + SignedDuration::from_hours(24 * d as i64);
    let updates: Vec<Update> = (0..args.updates)
        .map(|i| {
            let kb = format!("KB{}", 5_000_000 + i);
            Update {
                id: format!("{kb}-x64"),
                kb: Some(kb.clone()),
                title: format!("Update {i}"),
                classification: "Security Updates".into(),
                severity: if i % 3 == 0 { Severity::Critical } else { Severity::Important },
                products: vec!["Product".into()],
                released: start.checked_add(jiff::Span::new().days((i * (days - 60) / args.updates) as i64)).unwrap(),
                supersedes: vec![],
                expired: false,
                reboot_required: false,
                max_run_time: crate::time::Duration::from_mins(10),
                cves: vec![format!("CVE-2025-{i:05}")],
                applicability: Applicability::for_product_kb("Product", &kb),
                files: vec![],
            }
        })
        .collect();
    let catalog = Catalog::new(1, updates, &HashMap::new());
    let mut desired = super::site_collections(sites);
    // Deployment d carries updates d*10 .. d*10+9, approved a few days after the last
    // one's release; its machines become compliant over the next days.
    let mut approvals = Vec::new();
    let mut approved_day = Vec::new();
    for d in 0..deployments {
        let name = format!("deploy-{d:04}");
        let members: Vec<usize> = (d * per_deployment..((d + 1) * per_deployment).min(args.updates)).collect();
        let last = members.iter().map(|&i| catalog.updates[i].released).max().unwrap();
        let at_day = (last - start).get_days() as usize + 1 + d % 9;
        approved_day.push(at_day);
        for &i in &members {
            approvals.push(Approval {
                deployment: name.clone(),
                update: i as u32,
                action: crate::git::audit::Action::Approved,
                time: day(at_day),
                commit: format!("{d:040x}"),
                pull_request: Some(format!("#{d}")),
            });
        }
        let list = UpdateListSpec {
            description: None,
            updates: members.iter().map(|&i| catalog.updates[i].id.clone()).collect(),
            criteria: None,
            exclude_superseded: true,
            exclude_expired: true,
        };
        desired.update_lists.insert(name.clone(), UpdateList::new(&name, list));
        let spec = UpdateDeploymentSpec {
            collection: Some(format!("site-{}", d % sites)),
            ..UpdateDeploymentSpec::new(name.clone(), day(at_day))
        };
        desired.deployments.insert(name.clone(), UpdateDeployment::new(&name, spec));
    }
    approvals.sort_by_key(|a| a.time);
    let policy: CompliancePolicySpec = serde_json::from_value(serde_json::json!({
        "deadlines": [{"collection": "site-0", "criteria": {"severities": ["Critical"]}, "within": "14d"},
                      {"collection": "site-1", "criteria": {}, "within": "10d"}]
    }))
    .expect("a valid policy");
    desired.compliance_policies.insert("bench".into(), CompliancePolicy::new("bench", policy));
    let waiver: WaiverSpec = serde_json::from_value(serde_json::json!({
        "updates": [catalog.updates[1].id], "collection": "site-1", "reason": "bench",
        "expires": day(days).to_string()
    }))
    .expect("a valid waiver");
    desired.waivers.insert("bench".into(), Waiver::new("bench", waiver));

    let dir = std::env::temp_dir().join(format!("patchops-bench-sla-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| crate::Error::Io { path: dir.clone(), source })?;
    let path = dir.join("sla.db");
    let store_url = path.display().to_string();
    let targeted = (args.clients / sites) as u64;
    let t = Instant::now();
    {
        let mut store = crate::store::open(&store_url)?;
        for d in 0..days {
            let statuses = (0..deployments)
                .filter(|&k| approved_day[k] <= d)
                .map(|k| {
                    // 0 % on the approval day, +15 points a day, 100 % from the 7th day.
                    let compliant = (targeted * (15 * (d - approved_day[k]) as u64).min(100)) / 100;
                    let status = UpdateDeploymentStatus {
                        phase: "Available".into(),
                        targeted,
                        machines: MachineCounts { compliant, required: targeted - compliant, ..Default::default() },
                        compliance_percent: compliant as f64 * 100.0 / targeted as f64,
                        update_count: per_deployment as u64,
                        last_applied_revision: Some(format!("bench@sha1:{d:040x}")),
                        ..Default::default()
                    };
                    crate::store::ResourceStatus {
                        kind: "UpdateDeployment".into(),
                        namespace: "default".into(),
                        name: format!("deploy-{k:04}"),
                        status: serde_json::to_value(&status).expect("statuses serialize"),
                    }
                })
                .collect();
            let record = crate::store::ReconcileRecord {
                time: day(d) + SignedDuration::from_hours(12),
                revision: format!("bench@sha1:{d:040x}"),
                catalog_version: 1,
                statuses,
            };
            store.save_reconcile(&record, &HashMap::new(), &[])?;
        }
    }
    let sqlite = crate::store::sqlite::SqliteStore::open(&path)?;
    let rows: u64 = sqlite.query_rows("SELECT COUNT(*) FROM status_history")?[0][0].parse().unwrap_or(0);
    println!(
        "patchops bench sla: {} clients × {} updates, {deployments} deployments, {days} days of daily status \
         history ({rows} rows, written in {:.1} s)",
        args.clients,
        catalog.len(),
        t.elapsed().as_secs_f64()
    );
    let (reference, _) = best_of(3, || {
        sqlite
            .query_rows(
                "SELECT COUNT(*), SUM(LENGTH(status)), MAX(time) FROM status_history WHERE kind = 'UpdateDeployment'",
            )
            .expect("the history reads")
    });
    let revision_day: HashMap<String, Timestamp> =
        (0..days).map(|d| (format!("bench@sha1:{d:040x}"), day(d))).collect();
    let now = day(days);
    let (read, history) = best_of(3, || load_history(&store_url).expect("the history reads"));
    let (decide, out) = best_of(3, || {
        let s = series(&history, |r| revision_day.get(r).copied());
        report(&desired, &catalog, &approvals, &s, &Filter::default(), now)
    });
    let total = read + decide;
    println!("  reference (one counting pass over the history rows in SQLite): {reference:.3} s");
    println!("  history read ({} rows):              {read:.3} s  ({:.1}× reference)", history.len(), read / reference);
    println!(
        "  series + report ({} rows, {} groups, {} breaches, {} waived): {decide:.3} s",
        out.rows.len(),
        out.groups.len(),
        out.breaches.len(),
        out.waived.len()
    );
    println!("  sla in all:                          {total:.3} s  ({:.1}× reference; goal < 1 s)", total / reference);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}
