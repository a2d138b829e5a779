//! `m4`: inspect and drive the m4npu NPU from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use m4npu::{Device, DeviceInfo};

mod pack;
mod pack_adapter;
mod progress;

#[derive(Parser)]
#[command(version, about = "m4npu: the foundation model as NPU firmware")]
struct Cli {
    /// Device node.
    #[arg(long, global = true, default_value_os_t = Device::default_path())]
    device: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Driver, firmware and pool information (GET_INFO).
    Info,
    /// Live per-context view: pid, NPU memory, buffers, adapters, jobs,
    /// NPU busy time (from each context's fdinfo).
    Top {
        /// Print once and exit (implied by --json).
        #[arg(long)]
        once: bool,
        /// Refresh period in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Run a task on the foundation model (needs a device such as vnpud).
    #[command(subcommand)]
    Run(Run),
    /// Build blobs for the NPU.
    #[command(subcommand)]
    Pack(Pack),
    /// Print the shell completion script for SHELL (as this program is
    /// named: `m4npu` when installed from the distribution package).
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (m4.1, m4-run.1, ...) into DIR, for packagers.
    #[command(hide = true)]
    Manpages { dir: PathBuf },
}

#[derive(Subcommand)]
enum Run {
    /// Sentence embedding of TEXT by the text encoder.
    Embed { text: String },
    /// Classify TEXT, the feature vectors of a file, or both (an image and
    /// its caption), with an adapter.
    Classify {
        /// The classify adapter (`.m4a`).
        #[arg(long)]
        adapter: PathBuf,
        /// Text to classify (with --features: the text that goes with
        /// them, an image's caption say).
        #[arg(required_unless_present = "features")]
        text: Option<String>,
        /// A file of feature vectors: one vector per line, values separated
        /// by spaces or commas (the adapter's feature_dim each, less the
        /// width of a text embedding it takes).
        #[arg(long)]
        features: Option<PathBuf>,
        /// Labels to print, best first.
        #[arg(long, default_value_t = 3)]
        top: usize,
    },
    /// Greedy continuation of PROMPT by the backbone, streamed.
    Generate {
        prompt: String,
        /// Tokens to generate at most.
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// A generation adapter (LoRA on the backbone).
        #[arg(long)]
        adapter: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Pack {
    /// The foundation model firmware: SmolLM2 backbone plus MiniLM text encoder.
    Firmware {
        /// Where to write the blob (install it as /lib/firmware/m4npu/foundation.m4fw).
        #[arg(short, long)]
        out: PathBuf,
        /// Backbone GGUF (default: from the weights cache).
        #[arg(long)]
        gguf: Option<PathBuf>,
        /// Text encoder safetensors (default: from the weights cache).
        #[arg(long)]
        safetensors: Option<PathBuf>,
        /// Text encoder tokenizer.json (default: from the weights cache).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Model name recorded in the firmware.
        #[arg(long, default_value = pack::FOUNDATION_NAME)]
        name: String,
        /// Instead: a tiny model of the same architecture with random
        /// weights from this seed, for fast tests (no tokenizers).
        #[arg(long, value_name = "SEED", conflicts_with_all = ["gguf", "safetensors", "tokenizer"])]
        synthetic: Option<u64>,
    },
    /// An adapter (`.m4a`) for one foundation firmware, from trained tensors.
    Adapter {
        /// Where to write the adapter.
        #[arg(short, long)]
        out: PathBuf,
        /// The firmware it is for: binds the adapter to its hash and checks
        /// the tensors against its shapes.
        #[arg(long)]
        firmware: PathBuf,
        /// Adapter name recorded in the blob.
        #[arg(long)]
        name: String,
        /// Metadata JSON (task, submodel, labels, feature_dim,
        /// text_embedding, layers, lora_alpha; see
        /// m4npu_format::adapter_meta).
        #[arg(long, requires = "tensors", conflicts_with = "peft")]
        meta: Option<PathBuf>,
        /// Safetensors with the adapter's F32 tensors (lora.<layer>.<proj>.a/b,
        /// head.weight/bias, input.weight/bias).
        #[arg(long, requires = "meta")]
        tensors: Option<PathBuf>,
        /// Instead: a PEFT LoRA directory (adapter_config.json +
        /// adapter_model.safetensors) for generation on the backbone.
        #[arg(long, required_unless_present = "meta")]
        peft: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Info => info(&cli.device, cli.json).map_err(|e| e.to_string()),
        Cmd::Run(run) => task(&cli.device, cli.json, run).map_err(|e| e.to_string()),
        Cmd::Top { once, interval_ms } => top(&cli.device, cli.json, once, interval_ms).map_err(|e| e.to_string()),
        Cmd::Pack(Pack::Firmware { out, gguf, safetensors, tokenizer, name, synthetic }) => {
            let d = pack::Sources::default();
            let src = pack::Sources {
                gguf: gguf.unwrap_or(d.gguf),
                safetensors: safetensors.unwrap_or(d.safetensors),
                tokenizer: tokenizer.unwrap_or(d.tokenizer),
            };
            let blob = match synthetic {
                Some(seed) => pack::synthetic_firmware(&name, seed),
                None => pack::firmware(&src, &name),
            };
            blob.and_then(|blob| {
                let fw = m4npu_format::Firmware::parse_unverified(&blob).map_err(|e| e.to_string())?;
                wrote(&out, &blob, &fw.content_hash(), cli.json)
            })
        }
        Cmd::Pack(Pack::Adapter { out, firmware, name, meta, tensors, peft }) => {
            pack_adapter(&out, &firmware, &name, meta.as_deref(), tensors.as_deref(), peft.as_deref(), cli.json)
        }
        Cmd::Completions { shell } => {
            let mut cmd = Cli::command().name(program_name());
            clap_complete::generate(shell, &mut cmd, program_name(), &mut std::io::stdout());
            Ok(())
        }
        Cmd::Manpages { dir } => clap_mangen::generate_to(Cli::command().name(program_name()), &dir)
            .map_err(|e| format!("cannot write man pages into {}: {e}", dir.display())),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("m4: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The name this program runs as (`m4`, or `m4npu` as the distribution
/// package installs it, /usr/bin/m4 being GNU m4): what completions and
/// man pages call it.
fn program_name() -> &'static str {
    let name = std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "m4".into());
    // Once per run; clap's names are &'static str.
    Box::leak(name.into_boxed_str())
}

fn wrote(out: &std::path::Path, blob: &[u8], hash: &[u8; 32], json: bool) -> Result<(), String> {
    std::fs::write(out, blob).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    if json {
        println!("{}", serde_json::json!({ "out": out, "size": blob.len(), "sha256": hex(hash) }));
    } else {
        println!("wrote {} ({} bytes, sha256 {})", out.display(), blob.len(), hex(hash));
    }
    Ok(())
}

fn pack_adapter(
    out: &std::path::Path,
    firmware: &std::path::Path,
    name: &str,
    meta: Option<&std::path::Path>,
    tensors: Option<&std::path::Path>,
    peft: Option<&std::path::Path>,
    json: bool,
) -> Result<(), String> {
    let steps = progress::Steps::new();
    let region = pack_adapter::load_firmware(firmware, &steps)?;
    let fw = m4npu_format::Firmware::parse_unverified(&region).map_err(|e| e.to_string())?;
    let (meta, tensors) = match (meta, tensors, peft) {
        (Some(m), Some(t), _) => {
            let meta = std::fs::read(m).map_err(|e| format!("cannot read {}: {e}", m.display()))?;
            (m4npu_format::adapter_meta::AdapterMeta::parse(&meta)?, pack_adapter::read_safetensors(t)?)
        }
        (_, _, Some(dir)) => pack_adapter::from_peft(dir, &fw)?,
        _ => return Err("give --meta and --tensors, or --peft".into()),
    };
    steps.begin("checking the adapter against the firmware");
    let blob = pack_adapter::build(name, &fw, &region, &meta, &tensors)?;
    steps.done(&format!("{} tensors checked against the firmware's shapes", tensors.len()));
    drop(steps);
    let hash = m4npu_format::Adapter::parse(&blob).map_err(|e| e.to_string())?.content_hash();
    wrote(out, &blob, &hash, json)
}

fn info(path: &PathBuf, json: bool) -> m4npu::Result<()> {
    let info = Device::open_path(path)?.info()?;
    if json {
        println!("{}", info_json(&info));
    } else {
        print!("{}", info_text(&info));
    }
    Ok(())
}

fn task(path: &std::path::Path, json: bool, run: Run) -> m4npu::Result<()> {
    use std::io::Write;
    let dev = Device::open_path(path)?;
    match run {
        Run::Embed { text } => {
            let v = dev.embed(&text)?;
            if json {
                println!("{}", serde_json::json!({ "text": text, "embedding": v }));
            } else {
                let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:+.4}")).collect();
                println!("{} dimensions: [{}, ...]", v.len(), head.join(", "));
            }
        }
        Run::Classify { adapter, text, features, top } => {
            let adapter = dev.load_adapter_file(&adapter)?;
            let labels = match (text, features) {
                (Some(text), None) => dev.classify(&adapter, &text)?,
                (None, Some(path)) => {
                    let (values, dim) = read_features(&path)?;
                    dev.classify_features(&adapter, &values, dim)?
                }
                (Some(text), Some(path)) => {
                    let (values, dim) = read_features(&path)?;
                    dev.classify_features_and_text(&adapter, &values, dim, &text)?
                }
                (None, None) => unreachable!("clap requires one"),
            };
            if json {
                let rows: Vec<_> = labels
                    .iter()
                    .map(|l| serde_json::json!({ "label": l.name, "index": l.index, "score": l.score, "logit": l.logit }))
                    .collect();
                println!("{}", serde_json::json!({ "adapter": adapter.name(), "labels": rows }));
            } else {
                for l in labels.iter().take(top) {
                    println!("{:>7.2}%  {}", 100.0 * l.score, l.name);
                }
            }
        }
        Run::Generate { prompt, max_new_tokens, adapter } => {
            let meta = dev.model_meta()?;
            let prompt_tokens = meta.tokenizer(m4npu::model::BACKBONE)?.encode(prompt.as_str(), false).map_or(0, |e| e.len());
            let adapter = adapter.map(|a| dev.load_adapter_file(a)).transpose()?;
            let mut session = match &adapter {
                Some(a) => dev.generate_with(a, &prompt, prompt_tokens + max_new_tokens)?,
                None => dev.generate(&prompt, prompt_tokens + max_new_tokens)?,
            };
            let mut text = String::new();
            if !json {
                print!("{prompt}");
            }
            for piece in session.by_ref() {
                let piece = piece?;
                if !json {
                    print!("{piece}");
                    let _ = std::io::stdout().flush();
                }
                text.push_str(&piece);
            }
            if json {
                println!("{}", serde_json::json!({ "prompt": prompt, "text": text, "tokens": session.tokens() }));
            } else {
                println!();
            }
        }
    }
    Ok(())
}

/// Feature vectors from a text file: one per line, spaces or commas.
fn read_features(path: &std::path::Path) -> m4npu::Result<(Vec<f32>, usize)> {
    let text = std::fs::read_to_string(path).map_err(|e| m4npu::Error::Io { what: "reading the features file", source: e })?;
    let mut values = Vec::new();
    let mut dim = None;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row: Vec<f32> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| m4npu::Error::InvalidJob(format!("{}:{}: {e}", path.display(), i + 1)))?;
        if *dim.get_or_insert(row.len()) != row.len() {
            return Err(m4npu::Error::InvalidJob(format!("{}:{}: rows differ in width", path.display(), i + 1)));
        }
        values.extend(row);
    }
    Ok((values, dim.ok_or_else(|| m4npu::Error::InvalidJob(format!("{}: no feature vectors", path.display())))?))
}

fn top(path: &std::path::Path, json: bool, once: bool, interval_ms: u64) -> m4npu::Result<()> {
    loop {
        let contexts = m4npu::FdInfo::all_contexts(path)?;
        if json {
            let rows: Vec<serde_json::Value> = contexts
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "context": c.client_id, "pid": c.pid, "memory": c.memory_bytes, "quota": c.quota_bytes,
                        "buffers": c.buffers, "adapters": c.adapters, "jobs_submitted": c.jobs_submitted,
                        "jobs_completed": c.jobs_completed, "jobs_failed": c.jobs_failed,
                        "jobs_inflight": c.jobs_inflight, "jobs_queued": c.jobs_queued,
                        "queue_delay_ns": c.queue_delay_ns, "busy_ns": c.engine_ns,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(rows));
            return Ok(());
        }
        if !once {
            // Clear the screen and home the cursor, as top(1) redraws.
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "{:>8} {:>8} {:>12} {:>5} {:>5} {:>9} {:>7} {:>8} {:>7} {:>12} {:>12}",
            "CONTEXT", "PID", "MEMORY", "BOS", "ADPT", "JOBS", "FAILED", "INFLIGHT", "QUEUED", "BUSY", "WAITED"
        );
        for c in &contexts {
            println!(
                "{:>8} {:>8} {:>10}Ki {:>5} {:>5} {:>9} {:>7} {:>8} {:>7} {:>10.3}s {:>10.3}s",
                c.client_id,
                c.pid,
                c.memory_bytes / 1024,
                c.buffers,
                c.adapters,
                c.jobs_completed,
                c.jobs_failed,
                c.jobs_inflight,
                c.jobs_queued,
                c.engine_ns as f64 / 1e9,
                c.queue_delay_ns as f64 / 1e9
            );
        }
        if once {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(interval_ms));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn info_json(i: &DeviceInfo) -> serde_json::Value {
    serde_json::json!({
        "uapi_version": format!("{}.{}", i.uapi_version >> 16, i.uapi_version & 0xffff),
        "driver_version": i.driver_version,
        "context_id": i.context_id,
        "pool_size": i.pool_size,
        "pool_used": i.pool_used,
        "model": i.model.as_ref().map(|m| serde_json::json!({
            "name": m.name, "size": m.size, "hash": hex(&m.hash),
        })),
    })
}

fn info_text(i: &DeviceInfo) -> String {
    let model = match &i.model {
        Some(m) => format!("{} ({} bytes, sha256 {})", m.name, m.size, hex(&m.hash)),
        None => "none loaded".into(),
    };
    format!(
        "driver:     m4npu {} (uapi {}.{})\ncontext:    {}\nnpu memory: {} of {} bytes used\nmodel:      {}\n",
        i.driver_version,
        i.uapi_version >> 16,
        i.uapi_version & 0xffff,
        i.context_id,
        i.pool_used,
        i.pool_size,
        model
    )
}
