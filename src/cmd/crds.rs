//! `patchops crds`: print the CustomResourceDefinitions, or write one file per CRD.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write one file per CRD into this folder instead of printing them.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Some(dir) = args.dir else {
        print!("{}", crate::resources::crds_yaml());
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    for (file, crd) in crate::resources::crds() {
        let path = dir.join(file);
        std::fs::write(&path, crate::resources::crd_yaml(&crd)).map_err(|source| Error::Io { path, source })?;
    }
    Ok(ExitCode::SUCCESS)
}
