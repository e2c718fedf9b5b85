//! The rewrites of `legacy`, from requests captured from real old clients (through a
//! recording TCP proxy in front of `strom serve`): Debian's kcat 1.7.1 (librdkafka 2.0.2)
//! with `api.version.request=false` and `broker.version.fallback=0.8.2` / `0.9.0`, Debian's
//! sarama 1.22 at `V0_10_2_0`, and kafka-python 3.0 with `api_version=(0,8,1)`,
//! `(0,10,1)` and `(0,11)`.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest,
    ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use strom_records::message_set;

use super::*;

const PRODUCE_V0_KCAT_SNAPPY: &str = "0000000000000003000772646b61666b61ffff000075300000000100046361706b00000001000000000000004900000000000000000000003d379428090002ffffffff0000002f3800001901401098de641d0000ffffffff0000000268310d1b50010000001001d735a70000ffffffff000000026832";
const PRODUCE_V1_KCAT_GZIP: &str = "0000000100000003000772646b61666b61ffff000075300000000100046361706b00000001000000000000004b00000000000000000000003f5eb514750001ffffffff000000311f8b0800000000000003636080030179b78a4b0c0cff8100c8634a37848a3382e4dafc353390e48c0011b01a0838000000";
const PRODUCE_V2_SARAMA: &str = "0000000200000000000a736172616d612d653265ffff000027100000000100046361707300000001000000000000002700000000000000000000001bcab4f03e0100000001a23ceda66d000000026b3000000003732d30";
const FETCH_V0_KCAT: &str = "0001000000000005000772646b61666b61ffffffff000001f4000000010000000100046361706b0000000100000000000000000000000000100000";
const FETCH_V1_KCAT: &str = "0001000100000004000772646b61666b61ffffffff000001f4000000010000000100046361706b0000000100000000000000000000000000100000";
const FETCH_V3_SARAMA: &str = "0001000300000006000a736172616d612d653265ffffffff000000fa0000000106400000000000010004636170730000000100000000000000000000000000100000";
const OFFSET_COMMIT_V0_KAFKA_PYTHON: &str = "000800000000000100136b61666b612d707974686f6e2d332e302e31320004673038310000000100046361706b0000000100000000000000000000000300046d657461";
const OFFSET_COMMIT_V1_SARAMA: &str = "0008000100000008000a736172616d612d6532650002677300000001002b736172616d612d6532652d34353830663765643732363634383936396463623535336532616437323664370000000100046361707300000001000000000000000000000002ffffffffffffffff0000";
const OFFSET_FETCH_V0_KAFKA_PYTHON: &str = "000900000000000200136b61666b612d707974686f6e2d332e302e31320004673038310000000100046361706b0000000100000000";
const LIST_OFFSETS_V0_KCAT: &str = "0002000000000003000772646b61666b61ffffffff0000000100046361706b0000000100000000fffffffffffffffe00000001";
const CREATE_TOPICS_V0_KAFKA_PYTHON: &str = "001300000000000300136b61666b612d707974686f6e2d332e302e313200000001000463617074000000010001000000000000000000007530";
const DELETE_TOPICS_V0_KAFKA_PYTHON: &str =
    "001400000000000400136b61666b612d707974686f6e2d332e302e31320000000100046361707400007530";
const DESCRIBE_CONFIGS_V0_KAFKA_PYTHON: &str =
    "002000000000000200136b61666b612d707974686f6e2d332e302e3132000000010200046361706bffffffff";

const ALL: &[&str] = &[
    PRODUCE_V0_KCAT_SNAPPY,
    PRODUCE_V1_KCAT_GZIP,
    PRODUCE_V2_SARAMA,
    FETCH_V0_KCAT,
    FETCH_V1_KCAT,
    FETCH_V3_SARAMA,
    OFFSET_COMMIT_V0_KAFKA_PYTHON,
    OFFSET_COMMIT_V1_SARAMA,
    OFFSET_FETCH_V0_KAFKA_PYTHON,
    LIST_OFFSETS_V0_KCAT,
    CREATE_TOPICS_V0_KAFKA_PYTHON,
    DELETE_TOPICS_V0_KAFKA_PYTHON,
    DESCRIBE_CONFIGS_V0_KAFKA_PYTHON,
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `(api, version, body)` of a captured frame (without its length prefix).
fn split(hex: &str) -> (ApiKey, i16, Bytes) {
    let frame = Bytes::from(unhex(hex));
    let key = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).unwrap();
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let mut rest = frame.slice(8..);
    raw_string(&mut rest).unwrap();
    (key, version, rest)
}

