//! The guest: an initramfs of our own, QEMU, and the judgement of a run.
//!
//! The guest's `/init` runs one job (`m4job=` on the kernel command line) and
//! prints its status; on x86-64 it also reports it through QEMU's
//! isa-debug-exit port, so QEMU's exit code is the job's (arm64's `virt` has
//! no such device: the guest powers off and the status line is the
//! judge). Everything the guest prints streams to our stdout as it
//! happens; the host then fails the run on any kernel splat.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::arch::Arch;
use crate::kernel::{self, Flavour, Kernel};
use crate::{cmd, kmod, package, paths, setup};

/// Userspace binaries the guest needs, by cargo package and binary name.
const GUEST_BINARIES: &[(&str, &str)] =
    &[("m4npu-guest-tests", "m4npu-guest-tests"), ("m4npu-guest-tests", "qemu-exit"), ("m4", "m4"), ("vnpud", "vnpud"), ("m4-train", "m4-train")];

/// Kernel log lines that fail a run, wherever they appear.
const SPLATS: &[&str] = &[
    "BUG:",
    "WARNING:",
    "Oops",
    "KASAN",
    "kernel BUG",
    "Kernel panic",
    "general protection fault",
    "unreferenced object",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "suspicious RCU usage",
    "DEBUG_LOCKS_WARN_ON",
    "Call Trace:",
    "rust_panic",
    "kmemleak: leaks found",
];

/// A file name for `job`'s log: the job itself, or for a long list of
/// tests its start and a hash (a file name holds 255 bytes).
fn log_name(job: &str) -> String {
    if job.len() <= 120 {
        return job.to_string();
    }
    let hash = Sha256::digest(job.as_bytes());
    let cut = job.char_indices().map(|(i, _)| i).take_while(|&i| i <= 100).last().unwrap_or(0);
    format!("{}-{:02x}{:02x}{:02x}{:02x}", &job[..cut], hash[0], hash[1], hash[2], hash[3])
}

/// The kernel's report of an allocation it could not satisfy (`warn_alloc`):
/// a header, then a stack dump up to `</TASK>`. Under fault injection these
/// are the kernel saying how a failure was handled, not a splat.
const ALLOC_FAILURE_REPORTS: &[&str] = &["vmalloc error: size ", "page allocation failure: order:"];

/// The splat lines of a kernel log: every `SPLATS` match, except the
/// `Call Trace:` of an allocation failure report.
fn splats(lines: &[String]) -> Vec<&String> {
    let mut in_report = false;
    lines
        .iter()
        .filter(|l| {
            if ALLOC_FAILURE_REPORTS.iter().any(|h| l.contains(h)) {
                in_report = true;
            }
            let splat = SPLATS.iter().any(|s| l.contains(s));
            let exempt = in_report && l.contains("Call Trace:");
            // A report ends with its stack dump, or where another splat begins.
            if l.contains("</TASK>") || (splat && !exempt) {
                in_report = false;
            }
            splat && !exempt
        })
        .collect()
}

/// Port of QEMU's isa-debug-exit device: writing `v` exits with `v << 1 | 1`.
const DEBUG_EXIT_PORT: &str = "0xf4";

pub struct Boot {
    kernel: Kernel,
    initramfs: PathBuf,
}

impl Boot {
    /// Builds the kernel, the module, the guest binaries and the initramfs.
    pub fn prepare(arch: Arch, flavour: Flavour) -> Result<Self> {
        let kernel = kernel::build(arch, flavour)?;
        let ko = kmod::build(&kernel)?;
        let mut bins = guest_binaries(arch)?;
        bins.push(c_example(arch)?);
        let mut extra = Vec::new();
        if arch.is_host() {
            // libm4npu and its C example (dynamically linked, as apps are).
            let (example, lib) = package::c_library_example()?;
            bins.push(example);
            extra.push((Path::new("/usr/lib").join(package::MULTIARCH).join("libm4npu.so.0"), lib));
        } else {
            bins.push(package::c_library_example_static(arch)?);
        }
        if flavour == Flavour::Debug {
            // The module as DKMS builds it from m4npu-dkms's source, for the
            // suite's dkms_module_loads.
            extra.push((PathBuf::from("/lib/modules/m4npu-dkms.ko"), package::dkms_build(&kernel)?));
        }
        let firmware = [foundation_firmware()?, synthetic_firmware()?];
        let initramfs = initramfs(&kernel, &ko, &bins, &firmware, &eaibench_files()?, &extra)?;
        Ok(Self { kernel, initramfs })
    }

