//! `patchops client revoke|release NAME`: revoke a registered client's token at once, or
//! free its name for the next host that registers under it.

use std::process::ExitCode;

use crate::{Error, Result};

#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Revoke a client's token at once (every management point sharing the store) and
    /// keep the name from registering again until it is released.
    Revoke {
        name: String,
        /// Store: a SQLite file path or a postgres:// URL.
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
        store: String,
    },
    /// Free a client's name: its token stops working and the next host registering under
    /// the name (with the enrollment secret) gets it, e.g. after a reinstall.
    Release {
        name: String,
        /// Store: a SQLite file path or a postgres:// URL.
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
        store: String,
    },
}

pub fn run(command: ClientCommand) -> Result<ExitCode> {
    let (name, store, revoke) = match command {
        ClientCommand::Revoke { name, store } => (name, store, true),
        ClientCommand::Release { name, store } => (name, store, false),
    };
    let mut store = crate::store::open_existing(&store)?;
    let found =
        if revoke { store.revoke_client(&name, jiff::Timestamp::now())? } else { store.release_client(&name)? };
    if !found {
        return Err(Error::Usage(format!("no client named {name:?} in {}; check the name", store.location())));
    }
    if revoke {
        println!("client {name}: token revoked; the name cannot register until `patchops client release {name}`");
    } else {
        println!("client {name}: released; the next host registering as {name} gets the name");
    }
    Ok(ExitCode::SUCCESS)
}
