//! The client side: when and how to scan (`schedule`, seed Table 2), scanners that
//! decide, for each catalog update, whether it applies to this system and whether it is
//! installed (seed step 2's compliance scan), and installers (seed step 4).

pub mod installers;
pub mod scanners;
pub mod schedule;
