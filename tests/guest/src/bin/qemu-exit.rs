//! Ends the guest. On x86-64 with a status QEMU turns into its own exit
//! code, through the isa-debug-exit device (`-device
//! isa-debug-exit,iobase=0xf4`); elsewhere (arm64's `virt` has no such
//! device) by powering off, after `/init` has printed the status line the
//! host reads.

#[cfg(target_arch = "x86_64")]
const DEBUG_EXIT_PORT: u16 = 0xf4;

fn main() {
    let status: u8 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: we are PID 1 and root in a throw-away VM; ioperm() grants access
    // to exactly the debug-exit port, and the write makes QEMU exit.
    unsafe {
        if libc::ioperm(DEBUG_EXIT_PORT.into(), 1, 1) == 0 {
            core::arch::asm!("out dx, al", in("dx") DEBUG_EXIT_PORT, in("al") status);
        }
        eprintln!("qemu-exit: isa-debug-exit unavailable, powering off (status {status} only in the log)");
    }
    // SAFETY: reboot() with a valid command; it does not return on success.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    std::process::exit(status.into());
}
