//! The reference runtimes as long-lived child processes
//! (tools/fixtures/bench_{llamacpp,onnxruntime}.py, line protocol in
//! tools/fixtures/peer_common.py): started once, then asked for one timing
//! sample per round, so rounds alternate engine and peer samples.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub struct Peer {
    pub name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The ready line: engine name, per-variant accuracy, references.
    pub ready: Value,
}

impl Peer {
    /// Starts `script --serve` and waits for its ready line (its set-up:
    /// loading, requantizing on first use, accuracy references).
    pub fn start(
        name: &'static str,
        script: &str,
        threads: usize,
        request: &Path,
    ) -> Result<Peer, String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tools/fixtures")
            .join(script);
        let python = std::env::var("VNPU_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(&python)
            .arg(&path)
            .args(["--serve", "--threads", &threads.to_string(), "--request"])
            .arg(request)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut p = Peer {
            name,
            child,
            stdin,
            stdout,
            ready: Value::Null,
        };
        let ready = p
            .read_json()
            .map_err(|e| format!("{script} did not start: {e}"))?;
        if ready["ready"] != Value::Bool(true) {
            return Err(format!("{script}: unexpected first line {ready}"));
        }
        p.ready = ready;
        Ok(p)
    }

    /// One sample of each variant: `{variant: {metric: value}}`.
    pub fn measure(&mut self) -> Result<Value, String> {
        let stdin = self.stdin.as_mut().ok_or("peer closed")?;
        stdin
            .write_all(b"measure\n")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("{}: {e}", self.name))?;
        let v = self.read_json()?;
        match v.get("error") {
            Some(e) => Err(format!("{}: {e}", self.name)),
            None => Ok(v),
        }
    }

    pub fn engine(&self) -> &str {
        self.ready["engine"].as_str().unwrap_or(self.name)
    }

    /// The next JSON line (other lines, e.g. a library's chatter, skipped).
    fn read_json(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) => return Err(format!("{} exited", self.name)),
                Ok(_) => {
                    if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                        return Ok(v);
                    }
                }
                Err(e) => return Err(format!("{}: {e}", self.name)),
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: the peer's loop ends
        let _ = self.child.wait();
    }
}