    /// The kernel's name in logs: `release`, `arm64-debug`.
    pub fn kernel_label(&self) -> String {
        self.kernel.label()
    }
}

fn guest_binaries(arch: Arch) -> Result<Vec<PathBuf>> {
    cmd::step(&format!("building guest userspace (release, {})", arch.name()));
    let mut c = cmd::cargo();
    c.args(["build", "--release"]);
    for (pkg, bin) in GUEST_BINARIES {
        c.args(["--package", pkg, "--bin", bin]);
    }
    // Cross targets link statically (.cargo/config.toml): no libraries to copy.
    let dir = match arch.rust_target() {
        None => paths::target().join("release"),
        Some(t) => {
            c.args(["--target", t]);
            paths::target().join(t).join("release")
        }
    };
    cmd::run(&mut c)?;
    if !arch.is_host() {
        // The packer runs here, on the host.
        cmd::run(cmd::cargo().args(["build", "--release", "--package", "m4", "--bin", "m4"]))?;
    }
    Ok(GUEST_BINARIES.iter().map(|(_, b)| dir.join(b)).collect())
}

/// The C example (`examples/c/`), built against the UAPI header alone:
/// that the header serves C apps is part of what the guest tests.
fn c_example(arch: Arch) -> Result<PathBuf> {
    cmd::step("building the C example against uapi/include");
    let out = paths::target().join("guest").join(arch.name()).join("m4npu-echo");
    std::fs::create_dir_all(out.parent().context("guest dir")?)?;
    let repo = paths::repo();
    let mut cc = Command::new(arch.cc());
    if !arch.is_host() {
        cc.arg("-static");
    }
    cmd::run(
        cc.args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(repo.join("uapi/include"))
            .arg(repo.join("examples/c/m4npu-echo.c"))
            .arg("-o")
            .arg(&out),
    )?;
    Ok(out)
}

/// The real foundation model (SmolLM2 + MiniLM) packed as firmware by
/// `m4 pack firmware`; a few seconds, so it is simply redone each time.
pub fn foundation_firmware() -> Result<PathBuf> {
    cmd::step("packing the foundation firmware (m4 pack firmware)");
    let out = paths::target().join("guest").join("foundation.m4fw");
    std::fs::create_dir_all(out.parent().context("firmware dir")?)?;
    cmd::run(
        Command::new(paths::target().join("release").join("m4"))
            .args(["pack", "firmware", "--out"])
            .arg(&out)
            .env("M4NPU_WEIGHTS_DIR", paths::weights()),
    )?;
    Ok(out)
}

/// A tiny model of the same architecture (`m4 pack firmware --synthetic`),
/// for the fast guest tests of the virtual NPU.
fn synthetic_firmware() -> Result<PathBuf> {
    let out = paths::target().join("guest").join("tiny.m4fw");
    cmd::run(
        Command::new(paths::target().join("release").join("m4"))
            .args(["pack", "firmware", "--synthetic", "1", "--name", "tiny-synthetic", "--out"])
            .arg(&out),
    )?;
    Ok(out)
}

/// The benchmark's committed adapters and its tasks' test splits (from
/// `tools/eaibench/setup.sh`), as (guest path, host path).
fn eaibench_files() -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut files = Vec::new();
    let adapters = paths::repo().join("tools/eaibench/adapters");
    for e in std::fs::read_dir(&adapters).with_context(|| format!("reading {}", adapters.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "m4a") {
            files.push((Path::new("/eaibench/adapters").join(p.file_name().context("adapter name")?), p));
        }
    }
    let data = paths::cache().join("eaibench");
    for e in std::fs::read_dir(&data).with_context(|| format!("reading {} (tools/eaibench/setup.sh)", data.display()))? {
        let dir = e?.path();
        let Some(task) = dir.file_name().and_then(|n| n.to_str()).map(String::from) else { continue };
        if task == "baselines.json" {
            files.push((Path::new("/eaibench/baselines.json").to_path_buf(), dir.clone()));
            continue;
        }
        for f in ["meta.json", "test.safetensors", "test.jsonl"] {
            if dir.join(f).is_file() {
                files.push((Path::new("/eaibench").join(&task).join(f), dir.join(f)));
            }
        }
    }
    Ok(files)
}

