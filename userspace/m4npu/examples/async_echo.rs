//! N ECHO jobs in flight at once from one async task, each copying its own
//! slice of the input to the output, checked byte for byte.
//!
//!     cargo run --example async_echo -- [JOBS]    (a device must serve jobs: vnpud)

use m4npu::{Device, JobDesc, Op};

const LEN: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(64);
    tokio_uring::start(async {
        let dev = Device::open()?;
        let mut input = dev.alloc(n * LEN)?;
        for (i, b) in input.as_mut_slice().iter_mut().enumerate() {
            *b = (i % 251) as u8 ^ (i / LEN) as u8;
        }
        let output = dev.alloc(n * LEN)?;
        let ring = dev.async_ring(32)?;
        let jobs: Vec<_> =
            (0..n).map(|i| JobDesc::new(Op::Echo).input(&input, i * LEN, LEN).output(&output, i * LEN, LEN)).collect();

        // Two halves, each a batch, both in flight together from this task.
        let (first, second) = tokio::join!(ring.run_all(&jobs[..n / 2]), ring.run_all(&jobs[n / 2..]));
        for (i, r) in first.into_iter().chain(second).enumerate() {
            let got = r?;
            if got != LEN {
                return Err(format!("job {i}: {got} output bytes, want {LEN}").into());
            }
        }
        if output.as_slice() != input.as_slice() {
            return Err("the output differs from the input".into());
        }
        println!("{n} ECHO jobs of {LEN} bytes: output matches input (at most {} in flight)", ring.capacity());
        Ok(())
    })
}
