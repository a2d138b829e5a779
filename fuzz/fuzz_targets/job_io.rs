//! What a job's buffers hold, as the device reads them: inputs, a
//! generation's state header and output. Decoded inputs re-encode to a
//! canonical form that decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m4npu_format::job_io::{GenerateOutput, Input, StateHeader};

fuzz_target!(|buf: &[u8]| {
    if let Ok(input) = Input::decode(buf) {
        let bytes = input.encode();
        assert_eq!(bytes.len(), input.encoded_len());
        let again = Input::decode(&bytes).expect("an encoded input decodes");
        assert_eq!(again.encode(), bytes);
    }
    if let Ok(h) = StateHeader::decode(buf) {
        let mut again = [0u8; 16];
        h.encode_into(&mut again).expect("room for a header");
        assert_eq!(StateHeader::decode(&again), Ok(h));
    }
    if let Ok(o) = GenerateOutput::decode(buf) {
        let mut again = [0u8; 16];
        o.encode_into(&mut again).expect("room for a header");
        assert_eq!(GenerateOutput::decode(&again), Ok(o));
    }
});
