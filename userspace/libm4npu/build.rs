//! The cdylib's SONAME, for the ABI's major version. Its symbols are not
//! versioned: rustc passes the linker a version script of its own, which
//! linkers take over any later one. The packaged library is linked by
//! `cargo xtask package` from the staticlib with `m4npu.map` alone
//! (tools/xtask/src/package.rs, `libm4npu`), which gives every `m4npu_*`
//! symbol the version M4NPU_0.1.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libm4npu.so.0");
}
