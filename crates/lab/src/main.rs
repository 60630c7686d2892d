//! `clickpath-lab`: benchmarks and fault injection for clickpath (see the library's docs).

use clap::{Parser, Subcommand};
use clickpath_cli::app::{GlobalArgs, main_with};
use clickpath_lab::{bench, bench_restore, bench_scorer, chaos, evaluate_detector};
use std::io::IsTerminal;
use std::path::PathBuf;

/// The same allocator as `clickpath`, so in-process measurements match the deployed binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "clickpath-lab",
    version,
    about = "Benchmarks and fault injection for clickpath, on a real Kafka broker."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// End-to-end load test on a real broker: pass-through baseline, pipeline at maximum and fixed rates.
    Bench(bench::BenchArgs),
    /// Measure how fast the sessionizer restores its state from the changelog (needs a broker).
    BenchRestore(bench_restore::BenchRestoreArgs),
    /// Time the sequence model's online step per batch size (CPU, or CUDA with --features cuda).
    BenchScorer(bench_scorer::BenchScorerArgs),
    /// Fault injection on a real broker: hostile input, SIGKILLs, broker restart, rebalance (RELIABILITY.md).
    Chaos {
        /// The clickpath binary to run, kill and restart (default: the one beside clickpath-lab).
        #[arg(long, global = true, env = "CLICKPATH_BIN")]
        clickpath: Option<PathBuf>,
        #[command(subcommand)]
        scenario: chaos::ChaosCommand,
    },
    /// Measure the detector on labelled generator scenarios: precision, recall, latency per type.
    EvaluateDetector(evaluate_detector::EvaluateDetectorArgs),
}

fn main() {
    let cli = Cli::parse();
    // The load test draws its own progress; log lines would tear it.
    let quiet = matches!(cli.command, Command::Bench(_));
    main_with(&cli.global, quiet, || {
        let cfg = cli.global.load_config()?;
        match cli.command {
            Command::Bench(args) => {
                let report = bench::run_bench(cfg, &args, std::io::stderr().is_terminal())?;
                print!("{}", report.render());
                Ok(())
            }
            Command::BenchRestore(args) => bench_restore::run_command(&args, cfg),
            Command::BenchScorer(args) => bench_scorer::run_command(&args),
            Command::Chaos {
                clickpath,
                scenario,
            } => {
                let clickpath = clickpath_lab::clickpath_binary(clickpath)?;
                chaos::run_command(scenario, &cfg, &clickpath)
            }
            Command::EvaluateDetector(args) => evaluate_detector::run_command(&args, cfg),
        }
    });
}
