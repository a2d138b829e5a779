//! The firmware container: header, section and tensor-table checks (what
//! the kernel checks too), then every tensor's data and the metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m4npu_format::Firmware;

fuzz_target!(|blob: &[u8]| {
    if let Ok(fw) = Firmware::parse_unverified(blob) {
        let _ = (fw.name(), fw.content_hash(), fw.meta().len());
        for t in fw.tensors() {
            let data = fw.data(t);
            assert!(fw.get(&t.name).is_some_and(|(_, d)| d.len() == data.len()));
        }
    }
    let _ = Firmware::parse(blob);
});
