//! Embeds two sentences with the foundation model's text encoder
//! (`Device::embed`: tokenized with the firmware's own tokenizer, one EMBED
//! job each) and prints their cosine similarity.
//!
//!     cargo run --example embed -- ["FIRST SENTENCE" "SECOND SENTENCE"]
//!
//! A device must serve jobs (`/dev/m4npu` with vnpud running); on the host
//! this only builds.

use std::process::ExitCode;

use m4npu::{Device, Result};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (a, b) = match args.as_slice() {
        [] => ("A cat sits on the mat.", "A kitten is lying on the rug."),
        [a, b] => (a.as_str(), b.as_str()),
        _ => {
            eprintln!("usage: embed [FIRST SECOND]");
            return ExitCode::from(2);
        }
    };
    match similarity(a, b) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn similarity(a: &str, b: &str) -> Result<()> {
    let dev = Device::open()?;
    let (va, vb) = (dev.embed(a)?, dev.embed(b)?);
    println!("{a:?}\n{b:?}");
    println!("{} dimensions, cosine similarity {:.4}", va.len(), cosine(&va, &vb));
    Ok(())
}

/// The embeddings come L2-normalised, so this is their dot product; the
/// norms keep it right for any vectors.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::MIN_POSITIVE)
}
