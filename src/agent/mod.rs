//! The client side: the agent loop (`runner`) and its conversation with the management
//! point (`client`), when and how to scan (`schedule`, seed Table 2), scanners that decide
//! for each catalog update whether it applies and is installed (seed step 2), the managed
//! system (`machine`) and installers (seed step 4).

pub mod client;
pub mod installers;
pub mod machine;
pub mod runner;
pub mod scanners;
pub mod schedule;

pub use runner::{Agent, AgentOptions, Download};
