//! Many EMBED jobs over io_uring from one thread: every sentence is
//! tokenized with the text encoder's tokenizer (from the firmware's
//! metadata, `Device::model_meta`) into its own slice of one input buffer,
//! all jobs are handed to the driver in one `io_uring_enter`
//! (`Ring::push`, then `Ring::submit`), and their completions are reaped in
//! batches (`Ring::wait`) as the device finishes them.
//!
//!     cargo run --example uring_batch -- [JOBS]      (default 64)
//!
//! A context may have `ctx_max_jobs` jobs in flight (module parameter,
//! default 256); past that, jobs fail with `Error::TooManyJobs`. A device
//! must serve jobs (`/dev/m4npu` with vnpud running); on the host this only
//! builds.

use std::process::ExitCode;
use std::time::Instant;

use m4npu::model::TEXT_ENCODER;
use m4npu::uring::Ring;
use m4npu::{Device, Error, JobDesc, Op, Result};
use m4npu_format::job_io::{f32s, Input};

/// Completions to wait for per reap (fewer for the last batch).
const BATCH: usize = 16;

const SUBJECTS: [&str; 4] = ["The cat", "A rocket", "My neighbour", "The old river"];
const VERBS: [&str; 4] = ["sleeps", "rises", "sings", "flows"];
const PLACES: [&str; 4] = ["on the mat.", "above the clouds.", "in the kitchen.", "through the valley."];

fn main() -> ExitCode {
    let jobs = match std::env::args().nth(1).map(|s| s.parse::<usize>()) {
        None => 64,
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: uring_batch [JOBS]");
            return ExitCode::from(2);
        }
    };
    match run(jobs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uring_batch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sentence(i: usize) -> String {
    format!("{} {} {}", SUBJECTS[i % 4], VERBS[i / 4 % 4], PLACES[i / 16 % 4])
}

fn run(jobs: usize) -> Result<()> {
    let dev = Device::open()?;
    let meta = dev.model_meta()?;
    let shape = meta.shape(TEXT_ENCODER)?;
    let tokenizer = meta.tokenizer(TEXT_ENCODER)?;

    // Each job's input in the job_io layout; `Device::embed` does the same
    // for one text.
    let mut inputs = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let encoding = tokenizer.encode(sentence(i), true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        ids.truncate(shape.max_tokens);
        inputs.push(Input::Tokens(ids));
    }

    // One input buffer holding every job's slice back to back, one output
    // buffer with room for every embedding.
    let mut offsets = Vec::with_capacity(jobs);
    let mut end = 0;
    for input in &inputs {
        offsets.push(end);
        end += input.encoded_len();
    }
    let mut inbuf = dev.alloc(end)?;
    for (input, &at) in inputs.iter().zip(&offsets) {
        input.encode_into(&mut inbuf.as_mut_slice()[at..]).map_err(|e| Error::InvalidJob(e.to_string()))?;
    }
    let width = shape.d_model * 4;
    let outbuf = dev.alloc(jobs * width)?;

    // Room in the submission queue for every job (up to 4096), so that they
    // all go to the driver with the one submit below (with more, `push`
    // submits each full queue itself).
    let mut ring = Ring::new(&dev, jobs.next_power_of_two().min(4096) as u32)?;
    let start = Instant::now();
    for (i, (input, &at)) in inputs.iter().zip(&offsets).enumerate() {
        let job = JobDesc::new(Op::Embed).input(&inbuf, at, input.encoded_len()).output(&outbuf, i * width, width);
        // Tagged with its index: where its embedding lies in the output.
        ring.push(&job, i as u64)?;
    }
    ring.submit()?;

    let mut batches = 0;
    while ring.pending() > 0 {
        let batch = ring.wait(BATCH)?;
        batches += 1;
        println!("reaped {:>3} completions, {:>4} still pending", batch.len(), ring.pending());
        // Completions come in any order; `user_data` says whose each is.
        for c in batch {
            let n = c.result()?;
            if n != width {
                return Err(Error::InvalidJob(format!("job {}: {n} output bytes, want {width}", c.user_data)));
            }
        }
    }
    let elapsed = start.elapsed();

    let out = outbuf.as_slice();
    let first = f32s(&out[..width]);
    let last = f32s(&out[(jobs - 1) * width..]);
    // Embeddings come L2-normalised: their dot product is their cosine.
    let cosine: f32 = first.iter().zip(&last).map(|(a, b)| a * b).sum();
    println!(
        "{jobs} EMBED jobs in {batches} batches, {:.1} ms ({:.0} jobs/s); {} dimensions each",
        elapsed.as_secs_f64() * 1e3,
        jobs as f64 / elapsed.as_secs_f64(),
        shape.d_model
    );
    println!("{:?} vs {:?}: cosine {cosine:.4}", sentence(0), sentence(jobs - 1));
    Ok(())
}
