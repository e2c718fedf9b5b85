//! The Kafka door's request path: bounds check, header and body decode, dispatch to the
//! handlers over a real broker, reply encoding. Input: one request frame without its length
//! prefix (api key, version, correlation id, client id, body), as in
//! `fuzz/corpus/kafka_request/`. Any panic, abort or oversized allocation is a finding.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

strom_fuzz::capped_allocator!();
use strom_kafka::fuzzing::Harness;

thread_local! {
    static HARNESS: RefCell<Harness> = RefCell::new(Harness::new());
}

fuzz_target!(|frame: &[u8]| {
    HARNESS.with(|h| h.borrow_mut().request(frame));
});
