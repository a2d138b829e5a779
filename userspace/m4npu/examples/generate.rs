//! Streams a greedy generation from the foundation model's backbone, a
//! piece of text per token as each GENERATE job completes
//! (`Device::generate`); with `--adapter`, through an app's LoRA on the
//! backbone (`Device::generate_with`).
//!
//!     cargo run --example generate -- [--adapter STYLE.m4a] [--max-new-tokens N] "PROMPT"
//!
//! A device must serve jobs (`/dev/m4npu` with vnpud running); on the host
//! this only builds.

use std::io::Write;
use std::process::ExitCode;

use m4npu::model::BACKBONE;
use m4npu::{Device, Error, Result};

const USAGE: &str = "usage: generate [--adapter STYLE.m4a] [--max-new-tokens N] PROMPT";

struct Args {
    adapter: Option<String>,
    max_new_tokens: usize,
    prompt: String,
}

fn parse_args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let (mut adapter, mut max_new_tokens, mut prompt) = (None, 32, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--adapter" => adapter = Some(args.next()?),
            "--max-new-tokens" => max_new_tokens = args.next()?.parse().ok()?,
            _ if arg.starts_with("--") || prompt.is_some() => return None,
            _ => prompt = Some(arg),
        }
    }
    Some(Args { adapter, max_new_tokens, prompt: prompt? })
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match generate(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(args: &Args) -> Result<()> {
    let dev = Device::open()?;
    // A session's room counts the prompt's tokens too: tokenize it with the
    // backbone's tokenizer (from the firmware) to leave room for the rest.
    let tokenizer = dev.model_meta()?.tokenizer(BACKBONE)?;
    let prompt_tokens =
        tokenizer.encode(args.prompt.as_str(), false).map_err(|e| Error::Tokenizer(e.to_string()))?.len();
    let max_tokens = prompt_tokens + args.max_new_tokens;

    let adapter = args.adapter.as_ref().map(|path| dev.load_adapter_file(path)).transpose()?;
    let mut session = match &adapter {
        Some(adapter) => dev.generate_with(adapter, &args.prompt, max_tokens)?,
        None => dev.generate(&args.prompt, max_tokens)?,
    };

    print!("{}", args.prompt);
    loop {
        // Show each piece as it comes, not once a line is complete.
        let _ = std::io::stdout().flush();
        match session.next() {
            Some(Ok(piece)) => print!("{piece}"),
            Some(Err(e)) => {
                println!();
                return Err(e);
            }
            None => break,
        }
    }
    println!();
    eprintln!("({} tokens generated)", session.tokens().len());
    Ok(())
}
