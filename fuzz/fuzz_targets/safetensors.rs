//! The safetensors reader (MiniLM weights, adapters from trainers): the
//! header, then every tensor read as f32 where its dtype allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnpu_engine::formats::safetensors::{read_f32, table};

fuzz_target!(|buf: &[u8]| {
    if let Ok(t) = table(buf) {
        let names: Vec<String> = t.entries.iter().map(|e| e.name.clone()).collect();
        for name in names {
            let _ = read_f32(buf, &t, &name);
        }
    }
});
