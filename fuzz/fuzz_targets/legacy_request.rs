//! The hand-written parser of old Produce (v0-2) and Fetch (v0-3) bodies. Input: a byte
//! choosing the API and version, then the body (after the request header).
#![no_main]

use libfuzzer_sys::fuzz_target;

strom_fuzz::capped_allocator!();

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    // Produce 0-2 or Fetch 0-3.
    let (api, version) = if choice & 0x80 == 0 {
        (0, i16::from(choice % 3))
    } else {
        (1, i16::from(choice % 4))
    };
    strom_kafka::fuzzing::legacy_request(api, version, body);
});
