//! The accuracy benchmark (tools/eaibench): the report from the committed
//! adapters on the host path, and the same test splits on the real path,
//! through the module and vnpud in the release guest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::arch::Arch;
use crate::kernel::Flavour;
use crate::{cmd, guest, paths, setup};

/// The benchmark's tasks with a committed adapter.
const TASKS: &[&str] = &[
    "sentiment", "spam", "party", "digits", "mnist5k", "fashion", "basicmotions", "pickupgesture", "gunpoint", "italypower", "arrowhead",
    "vowels", "keywords", "spokendigits", "breastcancer", "captionmatch",
];

/// The tasks `--guest` runs by default: vision, sensor, audio, tabular
/// and image + caption. Text tasks are slow under TCG (sentiment's 1000
/// sentences through the LoRA'd encoder take over half an hour): name them.
pub const GUEST_TASKS: &[&str] =
    &["digits", "mnist5k", "basicmotions", "italypower", "vowels", "keywords", "breastcancer", "gunpoint", "arrowhead", "spokendigits", "captionmatch"];

fn trainer(fw: &std::path::Path) -> std::process::Command {
    let mut c = cmd::cargo();
    c.args(["run", "--release", "--quiet", "-p", "m4-train", "--", "--firmware"]).arg(fw).arg("--data").arg(paths::cache().join("eaibench"));
    c
}

/// The benchmark report (tools/eaibench/REPORT.md): baselines, then each
/// committed adapter on the host path; `train` first retrains them all.
pub fn report(train: bool) -> Result<()> {
    setup::run(Arch::X86_64)?;
    setup::eaibench_baselines()?;
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "m4", "-p", "m4-train"]))?;
    let fw = guest::foundation_firmware()?;
    let adapters = paths::repo().join("tools/eaibench/adapters");
    if train {
        for task in TASKS {
            cmd::step(&format!("training the {task} adapter"));
            cmd::run(trainer(&fw).args(["train", task, "--eval", "0", "--out"]).arg(adapters.join(format!("{task}.m4a"))))?;
        }
    }
    cmd::step("the report: tools/eaibench/REPORT.md");
    let report = paths::repo().join("tools/eaibench/REPORT.md");
    cmd::run(trainer(&fw).arg("report").arg(&adapters).arg("--out").arg(report).arg("--sets").arg(paths::repo().join("tools/eaibench/sets")))
}

/// One task's answers on one path: `m4-train app` (guest) and
/// `m4-train eval --json` (host) print the same fields.
#[derive(Debug, PartialEq)]
struct Answers {
    samples: u64,
    correct: u64,
    digest: u64,
}

impl Answers {
    fn from_json(v: &Value) -> Option<(String, Self)> {
        let n = |k: &str| v.get(k)?.as_u64();
        Some((v.get("task")?.as_str()?.to_string(), Answers { samples: n("samples")?, correct: n("correct")?, digest: n("digest")? }))
    }

    fn accuracy(&self) -> f64 {
        100.0 * self.correct as f64 / self.samples.max(1) as f64
    }
}

/// The apps' JSON lines in the guest's console output (kernel messages may
/// share a line's start, never its JSON).
fn guest_answers(lines: &[String]) -> BTreeMap<String, Answers> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(&l[l.find("{\"task\"")?..]).ok())
        .filter_map(|v| Answers::from_json(&v))
        .collect()
}

/// `tasks`' full test splits as apps run them in the release guest (module,
/// vnpud, app library), each answer checked against the host path's; the
/// table goes to tools/eaibench/GUEST.md.
pub fn guest(arch: Arch, tasks: &[&str]) -> Result<()> {
    ensure!(!tasks.is_empty() && tasks.iter().all(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric())), "--guest takes task names, comma-separated");
    setup::run(arch)?;
    setup::eaibench_baselines()?;
    let boot = guest::Boot::prepare(arch, Flavour::Release)?;
    let start = Instant::now();
    let outcome = guest::run(&boot, &format!("eaibench:{}", tasks.join(",")))?;
    let guest_secs = start.elapsed().as_secs();
    let on_guest = guest_answers(&outcome.lines);

    // The host path on the same firmware bytes, built for the host.
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "m4-train"]))?;
    let fw = paths::target().join("guest").join("foundation.m4fw");
    let adapters = paths::repo().join("tools/eaibench/adapters");
    let mut md = format!(
        "# eaibench on the real path\n\n\
         `cargo xtask{} eaibench --guest {}`: each task's full test split classified by an app in the guest \
         (app library, the module on the {} kernel, vnpud on the pinned firmware), one app after another, \
         in {guest_secs} s of TCG; next to it the host path (`m4-train eval`: vnpud's job code and engine \
         in one process on the same firmware bytes), which the report's numbers come from. \
         \"Same answers\" compares a digest of every predicted label in sample order.\n\n\
         | task | test samples | real path acc. | host path acc. | same answers |\n|---|---|---|---|---|\n",
        if arch.is_host() { String::new() } else { format!(" --arch {}", arch.name()) },
        tasks.join(","),
        boot.kernel_label(),
    );
    let mut differ = Vec::new();
    for task in tasks {
        let out = cmd::output(trainer(&fw).args(["eval", task]).arg(adapters.join(format!("{task}.m4a"))).arg("--json"))?;
        let line: Value = serde_json::from_str(out.trim()).with_context(|| format!("m4-train eval {task}: {out}"))?;
        let (_, host) = Answers::from_json(&line).with_context(|| format!("m4-train eval {task}: {out}"))?;
        let Some(real) = on_guest.get(*task) else {
            differ.push(format!("{task}: no answers from the guest"));
            continue;
        };
        let same = *real == host;
        if !same {
            differ.push(format!("{task}: real path {real:?}, host path {host:?}"));
        }
        writeln!(md, "| {task} | {} | {:.2}% | {:.2}% | {} |", real.samples, real.accuracy(), host.accuracy(), if same { "yes" } else { "**no**" })?;
    }
    let out = paths::repo().join("tools/eaibench/GUEST.md");
    std::fs::write(&out, &md)?;
    print!("{md}");
    if !differ.is_empty() {
        bail!("the real path differs from the host path: {}", differ.join("; "));
    }
    println!("xtask: {} tasks, every answer on the real path equal to the host path's ({})", tasks.len(), out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_found_among_kernel_messages() {
        let lines: Vec<String> = [
            "m4npu-guest: running job 'eaibench:digits' on 6.12",
            r#"{"task":"digits","pid":70,"samples":359,"correct":342,"digest":17,"adapter_bytes":1,"context_bytes":2,"first_answers":[]}"#,
            r#"[   12.5] m4npu: ctx 3 closed{"task":"vowels","pid":71,"samples":370,"correct":362,"digest":5,"adapter_bytes":1,"context_bytes":2,"first_answers":[]}"#,
            r#"{"task":"keywords"}"#,
        ]
        .map(String::from)
        .to_vec();
        let a = guest_answers(&lines);
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(a["digits"], Answers { samples: 359, correct: 342, digest: 17 });
        assert_eq!(a["vowels"].correct, 362);
    }
}