/// Shared libraries `exe` loads, as absolute host paths (ldd's view).
fn shared_libs(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = cmd::output(Command::new("ldd").arg(exe))?;
    Ok(out
        .lines()
        // libm4npu goes in as an extra file, at its installed path.
        .filter(|l| !l.trim_start().starts_with("libm4npu.so"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect())
}

/// Writes a `gen_init_cpio` spec and packs the initramfs with the kernel's
/// own tool, so device nodes need no root and the archive is reproducible.
/// `extra`: more files as (guest path, host path); shared libraries among
/// them bring their own dependencies.
fn initramfs(
    kernel: &Kernel,
    ko: &Path,
    bins: &[PathBuf],
    firmware: &[PathBuf],
    data: &[(PathBuf, PathBuf)],
    extra: &[(PathBuf, PathBuf)],
) -> Result<PathBuf> {
    let out = paths::target().join("guest").join(kernel.label());
    std::fs::create_dir_all(&out)?;
    let init = out.join("init");
    std::fs::write(&init, INIT)?;

    let mut spec = String::new();
    let mut dirs = BTreeSet::new();
    for d in ["/bin", "/dev", "/proc", "/sys", "/tmp", "/lib/modules", "/lib/firmware/m4npu"] {
        add_dir(&mut spec, &mut dirs, Path::new(d));
    }
    spec += "nod /dev/console 0600 0 0 c 5 1\nnod /dev/null 0666 0 0 c 1 3\n";
    spec += &format!("file /init {} 0755 0 0\n", init.display());
    let busybox = match kernel.arch {
        Arch::X86_64 => which("busybox")?,
        a => setup::busybox(a)?,
    };
    spec += &format!("file /bin/busybox {} 0755 0 0\n", busybox.display());
    spec += "slink /bin/sh busybox 0777 0 0\n";
    spec += &format!("file /lib/modules/m4npu.ko {} 0644 0 0\n", ko.display());
    for fw in firmware {
        let name = fw.file_name().context("firmware name")?.to_string_lossy();
        spec += &format!("file /lib/firmware/m4npu/{name} {} 0644 0 0\n", fw.display());
    }
    for (guest, host) in data {
        add_dir(&mut spec, &mut dirs, guest.parent().context("data dir")?);
        spec += &format!("file {} {} 0644 0 0\n", guest.display(), host.display());
    }
    let mut libs = BTreeSet::new();
    for (guest, host) in extra {
        add_dir(&mut spec, &mut dirs, guest.parent().context("extra dir")?);
        spec += &format!("file {} {} 0755 0 0\n", guest.display(), std::fs::canonicalize(host)?.display());
        if kernel.arch.is_host() && guest.to_string_lossy().contains(".so") {
            libs.extend(shared_libs(host)?);
        }
    }
    for b in bins {
        let name = b.file_name().context("binary name")?.to_string_lossy();
        spec += &format!("file /bin/{name} {} 0755 0 0\n", b.display());
        if kernel.arch.is_host() {
            libs.extend(shared_libs(b)?);
        }
    }
    for lib in libs {
        // Keep the host path: the dynamic loader and glibc look there.
        if let Some(parent) = lib.parent() {
            add_dir(&mut spec, &mut dirs, parent);
        }
        let real = std::fs::canonicalize(&lib)?;
        spec += &format!("file {} {} 0755 0 0\n", lib.display(), real.display());
    }
    let spec_path = out.join("initramfs.spec");
    std::fs::write(&spec_path, spec)?;
    let cpio = out.join("initramfs.cpio");
    let gen = kernel.build_dir.join("usr/gen_init_cpio");
    let archive = Command::new(&gen).arg(&spec_path).output().with_context(|| format!("run {}", gen.display()))?;
    if !archive.status.success() {
        bail!("gen_init_cpio failed: {}", String::from_utf8_lossy(&archive.stderr));
    }
    std::fs::write(&cpio, archive.stdout)?;
    Ok(cpio)
}

fn add_dir(spec: &mut String, seen: &mut BTreeSet<PathBuf>, d: &Path) {
    let mut acc = PathBuf::from("/");
    for c in d.components().skip(1) {
        acc.push(c);
        if seen.insert(acc.clone()) {
            *spec += &format!("dir {} 0755 0 0\n", acc.display());
        }
    }
}

fn which(prog: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/bin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .with_context(|| format!("{prog} not found (busybox-static not installed?)"))
}

/// The guest's PID 1.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug
kmemleak=/sys/kernel/debug/kmemleak
# Leaks suspected during boot are not ours.
[ -e $kmemleak ] && echo clear > $kmemleak

echo "m4npu-guest: running job '$m4job' on $(uname -r), $(nproc) cpus"
status=1
case "$m4job" in
probe)
	status=0 ;;
test)
	/bin/m4npu-guest-tests; status=$? ;;
