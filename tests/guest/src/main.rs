//! The guest test suite: the real module in the real kernel.
//!
//! Tests run in order and share the machine (the module is loaded by the
//! first and unloaded and reloaded by the last ones). Each prints
//! `test NAME ... ok|FAILED`; the suite ends with `N passed, N failed`.

mod adapter_tasks;
mod adapters;
mod basics;
mod bench_apps;
mod bench_handoff;
mod buffers;
mod c_api;
mod children;
mod eaibench;
mod faults;
mod firmware;
mod harness;
mod jobs;
mod kmsg;
mod module;
mod play_device;
mod raw;
mod uapi_fuzz;
mod vnpu;

use harness::Test;

/// A helper mode's entry point: its arguments after the mode.
type HelperMain = fn(&[String]) -> anyhow::Result<()>;

const TESTS: &[Test] = &[
    Test::new("module_loads_and_creates_node", basics::module_loads_and_creates_node),
    Test::new("device_node_mode", basics::device_node_mode),
    Test::new("get_info_reports_driver", basics::get_info_reports_driver),
    Test::new("two_fds_are_two_contexts", basics::two_fds_are_two_contexts),
    Test::new("processes_get_distinct_contexts", basics::processes_get_distinct_contexts),
    Test::new("unknown_ioctl_is_enotty", basics::unknown_ioctl_is_enotty),
    Test::new("bad_user_pointer_is_efault", basics::bad_user_pointer_is_efault),
    Test::new("wrong_argument_size_is_einval", basics::wrong_argument_size_is_einval),
    Test::new("valid_firmware_is_pinned", firmware::valid_firmware_is_pinned),
    Test::new("bad_magic_is_refused", firmware::bad_magic_is_refused),
    Test::new("truncated_firmware_is_refused", firmware::truncated_firmware_is_refused),
    Test::new("bad_checksum_is_refused", firmware::bad_checksum_is_refused),
    Test::new("out_of_bounds_tensor_is_refused", firmware::out_of_bounds_tensor_is_refused),
    Test::new("duplicate_tensor_names_are_refused", firmware::duplicate_tensor_names_are_refused),
    Test::new("too_many_tensors_are_refused", firmware::too_many_tensors_are_refused),
    Test::new("missing_firmware_leaves_driver_usable", firmware::missing_firmware_leaves_driver_usable),
    Test::new("firmware_larger_than_pool_is_refused", firmware::firmware_larger_than_pool_is_refused),
    Test::new("real_foundation_model_is_pinned", firmware::real_foundation_model_is_pinned),
    Test::new("reload_good_firmware", firmware::reload_good_firmware),
    Test::new("debugfs_shows_firmware_and_contexts", firmware::debugfs_shows_firmware_and_contexts),
    Test::new("buffer_roundtrip_and_zeroed", buffers::buffer_roundtrip_and_zeroed),
    Test::new("bad_buffer_arguments", buffers::bad_buffer_arguments),
    Test::new("bad_mappings_are_refused", buffers::bad_mappings_are_refused),
    Test::new("destroy_while_mapped_keeps_memory", buffers::destroy_while_mapped_keeps_memory),
    Test::new("bo_mappings_take_madvise", buffers::bo_mappings_take_madvise),
    Test::new("quota_and_pool_exhaustion", buffers::quota_and_pool_exhaustion),
    Test::new("contexts_are_isolated", buffers::contexts_are_isolated),
    Test::new("fdinfo_reports_context", buffers::fdinfo_reports_context),
    Test::new("adapter_loads_from_sealed_memfd", adapters::adapter_loads_from_sealed_memfd),
    Test::new("bad_adapters_are_refused", adapters::bad_adapters_are_refused),
    Test::new("adapters_are_isolated", adapters::adapters_are_isolated),
    Test::new("adapter_needs_a_model", adapters::adapter_needs_a_model),
    Test::new("hw_node_is_root_only_and_exclusive", jobs::device_node::hw_node_is_root_only_and_exclusive),
    Test::new("hw_mapping_protects_the_model", jobs::device_node::hw_mapping_protects_the_model),
    Test::new("hw_commands_are_checked", jobs::device_node::hw_commands_are_checked),
    Test::new("jobs_without_a_device_are_enxio", jobs::running::jobs_without_a_device_are_enxio),
    Test::new("jobs_run_sync_and_over_io_uring", jobs::running::jobs_run_sync_and_over_io_uring),
    Test::new("device_errors_reach_the_app", jobs::running::device_errors_reach_the_app),
    Test::new("fdinfo_counts_jobs", jobs::running::fdinfo_counts_jobs),
    Test::new("jobs_agree_sync_uring_and_async", jobs::three_ways::jobs_agree_sync_uring_and_async),
    Test::new("async_jobs_in_flight_together_and_cancelled", jobs::three_ways::async_jobs_in_flight_together_and_cancelled),
    Test::new("job_errors_agree_sync_uring_and_async", jobs::three_ways::job_errors_agree_sync_uring_and_async),
    Test::new("thousand_jobs_from_four_processes", jobs::concurrency::thousand_jobs_from_four_processes),
    Test::new("bad_job_descriptors_are_refused", jobs::refusals::bad_job_descriptors_are_refused),
    Test::new("uring_commands_are_checked", jobs::refusals::uring_commands_are_checked),
    Test::new("in_flight_limit_is_ebusy", jobs::refusals::in_flight_limit_is_ebusy),
    Test::new("killed_submitter_leaves_nothing_behind", jobs::failures::killed_submitter_leaves_nothing_behind),
    Test::new("killed_device_fails_every_job_with_eio", jobs::failures::killed_device_fails_every_job_with_eio),
    Test::new("jobs_hand_off_in_batches", jobs::batches::jobs_hand_off_in_batches),
    Test::new("batches_keep_a_place_for_another_app", jobs::batches::batches_keep_a_place_for_another_app),
    Test::new("jobs_on_every_ring_setup", jobs::setups::jobs_on_every_ring_setup),
    Test::new("contexts_take_turns", jobs::sharing::contexts_take_turns),
    Test::new("high_priority_needs_cap_sys_nice", jobs::sharing::high_priority_needs_cap_sys_nice),
    Test::new("recovery_hands_jobs_to_the_next_device", jobs::sharing::recovery_hands_jobs_to_the_next_device),
    Test::new("recovery_window_ends_in_eio", jobs::sharing::recovery_window_ends_in_eio),
    Test::new("killed_device_is_replaced_at_once", jobs::sharing::killed_device_is_replaced_at_once),
    Test::new("c_example_runs_a_job", c_api::c_example_runs_a_job),
    Test::new("jobs_need_a_model", jobs::refusals::jobs_need_a_model),
    Test::new("vnpud_runs_a_synthetic_model", vnpu::vnpud_runs_a_synthetic_model),
    Test::new("c_library_classifies_on_vnpud", c_api::c_library_classifies_on_vnpud),
    Test::new("dkms_module_loads", module::dkms_module_loads),
    Test::new("vnpud_runs_the_foundation_model", vnpu::vnpud_runs_the_foundation_model),
    Test::new("c_library_embeds_and_generates", c_api::c_library_embeds_and_generates),
    Test::new("thousand_jobs_on_vnpud", jobs::on_vnpud::thousand_jobs_on_vnpud),
    Test::new("vnpud_killed_under_load", jobs::on_vnpud::vnpud_killed_under_load),
    Test::new("adapters_classify_on_vnpud", adapter_tasks::adapters_classify_on_vnpud),
    Test::new("errors_speak_to_developers", adapter_tasks::errors_speak_to_developers),
    Test::new("generations_of_many_apps_on_vnpud", adapter_tasks::generations_of_many_apps_on_vnpud),
    Test::new("eaibench_adapters_agree_with_the_host_path", eaibench::eaibench_adapters_agree_with_the_host_path),
    Test::new("bad_module_parameters_are_refused", basics::bad_module_parameters_are_refused),
    Test::new("rmmod_refused_while_open", basics::rmmod_refused_while_open),
    Test::new("load_unload_20_times", basics::load_unload_20_times),
    Test::new("uapi_fuzzer_finds_nothing", uapi_fuzz::uapi_fuzzer_finds_nothing),
    Test::new("allocation_failures_are_clean", faults::allocation_failures_are_clean),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Helper modes of the job tests: the play device and app processes.
    if args.first().map(String::as_str) == Some("--play-device") {
        std::process::exit(play_device::main(&args[1..]));
    }
    // Benchmarks (`cargo xtask bench ...`) and their app processes.
    let bench: Option<HelperMain> = match args.first().map(String::as_str) {
        Some("--bench-handoff") => Some(bench_handoff::main),
        Some("--bench-apps") => Some(bench_apps::main),
        Some("--bench-app") => Some(bench_apps::app),
        Some("--uapi-fuzz-worker") => Some(uapi_fuzz::worker),
        _ => None,
    };
    if let Some(bench) = bench {
        if let Err(e) = bench(&args[1..]) {
            println!("error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(status) = jobs::helper_mode(&args) {
        std::process::exit(status);
    }
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
    // Helper modes: probe another context's handles from this process.
    type Probe = fn(&m4npu::Device, &[u32]) -> anyhow::Result<()>;
    let probe: Option<Probe> = match args.first().map(String::as_str) {
        Some("--probe-foreign-handles") => Some(buffers::probe_foreign_handles),
        Some("--probe-foreign-adapters") => Some(adapters::probe_foreign_adapters),
        _ => None,
    };
    if let Some(probe) = probe {
        let handles: Vec<u32> =
            args.get(1).map(|s| s.split(',').filter_map(|h| h.parse().ok()).collect()).unwrap_or_default();
        if let Err(e) = m4npu::Device::open().map_err(anyhow::Error::from).and_then(|d| probe(&d, &handles)) {
            println!("{e:#}");
            std::process::exit(1);
        }
        return;
    }
    let filter = args.first().map(String::as_str);
    let failed = harness::run(TESTS, filter);
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
