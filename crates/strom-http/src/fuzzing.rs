//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`).

use bytes::Bytes;

use crate::api::{parse_body, prepare_produce, ProduceBody};

/// The JSON produce body path of `POST /topics/{t}/records` without a broker: parsing,
/// every record's checks, placement in a 3-partition topic and the batches built. Every
/// batch the door builds from a body it accepts must be one the log accepts (a door never
/// builds what it would then be refused).
pub fn produce_body(body: &[u8]) {
    let Ok(req) = parse_body::<ProduceBody>(Ok(Bytes::copy_from_slice(body))) else {
        return;
    };
    let Ok(prepared) = prepare_produce(&req, "t", 3, 0) else {
        return;
    };
    for (partition, records, batch) in prepared.batches(1) {
        assert!((0..3).contains(&partition));
        let summary = strom_records::validate(&batch, usize::MAX)
            .unwrap_or_else(|e| panic!("the door built a batch the log refuses: {e}"));
        assert_eq!(summary.records, records.len() as u64);
    }
}
