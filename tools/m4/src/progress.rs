//! Progress for the packers' long steps: a byte bar while reading big
//! files, a spinner while converting, one line per finished step. Drawn on
//! stderr only when it is a terminal (indicatif's default), so scripts and
//! `--json` see clean output.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Steps {
    start: Instant,
    spinner: ProgressBar,
}

impl Steps {
    pub fn new() -> Self {
        let spinner = ProgressBar::new_spinner();
        spinner.set_style(ProgressStyle::with_template("{spinner} [{elapsed:>4}] {msg}").expect("valid template"));
        spinner.enable_steady_tick(Duration::from_millis(120));
        Steps { start: Instant::now(), spinner }
    }

    /// The step now running.
    pub fn begin(&self, what: &str) {
        self.spinner.set_message(what.to_string());
    }

    /// A finished step, kept on screen (and in logs when not a terminal).
    pub fn done(&self, what: &str) {
        let line = format!("  [{:>5.1}s] {what}", self.start.elapsed().as_secs_f32());
        if self.spinner.is_hidden() {
            eprintln!("{line}");
        } else {
            self.spinner.println(line);
        }
    }

    /// Reads a file with a byte progress bar.
    pub fn read_file(&self, path: &Path) -> Result<Vec<u8>, String> {
        let err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let mut f = std::fs::File::open(path).map_err(err)?;
        let len = f.metadata().map_err(err)?.len();
        let bar = ProgressBar::new(len).with_style(
            ProgressStyle::with_template("  {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("reading {}", path.file_name().unwrap_or_default().to_string_lossy()));
        let mut out = Vec::with_capacity(len as usize);
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut chunk).map_err(err)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        self.done(&format!("read {} ({} bytes)", path.display(), out.len()));
        Ok(out)
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        self.spinner.finish_and_clear();
    }
}