/// The captured request rewritten, decoded by the crate at the rewritten version.
fn rewritten<T: Decodable>(hex: &str) -> (T, Back) {
    let (key, version, body) = split(hex);
    let (out, back) = rewrite(key, version, body).unwrap();
    let mut out = out.freeze();
    let req = T::decode(&mut out, target(key)).unwrap();
    assert!(
        out.is_empty(),
        "{key:?} v{version}: bytes after the rewritten body"
    );
    (req, back)
}

fn values(batch: &Bytes) -> Vec<(Option<Bytes>, Option<Bytes>)> {
    strom_records::records(batch)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.key, r.value)
        })
        .collect()
}

fn b(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn old_produce_message_sets_become_one_valid_v2_batch() {
    for (hex, acks, topic, want) in [
        (
            PRODUCE_V0_KCAT_SNAPPY,
            -1,
            "capk",
            vec![(None, b("h1")), (None, b("h2"))],
        ),
        (
            PRODUCE_V1_KCAT_GZIP,
            -1,
            "capk",
            vec![(None, b("g1")), (None, b("g2"))],
        ),
        (PRODUCE_V2_SARAMA, -1, "caps", vec![(b("k0"), b("s-0"))]),
    ] {
        let (r, back): (ProduceRequest, _) = rewritten(hex);
        assert_eq!(r.acks, acks);
        assert_eq!(r.transactional_id, None);
        let td = &r.topic_data[0];
        assert_eq!(td.name.as_str(), topic);
        let batch = td.partition_data[0].records.clone().unwrap();
        strom_records::validate(&batch, usize::MAX).unwrap();
        assert_eq!(values(&batch), want);
        let Back::Produce { order, .. } = back else {
            panic!("not a produce")
        };
        assert_eq!(order, vec![(topic.to_string(), vec![(0, None)])]);
    }
}

#[test]
fn a_corrupt_old_message_set_is_refused_at_the_door_and_not_passed_on() {
    let frame = unhex(PRODUCE_V1_KCAT_GZIP);
    // Flip a bit in the compressed value: the message's CRC no longer matches; then cut
    // the set short by lowering its message size (the set holds bytes after it).
    let mut bad_crc = frame.clone();
    let last = bad_crc.len() - 3;
    bad_crc[last] ^= 0x10;
    let mut truncated = frame.clone();
    let size_at = frame.len() - 0x4b + 8; // the message's size field
    truncated[size_at + 3] -= 1;
    let mut v2 = frame.clone();
    v2[frame.len() - 0x4b + 16] = 2; // magic 2 in Produce v1
    for (bad, code) in [
        (bad_crc, ResponseError::CorruptMessage.code()),
        (truncated, ResponseError::CorruptMessage.code()),
        (v2, ResponseError::InvalidRecord.code()),
    ] {
        let hex: String = bad.iter().map(|b| format!("{b:02x}")).collect();
        let (r, back): (ProduceRequest, _) = rewritten(&hex);
        assert!(
            r.topic_data.iter().all(|t| t.partition_data.is_empty()),
            "the refused set reached the handler"
        );
        let Back::Produce { order, .. } = back else {
            panic!("not a produce")
        };
        assert_eq!(order, vec![("capk".to_string(), vec![(0, Some(code))])]);
    }
}

#[test]
fn old_produce_responses_are_written_at_the_old_version() {
    let order = vec![(
        "t".to_string(),
        vec![(0, None), (1, Some(ResponseError::CorruptMessage.code()))],
    )];
    let resp = ProduceResponse::default()
        .with_throttle_time_ms(7)
        .with_responses(vec![
            kafka_protocol::messages::produce_response::TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_responses(vec![
                    kafka_protocol::messages::produce_response::PartitionProduceResponse::default()
                        .with_index(0)
                        .with_base_offset(42)
                        .with_log_append_time_ms(-1),
                ]),
        ]);
    let mut enc = BytesMut::new();
    resp.encode(&mut enc, 3).unwrap();
    for version in 0..=2i16 {
        let back = Back::Produce {
            version,
            order: order.clone(),
        };
        let mut out = back_body(enc.clone().freeze(), &back).unwrap().freeze();
        assert_eq!(out.get_i32(), 1);
        assert_eq!(string(&mut out).unwrap(), "t");
        assert_eq!(out.get_i32(), 2);
        for (p, code, base) in [(0, 0, 42), (1, 2, -1)] {
            assert_eq!(out.get_i32(), p);
            assert_eq!(out.get_i16(), code);
            assert_eq!(out.get_i64(), base);
            if version >= 2 {
                assert_eq!(out.get_i64(), -1);
            }
        }
        if version >= 1 {
            assert_eq!(out.get_i32(), 7);
        }
        assert!(out.is_empty());
    }
}

#[test]
fn old_fetches_are_rewritten_and_answered_with_message_sets_of_the_clients_magic() {
    for (hex, version, topic, max_bytes) in [
        (FETCH_V0_KCAT, 0, "capk", OLD_FETCH_MAX_BYTES),
        (FETCH_V1_KCAT, 1, "capk", OLD_FETCH_MAX_BYTES),
        (FETCH_V3_SARAMA, 3, "caps", OLD_FETCH_MAX_BYTES), // asked 100 MiB
    ] {
        let (r, back): (FetchRequest, _) = rewritten(hex);
        assert_eq!(r.max_bytes, max_bytes);
        assert_eq!(r.isolation_level, 0);
        assert_eq!(r.topics[0].topic.as_str(), topic);
        assert_eq!(r.topics[0].partitions[0].fetch_offset, 0);
        assert_eq!(r.topics[0].partitions[0].partition_max_bytes, 1 << 20);
        // The answer: a v4 response holding one v2 batch of three records.
        let recs: Vec<strom_records::NewRecord<'_>> = ["a", "b", "c"]
            .iter()
            .map(|v| strom_records::NewRecord {
                key: Some(b"k"),
                value: Some(v.as_bytes()),
                headers: Vec::new(),
            })
            .collect();
        let batch = Bytes::from(strom_records::build_records(1_700_000_000_000, &recs));
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![PartitionData::default()
                .with_partition_index(0)
                .with_high_watermark(3)
                .with_records(Some(batch))])]);
        let mut enc = BytesMut::new();
        resp.encode(&mut enc, 4).unwrap();
        let mut out = back_body(enc.freeze(), &back).unwrap().freeze();
        if version >= 1 {
            assert_eq!(out.get_i32(), 0); // throttle
        }
        assert_eq!(out.get_i32(), 1);
        assert_eq!(string(&mut out).unwrap(), topic);
        assert_eq!(out.get_i32(), 1);
        assert_eq!(out.get_i32(), 0);
        assert_eq!(out.get_i16(), 0);
        assert_eq!(out.get_i64(), 3);
        let set = nbytes(&mut out).unwrap().unwrap();
        assert!(out.is_empty());
        let magic = if version >= 2 { 1 } else { 0 };
        assert_eq!(message_set::magic(&set), Some(magic));
        let again = Bytes::from(message_set::up_convert(&set, 5).unwrap());
        let got: Vec<_> = values(&again).into_iter().map(|(_, v)| v).collect();
        assert_eq!(got, vec![b("a"), b("b"), b("c")]);
    }
}

