//! `m4-train`: trains an app's adapter offline on the frozen foundation
//! firmware and packs it as an `.m4a` bound to that firmware, then measures
//! it with the device's own code.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};

use m4_train::{apps, data, eval, recipe, report};

#[derive(Parser)]
#[command(version, about = "Train m4npu adapters on the frozen foundation model")]
struct Cli {
    /// Foundation firmware (`m4 pack firmware`; xtask builds it into target/guest).
    #[arg(long, global = true, default_value = "target/guest/foundation.m4fw")]
    firmware: PathBuf,
    /// Benchmark data (tools/eaibench/setup.sh).
    #[arg(long, global = true, default_value_os_t = data::data_root())]
    data: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per run: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Train TASK's adapter and write it.
    Train {
        task: String,
        /// Output `.m4a` (default: TASK.m4a).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Stop after N optimizer steps (a quick check of the path).
        #[arg(long)]
        max_steps: Option<usize>,
        /// Backbone layers to train through and run (the early exit); for
        /// text tasks, the encoder's top layers the LoRA adapts.
        #[arg(long)]
        layers: Option<usize>,
        #[arg(long)]
        epochs: Option<usize>,
        /// Peak learning rate (the recipe's otherwise).
        #[arg(long)]
        lr: Option<f64>,
        /// LoRA rank (0: no LoRA, only the input projection and head).
        #[arg(long)]
        rank: Option<usize>,
        /// Image tasks: largest random shift of a training image, in pixels (0: none).
        #[arg(long)]
        shift: Option<usize>,
        /// Feature rows per backbone token (the task's recipe otherwise).
        #[arg(long)]
        group: Option<usize>,
        /// Sensor tasks: augment each training series anew every time it is
        /// seen: `shift,scale,jitter[,bands]` (rows, amplitude fraction,
        /// noise as a fraction of the spread, moves across frequency
        /// bands), or `none`.
        #[arg(long, value_parser = parse_series_aug)]
        series_aug: Option<SeriesAugArg>,
        /// Tasks with feature rows and a text: the text as `tokens` of the
        /// backbone or as the text encoder's sentence `embedding`.
        #[arg(long, value_parser = ["tokens", "embedding"])]
        text: Option<String>,
        /// Seed of the initial weights and sample order (1 otherwise).
        #[arg(long)]
        seed: Option<u64>,
        /// Projections the LoRA adapts: q,k,v,o,gate,up,down.
        #[arg(long, value_delimiter = ',')]
        targets: Option<Vec<String>>,
        /// Hold out this fraction of each class of train (of its groups,
        /// speakers say, for a task with `train_groups.json`) and report the
        /// adapter's accuracy on it (choosing a recipe; the adapter is then
        /// trained without those samples).
        #[arg(long)]
        holdout: Option<f64>,
        /// Cross-validate the recipe on train in this many folds (by group
        /// for a task with `train_groups.json`) and print its accuracy;
        /// writes no adapter.
        #[arg(long, conflicts_with = "holdout")]
        folds: Option<usize>,
        /// Test samples to evaluate on the host (device code, engine) after training.
        #[arg(long, default_value_t = usize::MAX)]
        eval: usize,
    },
    /// The benchmark report: every task's baseline (tools/eaibench) next to
    /// its adapter from ADAPTERS/<task>.m4a, evaluated on the host path.
    Report {
        adapters: PathBuf,
        /// Write the Markdown here too.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The hand-written sets (paraphrases, questions).
        #[arg(long, default_value = "tools/eaibench/sets")]
        sets: PathBuf,
    },
    /// Be an app: classify TASK's first test samples through /dev/m4npu
    /// with ADAPTER; print the result as a JSON line.
    App {
        task: String,
        #[arg(long)]
        adapter: PathBuf,
        #[arg(long, default_value_t = 20)]
        samples: usize,
    },
    /// The demo: one app process per task at once (adapters from
    /// ADAPTERS/<task>.m4a), plus a generation, then the memory summary.
    Apps {
        adapters: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "sentiment,digits,basicmotions,keywords")]
        tasks: Vec<String>,
        #[arg(long, default_value_t = 20)]
        samples: usize,
        #[arg(long, default_value = "The three primary colors are")]
        prompt: String,
    },
    /// Accuracy of ADAPTER on TASK's test split, on the host: the device's
    /// own job code (vnpud) and engine on the same firmware.
    Eval {
        task: String,
        adapter: PathBuf,
        #[arg(long, default_value_t = usize::MAX)]
        limit: usize,
        /// Print one JSON line (task, samples, correct, digest), as `app` does.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("m4-train: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    // The apps run where the device is and need no firmware file.
    match &cli.cmd {
        Cmd::App { task, adapter, samples } => {
            let r = apps::app(&cli.data.join(task), adapter, *samples)?;
            println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
            return Ok(());
        }
        Cmd::Apps { adapters, tasks, samples, prompt } => return apps::apps(&cli.data, adapters, tasks, *samples, prompt),
        _ => {}
    }
    let fw = eval::FirmwareFile::read(&cli.firmware)?;
    match cli.cmd {
        Cmd::App { .. } | Cmd::Apps { .. } => unreachable!("handled above"),
        Cmd::Train { task, out, max_steps, layers, epochs, lr, rank, group, series_aug, text, seed, targets, holdout, folds, shift, eval } => {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{task}.m4a")));
            let start = Instant::now();
            let series = series_aug.map(|a| a.0);
            let text_embedding = text.map(|t| t == "embedding");
            let ov = recipe::Overrides { max_steps, layers, epochs, lr, rank, group, targets, holdout, shift, series, text_embedding, seed };
            if let Some(k) = folds {
                recipe::cross_validate(&fw, &cli.data.join(&task), &ov, k)?;
                println!("{task}: cross-validated in {:.0} s", start.elapsed().as_secs_f64());
                return Ok(());
            }
            let blob = recipe::train(&fw, &cli.data.join(&task), &ov)?;
            std::fs::write(&out, &blob).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            let seconds = start.elapsed().as_secs_f64();
            println!("{task}: wrote {} ({} bytes) in {seconds:.0} s", out.display(), blob.len());
            // Beside the adapter, for the report's training-time column.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let log = serde_json::json!({ "task": task, "train_seconds": seconds.round(), "cores": cores });
            let log_path = out.with_extension("train.json");
            std::fs::write(&log_path, format!("{log}\n")).map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
            if eval > 0 {
                report(&fw, &cli.data.join(&task), &out, eval, false)?;
            }
            Ok(())
        }
        Cmd::Eval { task, adapter, limit, json } => report(&fw, &cli.data.join(&task), &adapter, limit, json),
        Cmd::Report { adapters, out, sets } => {
            let md = report::markdown(&fw, &cli.data, &adapters, &sets)?;
            print!("{md}");
            if let Some(out) = out {
                std::fs::write(&out, &md).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            }
            Ok(())
        }
    }
}

