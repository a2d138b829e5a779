//! The guest test suite: the real module in the real kernel.
//!
//! Tests run in order and share the machine (the module is loaded by the
//! first and unloaded and reloaded by the last ones). Each prints
//! `test NAME ... ok|FAILED`; the suite ends with `N passed, N failed`.

mod basics;
mod harness;
mod module;
mod raw;

use harness::Test;

const TESTS: &[Test] = &[
    Test::new("module_loads_and_creates_node", basics::module_loads_and_creates_node),
    Test::new("device_node_mode", basics::device_node_mode),
    Test::new("get_info_reports_driver", basics::get_info_reports_driver),
    Test::new("two_fds_are_two_contexts", basics::two_fds_are_two_contexts),
    Test::new("processes_get_distinct_contexts", basics::processes_get_distinct_contexts),
    Test::new("unknown_ioctl_is_enotty", basics::unknown_ioctl_is_enotty),
    Test::new("bad_user_pointer_is_efault", basics::bad_user_pointer_is_efault),
    Test::new("wrong_argument_size_is_einval", basics::wrong_argument_size_is_einval),
    Test::new("rmmod_refused_while_open", basics::rmmod_refused_while_open),
    Test::new("load_unload_20_times", basics::load_unload_20_times),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Helper mode for tests that need other processes.
    if args.first().map(String::as_str) == Some("--print-context-id") {
        match m4npu::Device::open().and_then(|d| d.info()) {
            Ok(i) => println!("{}", i.context_id),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let filter = args.first().map(String::as_str);
    let failed = harness::run(TESTS, filter);
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
