//! The adapter container: header, section and tensor-table checks (what
//! the kernel checks too), the base-model hash the library peeks at, then
//! every tensor's data and the metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m4npu_format::{adapter_base_model_hash, Adapter};

fuzz_target!(|blob: &[u8]| {
    let peeked = adapter_base_model_hash(blob);
    if let Ok(a) = Adapter::parse_unverified(blob) {
        assert_eq!(peeked, Some(a.base_model_hash()));
        let _ = (a.name(), a.content_hash(), a.meta().len());
        for t in a.tensors() {
            let data = a.data(t);
            assert!(a.get(&t.name).is_some_and(|(_, d)| d.len() == data.len()));
        }
    }
    let _ = Adapter::parse(blob);
});
