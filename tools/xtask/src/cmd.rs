//! Running external programs, with long steps reported as they go.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Announces a step.
pub fn step(what: &str) {
    println!("==> {what}");
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `c` with inherited stdio; fails on a non-zero exit.
pub fn run(c: &mut Command) -> Result<()> {
    let st = c.status().with_context(|| format!("cannot run {}", describe(c)))?;
    if !st.success() {
        bail!("{} failed: {st}", describe(c));
    }
    Ok(())
}

/// Runs `c` and returns its stdout; fails on a non-zero exit.
pub fn output(c: &mut Command) -> Result<String> {
    let out = c.stderr(Stdio::inherit()).output().with_context(|| format!("cannot run {}", describe(c)))?;
    if !out.status.success() {
        bail!("{} failed: {}", describe(c), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a long, chatty step: the whole output goes to `log`, and a progress
/// line (output lines so far, elapsed time) is printed every 30 s. On failure
/// the last lines of the log are shown.
pub fn run_logged(c: &mut Command, label: &str, log: &Path) -> Result<()> {
    let mut file = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", describe(c)))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|r| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let start = Instant::now();
    let mut last = start;
    let mut lines = 0u64;
    let mut tail = std::collections::VecDeque::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                lines += 1;
                writeln!(file, "{line}")?;
                tail.push_back(line);
                if tail.len() > 40 {
                    tail.pop_front();
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if last.elapsed() >= Duration::from_secs(30) {
            last = Instant::now();
            println!("    {label}: {lines} lines of output, {}s", start.elapsed().as_secs());
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let st = child.wait()?;
    if !st.success() {
        for l in &tail {
            eprintln!("    | {l}");
        }
        bail!("{label} failed ({st}); full log: {}", log.display());
    }
    println!("    {label}: done in {}s", start.elapsed().as_secs());
    Ok(())
}
