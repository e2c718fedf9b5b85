//! The HTTP door's JSON produce body (`POST /topics/{t}/records`): parsing, every record's
//! checks and placement, the batches built (each must pass the log's validation). Input: a
//! request body, as in `fuzz/corpus/http_produce/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

strom_fuzz::capped_allocator!();

fuzz_target!(|body: &[u8]| {
    strom_http::fuzzing::produce_body(body);
});
