//! `clickpath topics create`: every configured topic, and the stateful stages' changelogs.

use crate::app::GlobalArgs;

/// Arguments of `clickpath topics`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: TopicsAction,
}

/// A topic administration action.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TopicsAction {
    /// Create every configured topic that does not exist yet.
    Create,
}

/// `clickpath topics create`: creates what is missing and prints one line per topic.
pub fn run(args: &TopicsArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let TopicsAction::Create = args.action;
    let cfg = global.load_config()?;
    clickpath_runtime::kafka::check_reachable(&cfg.bus).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let created = rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))?;
    for (role, name) in cfg.topics.all() {
        let state = if created.iter().any(|c| c == name) {
            "created"
        } else {
            "exists"
        };
        println!("{role:<13} {name:<32} {state}");
    }
    // Stateful stages' compacted changelogs, partitioned like their input (the stages also make
    // them at start; the scorer keeps one only with a sequence model, and makes it then), and the
    // chained topology's.
    for (stage, input) in [
        ("cleaning", &cfg.topics.raw),
        ("sessionizer", &cfg.topics.clean),
        ("windower", &cfg.topics.clean),
        ("analytics", &cfg.topics.clean),
        ("detector", &cfg.topics.clean),
        (clickpath_stages::chain::CHAIN, &cfg.topics.raw),
    ] {
        let changelog = clickpath_runtime::changelog::changelog_topic(&cfg, stage);
        clickpath_runtime::changelog::ensure_changelog_topic(&cfg, &changelog, input)?;
        println!("{:<13} {changelog:<32} ready", "changelog");
    }
    Ok(())
}
