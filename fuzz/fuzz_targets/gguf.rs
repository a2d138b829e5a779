//! The GGUF reader (`m4 pack firmware` reads model files with it): header,
//! metadata values, tensor infos and their bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|buf: &[u8]| {
    if let Ok(g) = vnpu_engine::formats::gguf::parse(buf) {
        for t in &g.tensors.entries {
            assert!(t.offset.checked_add(t.len).is_some_and(|end| end <= buf.len()));
        }
    }
});
