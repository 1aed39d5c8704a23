//! `patchops content add`: copy files into the content library the management point
//! serves, under their sha256 (what the catalog names).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::Result;
use crate::output::OutputFormat;

#[derive(clap::Subcommand, Debug)]
pub enum ContentCommand {
    /// Copy files into the content library under their sha256 (what the catalog names).
    Add {
        /// The library folder (`serve --content-dir`).
        #[arg(long, env = "PATCHOPS_CONTENT_DIR", default_value = ".patchops/content")]
        content_dir: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

pub fn run(command: ContentCommand) -> Result<ExitCode> {
    let ContentCommand::Add { content_dir, files, output } = command;
    let library = crate::content::ContentLibrary::open(&content_dir)?;
    let added = files.iter().map(|f| library.add_file(f)).collect::<Result<Vec<_>>>()?;
    match output {
        OutputFormat::Table | OutputFormat::Wide => {
            for a in &added {
                println!("{}  {:>12}  {}", a.sha256, a.size, a.source.display());
            }
        }
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&added).expect("serializes")),
        OutputFormat::Yaml => print!("{}", serde_saphyr::to_string(&added).expect("serializes")),
    }
    Ok(ExitCode::SUCCESS)
}
