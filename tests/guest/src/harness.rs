//! A minimal ordered test runner with libtest-like output.

use std::time::Instant;

pub type TestFn = fn() -> anyhow::Result<()>;

pub struct Test {
    name: &'static str,
    run: TestFn,
}

impl Test {
    pub const fn new(name: &'static str, run: TestFn) -> Self {
        Self { name, run }
    }
}

/// Runs the tests whose name contains `filter` (or any of its
/// comma-separated parts); returns how many failed.
pub fn run(tests: &[Test], filter: Option<&str>) -> usize {
    let selected: Vec<&Test> =
        tests.iter().filter(|t| filter.is_none_or(|f| f.split(',').any(|part| t.name.contains(part)))).collect();
    println!("running {} guest tests", selected.len());
    let (mut passed, mut failed) = (0, 0);
    for t in selected {
        let start = Instant::now();
        match (t.run)() {
            Ok(()) => {
                passed += 1;
                println!("test {} ... ok ({} ms)", t.name, start.elapsed().as_millis());
            }
            Err(e) => {
                failed += 1;
                println!("test {} ... FAILED\n    {e:#}", t.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    failed
}
