//! Jobs: apps submit them on `/dev/m4npu` (synchronously or over io_uring),
//! the driver hands them to the device behind `/dev/m4npu-hw`, here the
//! suite's play device (`play_device.rs`) in a child process.

pub mod batches;
pub mod concurrency;
pub mod device_node;
pub mod failures;
pub mod on_vnpud;
pub mod refusals;
pub mod running;
pub mod setups;
pub mod sharing;
pub mod support;
pub mod three_ways;

/// The job tests' helper modes: `Some(exit status)` if `args` names one.
pub fn helper_mode(args: &[String]) -> Option<i32> {
    let run: fn(&[String]) -> anyhow::Result<()> = match args.first()?.as_str() {
        "--submit-jobs" => concurrency::submit_jobs,
        "--submit-then-hang" => failures::submit_then_hang,
        "--submit-vnpud-jobs" => on_vnpud::submit_vnpud_jobs,
        "--submit-high-unprivileged" => sharing::submit_high_unprivileged,
        _ => return None,
    };
    Some(match run(&args[1..]) {
        Ok(()) => 0,
        Err(e) => {
            println!("error: {e:#}");
            1
        }
    })
}
