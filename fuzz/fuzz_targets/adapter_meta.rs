//! An adapter's metadata (JSON in its meta section): what parses must
//! survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m4npu_format::adapter_meta::AdapterMeta;

fuzz_target!(|json: &[u8]| {
    if let Ok(meta) = AdapterMeta::parse(json) {
        let again = AdapterMeta::parse(&meta.to_json()).expect("its own JSON parses");
        assert_eq!(again.to_json(), meta.to_json());
    }
});