fn report(fw: &eval::FirmwareFile, dir: &Path, adapter: &Path, limit: usize, json: bool) -> Result<(), String> {
    let blob = std::fs::read(adapter).map_err(|e| format!("cannot read {}: {e}", adapter.display()))?;
    let task = data::Task::open(dir)?;
    let start = Instant::now();
    let subs = fw.sub_models()?;
    let model = vnpud::foundation::Foundation::build(&subs)?;
    let r = eval::accuracy(fw, &model, &task, &blob, limit)?;
    if json {
        let line = serde_json::json!({ "task": task.meta.task, "samples": r.total, "correct": r.correct, "digest": r.digest });
        println!("{line}");
        return Ok(());
    }
    println!(
        "{}: accuracy {:.2}% on {} test samples (host: vnpud's job code on the engine, {:.1} s)",
        task.meta.task,
        100.0 * r.accuracy(),
        r.total,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--series-aug`: an augmentation or `none`.
#[derive(Clone, Copy, Debug)]
struct SeriesAugArg(Option<m4_train::augment::SeriesAug>);

fn parse_series_aug(s: &str) -> Result<SeriesAugArg, String> {
    if s == "none" {
        return Ok(SeriesAugArg(None));
    }
    m4_train::augment::SeriesAug::parse(s).map(|a| SeriesAugArg(Some(a)))
}
