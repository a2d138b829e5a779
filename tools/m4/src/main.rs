//! `m4`: inspect and drive the m4npu NPU from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use m4npu::{Device, DeviceInfo};

mod pack;

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
}

#[derive(Subcommand)]
enum Run {
    /// Sentence embedding of TEXT by the text encoder.
    Embed { text: String },
    /// Greedy continuation of PROMPT by the backbone, streamed.
    Generate {
        prompt: String,
        /// Tokens to generate at most.
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
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
                std::fs::write(&out, &blob).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
                let fw = m4npu_format::Firmware::parse_unverified(&blob).map_err(|e| e.to_string())?;
                if cli.json {
                    println!("{}", serde_json::json!({ "out": out, "size": blob.len(), "sha256": hex(&fw.content_hash()) }));
                } else {
                    println!("wrote {} ({} bytes, sha256 {})", out.display(), blob.len(), hex(&fw.content_hash()));
                }
                Ok(())
            })
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("m4: {e}");
            ExitCode::FAILURE
        }
    }
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
        Run::Generate { prompt, max_new_tokens } => {
            let meta = dev.model_meta()?;
            let prompt_tokens = meta.tokenizer(m4npu::model::BACKBONE)?.encode(prompt.as_str(), false).map_or(0, |e| e.len());
            let mut session = dev.generate(&prompt, prompt_tokens + max_new_tokens)?;
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
                        "jobs_inflight": c.jobs_inflight, "busy_ns": c.engine_ns,
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
        println!("{:>8} {:>8} {:>12} {:>5} {:>5} {:>9} {:>7} {:>8} {:>12}", "CONTEXT", "PID", "MEMORY", "BOS", "ADPT", "JOBS", "FAILED", "INFLIGHT", "BUSY");
        for c in &contexts {
            println!(
                "{:>8} {:>8} {:>10}Ki {:>5} {:>5} {:>9} {:>7} {:>8} {:>10.3}s",
                c.client_id,
                c.pid,
                c.memory_bytes / 1024,
                c.buffers,
                c.adapters,
                c.jobs_completed,
                c.jobs_failed,
                c.jobs_inflight,
                c.engine_ns as f64 / 1e9
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
