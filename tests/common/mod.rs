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
