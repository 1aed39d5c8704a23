//! Builders the integration tests share.
#![allow(dead_code)]

use jiff::Timestamp;
use patchops::catalog::{Applicability, Severity, Update};

pub fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A Windows Server 2022 security update; its KB is the id up to the first `-`.
pub fn update(id: &str) -> Update {
    let kb = id.split('-').next().unwrap();
    Update {
        id: id.to_string(),
        kb: Some(kb.to_string()),
        title: format!("{id} for Windows Server 2022"),
        classification: "Security Updates".into(),
        severity: Severity::Critical,
        products: vec!["Windows Server 2022".into()],
        released: "2026-11-10".parse().unwrap(),
        supersedes: vec![],
        expired: false,
        reboot_required: true,
        max_run_time: patchops::time::Duration::from_mins(10),
        cves: vec![],
        applicability: Applicability::for_product_kb("Windows Server 2022", kb),
        files: vec![],
    }
}

/// The example site (`examples/repo` at this repository's HEAD, the fleet of
/// `examples/fleet.yaml`) reconciled once at `now` into a SQLite store file in `dir`, and
/// the site engine's state derived from that store. Returns the store path and the state.
pub fn example_site(dir: &std::path::Path, now: Timestamp) -> (String, patchops::site::SiteState) {
    use std::sync::Arc;
    let store_path = dir.join("site.db").display().to_string();
    let source = patchops::git::GitSource {
        repo: env!("CARGO_MANIFEST_DIR").into(),
        revision: None,
        path: Some("examples/repo".into()),
        cache_dir: dir.join("state").join("git-cache"),
    };
    let fleet = patchops::sim::SimFleet::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/fleet.yaml"
    )))
    .unwrap();
    let store = patchops::store::open(&store_path).unwrap();
    let mut pipeline = patchops::pipeline::Pipeline::new(source.clone(), store, Some(fleet));
    let (record, _) = pipeline.reconcile_once(now).unwrap();
    let (_, desired) = patchops::pipeline::load_desired(&source).unwrap();
    let catalog_status = record
        .statuses
        .iter()
        .filter(|s| s.kind == "UpdateCatalog")
        .map(|s| (s.name.clone(), serde_json::from_value(s.status.clone()).unwrap()))
        .collect();
    let previous = patchops::reconcile::previous_from(&record.statuses);
    let state = patchops::site::SiteState::derive(
        Arc::new(desired),
        Arc::new(pipeline.store.load_catalog().unwrap()),
        catalog_status,
        pipeline.store.load_fleet().unwrap(),
        &previous,
        now,
    );
    (store_path, state)
}
