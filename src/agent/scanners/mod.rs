//! Scanners turn a system's state into catalog facts and evaluate every update's
//! applicability rules against them.

pub mod dpkg;
pub mod rpm;

use crate::catalog::{Catalog, Facts, ScanVerdict};

/// Evaluate every update of the catalog against the facts: the applicable ones with
/// their verdict (Missing or Installed), in catalog order.
pub fn scan(catalog: &Catalog, facts: &Facts) -> Vec<(u32, ScanVerdict)> {
    catalog
        .updates
        .iter()
        .enumerate()
        .filter_map(|(i, u)| match u.applicability.evaluate(facts) {
            ScanVerdict::NotApplicable => None,
            v => Some((i as u32, v)),
        })
        .collect()
}