test:*)
	# A subset, by name: `cargo xtask vm debug test:<part of a name>`.
	/bin/m4npu-guest-tests "${m4job#test:}"; status=$? ;;
bench-handoff)
	# The driver's cost per job against a NOP (tests/guest/src/bench_handoff.rs).
	insmod /lib/modules/m4npu.ko firmware=m4npu/tiny.m4fw && /bin/m4npu-guest-tests --bench-handoff
	status=$? ;;
bench-apps)
	# Many apps on the real model through vnpud (tests/guest/src/bench_apps.rs).
	insmod /lib/modules/m4npu.ko && /bin/m4npu-guest-tests --bench-apps
	status=$? ;;
fuzz:*)
	# The UAPI fuzzer for N calls (`cargo xtask fuzz --calls N`), once the
	# module has a model.
	M4NPU_FUZZ_CALLS="${m4job#fuzz:}" /bin/m4npu-guest-tests \
		module_loads_and_creates_node,valid_firmware_is_pinned,reload_good_firmware,uapi_fuzzer_finds_nothing
	status=$? ;;
kills:*)
	# vnpud killed N times under load from four apps
	# (`cargo xtask vm debug kills:N`).
	M4NPU_KILLS="${m4job#kills:}" /bin/m4npu-guest-tests \
		module_loads_and_creates_node,vnpud_killed_under_load
	status=$? ;;
demo)
	# The module pins the foundation model; vnpud serves its jobs.
	insmod /lib/modules/m4npu.ko && vnpud --background && m4 info &&
		m4 run embed "The NPU runs one foundation model for every app." &&
		m4 run generate "The three primary colors are" --max-new-tokens 16 &&
		echo "m4npu-guest: several apps at once, each its own process, context and adapter" &&
		m4-train --data /eaibench apps /eaibench/adapters &&
		cat /sys/kernel/debug/m4npu/state && kill $(pidof vnpud)
	status=$? ;;
eaibench:*)
	# The benchmark's full test splits on the real path, one app per task
	# in turn, each printing its JSON line (`cargo xtask eaibench --guest`).
	if insmod /lib/modules/m4npu.ko && vnpud --background; then
		status=0
		for t in $(echo "${m4job#eaibench:}" | tr , ' '); do
			m4-train --data /eaibench app "$t" --adapter "/eaibench/adapters/$t.m4a" --samples 1000000 || status=1
		done
		kill $(pidof vnpud)
	fi ;;
*)
	echo "m4npu-guest: unknown job '$m4job'" ;;
esac

if { [ "${m4job%%:*}" = test ] || [ "${m4job%%:*}" = fuzz ] || [ "${m4job%%:*}" = kills ]; } && [ -e $kmemleak ]; then
	# kmemleak reports only objects older than 5 s: let the last test's
	# allocations age, then scan twice as Documentation/dev-tools/kmemleak.rst advises.
	sleep 6
	echo scan > $kmemleak
	echo scan > $kmemleak
	# debugfs files report size 0: test the content, not -s.
	leaks=$(cat $kmemleak)
	if [ -n "$leaks" ]; then
		echo "$leaks"
		echo "kmemleak: leaks found"
		status=1
	else
		echo "kmemleak: no leaks"
	fi
