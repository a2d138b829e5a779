//! Classifies a text or a sequence of feature vectors with an app's
//! adapter and prints every label, best first: loading an `.m4a` into this
//! process's context, reading what it does from its metadata
//! (`Adapter::meta`), then one CLASSIFY job (`Device::classify` or
//! `Device::classify_features`).
//!
//!     cargo run --example classify -- ADAPTER.m4a "some text"
//!     cargo run --example classify -- ADAPTER.m4a --features FILE
//!
//! FILE holds one feature vector per line (values separated by spaces or
//! commas), all of the adapter's `feature_dim`. A device must serve jobs
//! (`/dev/m4npu` with vnpud running); on the host this only builds.

use std::process::ExitCode;

use m4npu::{Device, Error, Result};

const USAGE: &str = "usage: classify ADAPTER.m4a TEXT | classify ADAPTER.m4a --features FILE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (adapter, query) = match args.as_slice() {
        [adapter, flag, file] if flag == "--features" => (adapter, Query::Features(file)),
        [adapter, text] if !text.starts_with("--") => (adapter, Query::Text(text)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match classify(adapter, query) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The library's errors say what went wrong and what to check.
            eprintln!("classify: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Query<'a> {
    Text(&'a str),
    Features(&'a str),
}

fn classify(path: &str, query: Query<'_>) -> Result<()> {
    let dev = Device::open()?;
    let adapter = dev.load_adapter_file(path)?;
    if let Some(meta) = adapter.meta() {
        let takes = match (meta.row_dim(), meta.text_embedding) {
            (Some(dim), Some(_)) => format!("{dim}-wide feature vectors and a text"),
            (Some(dim), None) => format!("{dim}-wide feature vectors"),
            _ => "text".to_string(),
        };
        println!(
            "{}: {:?} on the {:?}, {} labels, takes {takes}",
            adapter.name(),
            meta.task,
            meta.submodel,
            meta.labels.len()
        );
    }
    let labels = match query {
        Query::Text(text) => dev.classify(&adapter, text)?,
        Query::Features(file) => {
            let (values, dim) = read_features(file)?;
            dev.classify_features(&adapter, &values, dim)?
        }
    };
    for label in &labels {
        println!("{:>7.2}%  {}", 100.0 * label.score, label.name);
    }
    Ok(())
}

/// Feature vectors from a text file: one per line, all of one width.
fn read_features(path: &str) -> Result<(Vec<f32>, usize)> {
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::Io { what: "reading the features file", source })?;
    let (mut values, mut dim) = (Vec::new(), None);
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::parse::<f32>)
            .collect::<std::result::Result<Vec<f32>, _>>()
            .map_err(|e| Error::InvalidJob(format!("{path}:{}: {e}", i + 1)))?;
        if *dim.get_or_insert(row.len()) != row.len() {
            return Err(Error::InvalidJob(format!(
                "{path}:{}: {} values, the rows above have {}",
                i + 1,
                row.len(),
                dim.unwrap_or(0)
            )));
        }
        values.extend(row);
    }
    let dim = dim.ok_or_else(|| Error::InvalidJob(format!("{path}: no feature vectors")))?;
    Ok((values, dim))
}