#[test]
fn old_offset_commits_become_v2() {
    let (r, back): (OffsetCommitRequest, _) = rewritten(OFFSET_COMMIT_V0_KAFKA_PYTHON);
    assert!(matches!(back, Back::Same));
    assert_eq!(r.group_id.as_str(), "g081");
    assert_eq!(r.generation_id_or_member_epoch, -1);
    assert_eq!(r.member_id.as_str(), "");
    let p = &r.topics[0].partitions[0];
    assert_eq!(
        (p.partition_index, p.committed_offset),
        (0, 3),
        "{:?}",
        r.topics
    );
    assert_eq!(p.committed_metadata.as_deref(), Some("meta"));

    let (r, _): (OffsetCommitRequest, _) = rewritten(OFFSET_COMMIT_V1_SARAMA);
    assert_eq!(r.group_id.as_str(), "gs");
    assert_eq!(r.generation_id_or_member_epoch, 1);
    assert!(r.member_id.starts_with("sarama-e2e-"));
    assert_eq!(r.topics[0].name.as_str(), "caps");
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.partition_index, p.committed_offset), (0, 2));
    assert_eq!(p.committed_metadata.as_deref(), Some(""));
}

#[test]
fn old_offset_fetch_list_offsets_and_admin_requests_are_rewritten() {
    let (r, _): (OffsetFetchRequest, _) = rewritten(OFFSET_FETCH_V0_KAFKA_PYTHON);
    assert_eq!(r.group_id.as_str(), "g081");
    assert_eq!(r.topics.as_ref().unwrap()[0].partition_indexes, vec![0]);

    let (r, back): (ListOffsetsRequest, _) = rewritten(LIST_OFFSETS_V0_KCAT);
    assert_eq!(r.topics[0].partitions[0].timestamp, -2);
    let resp =
        ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("capk")))
            .with_partitions(vec![ListOffsetsPartitionResponse::default()
                .with_partition_index(0)
                .with_timestamp(-1)
                .with_offset(5)])]);
    let mut enc = BytesMut::new();
    resp.encode(&mut enc, 1).unwrap();
    let out = back_body(enc.freeze(), &back).unwrap();
    let mut want = BytesMut::new();
    want.put_i32(1);
    put_str(&mut want, "capk");
    want.put_i32(1);
    want.put_i32(0);
    want.put_i16(0);
    want.put_i32(1); // old-style offsets: [5]
    want.put_i64(5);
    assert_eq!(out, want);

    let (r, back): (CreateTopicsRequest, _) = rewritten(CREATE_TOPICS_V0_KAFKA_PYTHON);
    assert_eq!(r.topics[0].name.as_str(), "capt");
    assert_eq!(r.topics[0].num_partitions, 1);
    assert!(!r.validate_only);
    let resp = CreateTopicsResponse::default().with_topics(vec![CreatableTopicResult::default()
        .with_name(TopicName(StrBytes::from_static_str("capt")))
        .with_error_code(36)
        .with_error_message(Some(StrBytes::from_static_str("exists")))]);
    let mut enc = BytesMut::new();
    resp.encode(&mut enc, 2).unwrap();
    let out = back_body(enc.freeze(), &back).unwrap();
    let mut want = BytesMut::new();
    want.put_i32(1);
    put_str(&mut want, "capt");
    want.put_i16(36);
    assert_eq!(out, want);

    let (r, back): (DeleteTopicsRequest, _) = rewritten(DELETE_TOPICS_V0_KAFKA_PYTHON);
    assert_eq!(r.topic_names[0].as_str(), "capt");
    let out = back_body(Bytes::from_static(&[0, 0, 0, 9, 1, 2]), &back).unwrap();
    assert_eq!(&out[..], &[1, 2]);

    let (r, back): (DescribeConfigsRequest, _) = rewritten(DESCRIBE_CONFIGS_V0_KAFKA_PYTHON);
    assert_eq!(r.resources[0].resource_name.as_str(), "capk");
    assert!(!r.include_synonyms);
    let cfg = |name: &'static str, source| {
        DescribeConfigsResourceResult::default()
            .with_name(StrBytes::from_static_str(name))
            .with_value(Some(StrBytes::from_static_str("1")))
            .with_config_source(source)
    };
    let resp =
        DescribeConfigsResponse::default().with_results(vec![DescribeConfigsResult::default()
            .with_error_message(None)
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("capk"))
            .with_configs(vec![cfg("a", 5), cfg("b", 1)])]);
    let mut enc = BytesMut::new();
    resp.encode(&mut enc, 1).unwrap();
    let mut out = back_body(enc.freeze(), &back).unwrap().freeze();
    assert_eq!(out.get_i32(), 0);
    assert_eq!(out.get_i32(), 1);
    assert_eq!(out.get_i16(), 0);
    assert_eq!(out.get_i16(), -1); // null error message
    assert_eq!(out.get_i8(), 2);
    assert_eq!(string(&mut out).unwrap(), "capk");
    assert_eq!(out.get_i32(), 2);
    for (name, is_default) in [("a", 1), ("b", 0)] {
        assert_eq!(string(&mut out).unwrap(), name);
        assert_eq!(string(&mut out).unwrap(), "1");
        assert_eq!(out.get_u8(), 0); // read only
        assert_eq!(out.get_u8(), is_default);
        assert_eq!(out.get_u8(), 0); // sensitive
    }
    assert!(out.is_empty());
}

#[test]
fn truncated_old_requests_are_refused_without_panicking() {
    for hex in ALL {
        let (key, version, body) = split(hex);
        let parsed_here = matches!(
            key,
            ApiKey::Produce | ApiKey::Fetch | ApiKey::ListOffsets | ApiKey::OffsetCommit
        );
        for n in 0..body.len() {
            let r = rewrite(key, version, body.slice(..n));
            if parsed_here {
                // A produce cut inside a message set is refused whole, or that partition is.
                let refused_partition = matches!(&r, Ok((_, Back::Produce { order, .. }))
                    if order.iter().any(|(_, ps)| ps.iter().any(|p| p.1.is_some())));
                assert!(
                    r.is_err() || refused_partition,
                    "{key:?} v{version} cut at {n} accepted"
                );
            }
        }
        // Garbage counts size nothing.
        let mut huge = BytesMut::from(&body[..]);
        if key == ApiKey::Fetch {
            let at = if version >= 3 { 16 } else { 12 };
            huge[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
            assert!(rewrite(key, version, huge.freeze()).is_err());
        }
    }
}
