//! The hand-written parser of old Produce (v0-2) and Fetch (v0-3) requests. Input: a request
//! frame without its length prefix, as in `fuzz/corpus/legacy_request/` (see
//! `strom_kafka::fuzzing::legacy_frame` for how any frame is read as an old one).
#![no_main]

use libfuzzer_sys::fuzz_target;

strom_fuzz::capped_allocator!();

fuzz_target!(|frame: &[u8]| {
    strom_kafka::fuzzing::legacy_frame(frame);
});
