//! `clickpath`: run the stages, generate and replay clickstreams, train models, run the demo.
//! Each command's arguments and code live in its own module of the library; this file only
//! dispatches. The benchmark and fault-injection harnesses are the second binary, `clickpath-lab`.

use clap::{Parser, Subcommand};
use clickpath_cli::app::{GlobalArgs, main_with};
use clickpath_cli::{
    demo, evaluate, generate, replay, replay_dead_letters, run_stage, tail, topics, train, validate,
};

/// mimalloc instead of glibc malloc: the stages allocate and free every decoded record's strings,
/// and malloc/free were a fifth of the stage chain's time (BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "clickpath",
    version,
    about = "Understand how shoppers move from first look to purchase, live on Kafka."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generator plus every stage on an embedded bus (or --brokers), with live progress and a summary.
    Demo(demo::DemoArgs),
    /// Run one stage (or all of them) until SIGTERM/SIGINT.
    Run(run_stage::RunArgs),
    /// Topic administration.
    Topics(topics::TopicsArgs),
    /// Generate clickstream events with ground truth, into files or the raw topic.
    Generate(generate::GenerateArgs),
    /// Replay a public data set file (or generator output) into the raw topic.
    Replay(replay::ReplayArgs),
    /// Fit a model from events in a file or a topic and write a versioned artifact directory.
    Train(train::TrainArgs),
    /// Compare models on the test split of events: sequence models, the baselines and, with the
    /// generator's truth file, its per-session purchase probability.
    Evaluate(evaluate::EvaluateArgs),
    /// Path analytics of events from a file or a topic (funnel, paths, time to convert, decision factors),
    /// or of the analytics topic's funnel aggregates, as one HTML page.
    Report(clickpath_report::ReportArgs),
    /// Check configuration files and report every problem at once.
    Validate(validate::ValidateArgs),
    /// Print a topic's records (alerts, predictions, sessions, ...) as JSON lines or a table,
    /// decoded with the schema each names; filters by user, alert type and severity.
    Tail(tail::TailArgs),
    /// Put dead letters back on the topic they were read from (or --to), byte for byte, once
    /// their cause is fixed; filters by error kind, stage and source topic.
    ReplayDeadLetters(replay_dead_letters::ReplayDeadLettersArgs),
}

fn main() {
    let cli = Cli::parse();
    // The demo draws its own progress; log lines would tear it.
    let quiet = matches!(cli.command, Command::Demo(_));
    main_with(&cli.global, quiet, || {
        let g = &cli.global;
        match &cli.command {
            Command::Demo(args) => demo::run(args, g),
            Command::Run(args) => run_stage::run(args, g),
            Command::Topics(args) => topics::run(args, g),
            Command::Generate(args) => generate::run(args, g),
            Command::Replay(args) => replay::run(args, g),
            Command::Train(args) => train::run(args, g),
            Command::Evaluate(args) => {
                print!("{}", evaluate::run(args)?);
                Ok(())
            }
            Command::Report(args) => {
                let cfg = g.load_config()?;
                print!("{}", clickpath_report::run(args, &cfg)?);
                Ok(())
            }
            Command::Validate(args) => validate::run(args, g),
            Command::Tail(args) => tail::run(args, g),
            Command::ReplayDeadLetters(args) => replay_dead_letters::run(args, g),
        }
    });
}
