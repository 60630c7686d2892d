//! `clickpath validate`: check configuration files and report every problem at once.

use crate::app::GlobalArgs;
use clickpath_stages::ClickpathConfig;
use std::path::PathBuf;

/// Arguments of `clickpath validate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    /// Files to check (default: the --config file, or the embedded defaults).
    pub files: Vec<PathBuf>,
}

/// `clickpath validate`: one line per file, `ok` or its problems; fails when any is invalid.
pub fn run(args: &ValidateArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let files: Vec<Option<PathBuf>> = if args.files.is_empty() {
        vec![global.config.clone()]
    } else {
        args.files.iter().cloned().map(Some).collect()
    };
    let mut failed = 0;
    for f in &files {
        let name = f
            .as_ref()
            .map_or_else(|| "(defaults)".into(), |p| p.display().to_string());
        match ClickpathConfig::load(f.as_deref()) {
            Ok(_) => println!("{name}: ok"),
            Err(e) => {
                failed += 1;
                println!("{name}: {e}");
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} configuration(s) invalid",
        files.len()
    );
    Ok(())
}