fi
echo "m4npu-guest: job '$m4job' exit status $status"
exec /bin/qemu-exit $status
"#;

/// How a finished job went.
pub struct Outcome {
    /// The suite's `N passed, N failed` line, or a description.
    pub summary: String,
    /// Everything the guest printed.
    pub lines: Vec<String>,
}

/// KVM only when a probe boot shows it works (here /dev/kvm exists but the
/// CPU lacks VT-x and KVM hangs). The answer is kept per host boot.
fn accel(boot: &Boot) -> Result<&'static str> {
    if let Ok(a) = std::env::var("M4NPU_ACCEL") {
        return Ok(if a == "kvm" { "kvm" } else { "tcg" });
    }
    if !boot.kernel.arch.is_host() || std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return Ok("tcg");
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let stamp = paths::cache().join(format!("kvm-probe-{}", boot_id.trim()));
    if let Ok(v) = std::fs::read_to_string(&stamp) {
        return Ok(if v == "kvm" { "kvm" } else { "tcg" });
    }
    cmd::step("probing KVM (a boot that must finish within 20 s)");
    let ok = boot_qemu(boot, "probe", "kvm", Duration::from_secs(20), false).is_ok_and(|r| r.code == Some(1));
    let a = if ok { "kvm" } else { "tcg" };
    println!("    KVM {}", if ok { "works" } else { "does not work here: using TCG" });
    std::fs::create_dir_all(paths::cache())?;
    std::fs::write(&stamp, a)?;
    Ok(a)
}

struct Run {
    code: Option<i32>,
    lines: Vec<String>,
    timed_out: bool,
}

