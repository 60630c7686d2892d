//! What every clickpath binary does before its command: global options, logging, configuration.
//! `clickpath` and `clickpath-lab` share it so that both read `--config` and log the same way.

use clap::{Args, ValueEnum};
use clickpath_runtime::RunnerEnv;
use clickpath_schema::codec::Codec;
use clickpath_stages::ClickpathConfig;
use std::path::PathBuf;

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML), layered over the embedded defaults; CLICKPATH__SECTION__KEY variables win.
    #[arg(long, global = true, env = "CLICKPATH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl GlobalArgs {
    /// The configuration `--config` names, over the embedded defaults.
    pub fn load_config(&self) -> anyhow::Result<ClickpathConfig> {
        Ok(ClickpathConfig::load(self.config.as_deref())?)
    }
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The environment stages run in: `cfg` and the embedded schemas.
pub fn env_for(cfg: &ClickpathConfig) -> RunnerEnv {
    cfg.runner_env(Codec::embedded())
}

/// What must outlive logging: the OTLP exporter, flushed when dropped.
#[cfg(feature = "otlp")]
pub type TelemetryGuard = Option<clickpath_runtime::telemetry::OtlpGuard>;
/// Whether text logs get ANSI colours: on a terminal, unless `NO_COLOR` (no-color.org) is set.
fn use_colour(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

/// What must outlive logging (nothing without the `otlp` feature).
#[cfg(not(feature = "otlp"))]
pub type TelemetryGuard = Option<std::convert::Infallible>;

/// Logs to standard error at `default_level` (`RUST_LOG` wins), and exports spans over OTLP when
/// the build has the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Text logs are
/// coloured only on a terminal, and never with `NO_COLOR` set (no escape codes in a file, a pipe or
/// a log collector).
pub fn init_logging(format: LogFormat, default_level: &str) -> TelemetryGuard {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let colour = use_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    let otlp = clickpath_runtime::telemetry::OtlpSettings::from_env();
    #[cfg(feature = "otlp")]
    {
        match otlp.map(|s| clickpath_runtime::telemetry::otlp_layer(&s)) {
            Some(Ok((layer, guard))) => {
                registry.with(layer).init();
                Some(guard)
            }
            Some(Err(e)) => {
                registry.init();
                tracing::error!(error = %e, "Cannot set up the OTLP exporter; spans are not exported.");
                None
            }
            None => {
                registry.init();
                None
            }
        }
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        if let Some(s) = otlp {
            tracing::warn!(
                endpoint = %s.traces_endpoint,
                "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this build has no OTLP export (build with --features otlp)."
            );
        }
        None
    }
}

/// Runs `command` with logging set up, prints its error and exits 1 when it fails.
pub fn main_with(global: &GlobalArgs, quiet: bool, command: impl FnOnce() -> anyhow::Result<()>) {
    let result = {
        // Dropped before the exit below (process::exit skips destructors): flushes exported spans.
        let _telemetry = init_logging(global.log_format, if quiet { "warn" } else { "info" });
        command()
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