fn boot_qemu(boot: &Boot, job: &str, accel: &str, timeout: Duration, echo: bool) -> Result<Run> {
    let arch = boot.kernel.arch;
    let mut c = Command::new(arch.qemu());
    c.args(["-accel", accel, "-smp", "2", "-m", "2G"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot"]);
    let append = match arch {
        Arch::X86_64 => {
            c.args(["-cpu", "max"]).args(["-device", &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT},iosize=0x04")]);
            // no5lvl: `-cpu max` offers LA57, and with 5-level paging this
            // 6.12 KASAN kernel once reported a wild access from an interrupt
            // taken during identify_boot_cpu() (early boot, before any
            // module). 4-level paging is what real machines and phones run.
            "console=ttyS0 no5lvl"
        }
        Arch::Arm64 => {
            // pauth-impdef: QEMU's own pointer-authentication hash, which
            // TCG computes far faster than the architected QARMA.
            c.args(["-M", "virt", "-cpu", "max,pauth-impdef=on"]);
            "console=ttyAMA0"
        }
    };
    c.arg("-kernel")
        .arg(&boot.kernel.image)
        .arg("-initrd")
        .arg(&boot.initramfs)
        .arg("-append")
        .arg(format!("{append} panic=-1 m4job={job}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = c.spawn().with_context(|| format!("cannot start {}", arch.qemu()))?;
    let stdout = child.stdout.take().context("qemu stdout")?;

    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let pid = child.id();
    let watchdog = {
        let (done, timed_out) = (done.clone(), timed_out.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Acquire) {
                if start.elapsed() > timeout {
                    timed_out.store(true, Ordering::Release);
                    // SAFETY: kill() on the pid of our own child, not yet reaped
                    // (we join this thread before waiting for it).
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    return;
                }
                std::thread::park_timeout(Duration::from_millis(200));
            }
        })
    };
    let mut lines = Vec::new();
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
        if echo {
            let _ = writeln!(out, "{line}");
        }
        lines.push(line);
    }
    done.store(true, Ordering::Release);
    watchdog.thread().unpark();
    let _ = watchdog.join();
    let st = child.wait()?;
    Ok(Run { code: st.code(), lines, timed_out: timed_out.load(Ordering::Acquire) })
}

/// The status `/init` printed last, from a guest line that is its own.
fn job_status(lines: &[String]) -> Option<i32> {
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("m4npu-guest: job '")?.rsplit_once("' exit status ")?.1.trim().parse().ok())
}

/// Boots the guest for `job`; fails unless the job succeeded and the kernel
/// log is free of splats.
pub fn run(boot: &Boot, job: &str) -> Result<Outcome> {
    let accel = accel(boot)?;
    // Long jobs get longer: a fuzz call is ~2 ms, a kill ~10 s, the
    // benchmark's test splits under TCG up to an hour.
    let count = |prefix: &str| job.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let slowdown = if boot.kernel.arch.is_host() { 1 } else { 3 };
    let timeout = Duration::from_secs(slowdown * (match boot.kernel.flavour {
        Flavour::Debug => 40 * 60,
        Flavour::Release => 20 * 60,
    } + count("fuzz:") / 100 + count("kills:") * 20
        + if job.starts_with("eaibench:") { 60 * 60 } else { 0 }));
    cmd::step(&format!("booting the {} kernel ({accel}) for job '{job}'", boot.kernel.label()));
    let r = boot_qemu(boot, job, accel, timeout, true)?;
    let log = paths::target().join("guest").join(format!("{}-{}.log", log_name(job), boot.kernel.label()));
    std::fs::write(&log, r.lines.join("\n"))?;

    let splats = splats(&r.lines);
    let summary = r
        .lines
        .iter()
        .rev()
        .find(|l| l.contains(" passed, ") && l.contains(" failed"))
        .cloned()
        .unwrap_or_else(|| format!("job '{job}' completed"));
    let mut problems = Vec::new();
    if r.timed_out {
        problems.push(format!("the guest did not finish within {} s", timeout.as_secs()));
    }
    match boot.kernel.arch {
        // isa-debug-exit: status 0 exits QEMU with 1, status s with 2s+1.
        Arch::X86_64 => match r.code {
            Some(1) => {}
            Some(c) if c % 2 == 1 => problems.push(format!("the guest job exited with status {}", c / 2)),
            c => problems.push(format!("QEMU ended without a job status (exit code {c:?}): crash or panic")),
        },
        // The guest powers off once it has printed its status.
        _ => match (r.code, job_status(&r.lines)) {
            (Some(0), Some(0)) => {}
            (Some(0), Some(s)) => problems.push(format!("the guest job exited with status {s}")),
            (c, _) => problems.push(format!("QEMU ended without a job status (exit code {c:?}): crash or panic")),
        },
    }
    if !splats.is_empty() {
        problems.push(format!(
            "the kernel log has {} splat line(s), first: {}",
            splats.len(),
            splats.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(" | ")
        ));
    }
    if !problems.is_empty() {
        bail!("guest job '{job}' failed: {} (log: {})", problems.join("; "), log.display());
    }
    Ok(Outcome { summary, lines: r.lines })
}

#[cfg(test)]
mod tests {
    use super::splats;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn long_jobs_get_short_log_names() {
        let long = "test:".to_string() + &"some_test_name,".repeat(30);
        let name = super::log_name(&long);
        assert!(name.len() < 120 && name.starts_with("test:some_test_name,"), "{name}");
        assert_ne!(name, super::log_name(&(long.clone() + "x")));
        assert_eq!(super::log_name("test"), "test");
    }

    #[test]
    fn allocation_failure_reports_are_not_splats() {
        let log = lines(
            "[ 1.0] app: vmalloc error: size 4096, vm_struct allocation failed, mode:0xcc0(GFP_KERNEL)\n\
             [ 1.0] Call Trace:\n[ 1.0]  <TASK>\n[ 1.0]  dump_stack_lvl+0x1/0x2\n[ 1.0]  </TASK>\n[ 1.0] Mem-Info:",
        );
        assert!(splats(&log).is_empty());
    }

    #[test]
    fn other_stack_dumps_and_warnings_are_splats() {
        let log = lines(
            "[ 1.0] app: page allocation failure: order:0, mode:0xcc0(GFP_KERNEL)\n[ 1.0] WARNING: CPU: 0 PID: 1 at x\n\
             [ 1.0] Call Trace:\n[ 1.0]  </TASK>\n[ 2.0] INFO: task blocked\n[ 2.0] Call Trace:",
        );
        let got = splats(&log);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("WARNING") && got[1].ends_with("Call Trace:") && got[2].ends_with("Call Trace:"));
    }
}
