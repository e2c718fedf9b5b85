//! The schemas against the `kafka-protocol` crate, and the walk against hostile frames.
//!
//! 1. For every API and version, a frame generated from the schema (two elements per array,
//!    every string, byte field and known tagged field filled) must decode with the crate,
//!    be consumed to its last byte, and re-encode to the same bytes: the schema then
//!    describes the crate's decoder exactly at that version.
//! 2. Mutations of those frames and of the captured client requests in
//!    `fuzz/corpus/kafka_request/`: whenever the crate decodes a frame, the walk accepts it
//!    and ends at the byte where the crate stopped (no false refusals); whenever the walk
//!    accepts a frame, the crate's largest allocation while decoding it stays small.
//!    The crate is run even on frames the walk refuses, which would abort a normal process:
//!    this test binary's allocator serves huge requests with untouched `MAP_NORESERVE`
//!    mappings, so they cost nothing, and records the largest request per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::*;
use crate::schema::SCHEMAS;

// --- an allocator for decoding hostile frames in a test -----------------------------------

/// Requests at least this large get their own lazily backed mapping.
const HUGE: usize = 64 << 20;

struct LazyHuge;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: small requests go to the system allocator unchanged; huge ones are whole
// anonymous mappings (page aligned, zeroed by the kernel) released with munmap.
unsafe impl GlobalAlloc for LazyHuge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        if layout.size() < HUGE || layout.align() > 4096 {
            return unsafe { System.alloc(layout) };
        }
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < HUGE || layout.align() > 4096 {
            unsafe { System.dealloc(ptr, layout) };
        } else {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        }
    }
}

#[global_allocator]
static ALLOC: LazyHuge = LazyHuge;

/// Runs `f`, returning its result and the largest allocation it asked for.
fn largest_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

// --- decoding with the crate -------------------------------------------------------------

fn decode_body<T: Decodable>(buf: &mut Bytes, v: i16) -> anyhow::Result<()> {
    T::decode(buf, v).map(drop)
}

fn reencode<T: Decodable + Encodable>(buf: &mut Bytes, v: i16) -> anyhow::Result<BytesMut> {
    let msg = T::decode(buf, v)?;
    let mut out = BytesMut::new();
    msg.encode(&mut out, v)?;
    Ok(out)
}

macro_rules! by_api {
    ($api:expr, $f:ident, $buf:expr, $v:expr) => {
        match $api {
            ApiKey::Produce => $f::<ProduceRequest>($buf, $v),
            ApiKey::Fetch => $f::<FetchRequest>($buf, $v),
            ApiKey::ListOffsets => $f::<ListOffsetsRequest>($buf, $v),
            ApiKey::Metadata => $f::<MetadataRequest>($buf, $v),
            ApiKey::ApiVersions => $f::<ApiVersionsRequest>($buf, $v),
            ApiKey::CreateTopics => $f::<CreateTopicsRequest>($buf, $v),
            ApiKey::DeleteTopics => $f::<DeleteTopicsRequest>($buf, $v),
            ApiKey::CreatePartitions => $f::<CreatePartitionsRequest>($buf, $v),
            ApiKey::DescribeConfigs => $f::<DescribeConfigsRequest>($buf, $v),
            ApiKey::IncrementalAlterConfigs => $f::<IncrementalAlterConfigsRequest>($buf, $v),
            ApiKey::DescribeCluster => $f::<DescribeClusterRequest>($buf, $v),
            ApiKey::InitProducerId => $f::<InitProducerIdRequest>($buf, $v),
            ApiKey::FindCoordinator => $f::<FindCoordinatorRequest>($buf, $v),
            ApiKey::JoinGroup => $f::<JoinGroupRequest>($buf, $v),
            ApiKey::SyncGroup => $f::<SyncGroupRequest>($buf, $v),
            ApiKey::Heartbeat => $f::<HeartbeatRequest>($buf, $v),
            ApiKey::LeaveGroup => $f::<LeaveGroupRequest>($buf, $v),
            ApiKey::OffsetCommit => $f::<OffsetCommitRequest>($buf, $v),
            ApiKey::OffsetFetch => $f::<OffsetFetchRequest>($buf, $v),
            ApiKey::DescribeGroups => $f::<DescribeGroupsRequest>($buf, $v),
            ApiKey::ListGroups => $f::<ListGroupsRequest>($buf, $v),
            ApiKey::DeleteGroups => $f::<DeleteGroupsRequest>($buf, $v),
            ApiKey::OffsetDelete => $f::<OffsetDeleteRequest>($buf, $v),
            ApiKey::ConsumerGroupHeartbeat => $f::<ConsumerGroupHeartbeatRequest>($buf, $v),
            ApiKey::ConsumerGroupDescribe => $f::<ConsumerGroupDescribeRequest>($buf, $v),
            ApiKey::ShareGroupHeartbeat => $f::<ShareGroupHeartbeatRequest>($buf, $v),
            ApiKey::ShareGroupDescribe => $f::<ShareGroupDescribeRequest>($buf, $v),
            ApiKey::ShareFetch => $f::<ShareFetchRequest>($buf, $v),
            ApiKey::ShareAcknowledge => $f::<ShareAcknowledgeRequest>($buf, $v),
            ApiKey::DescribeShareGroupOffsets => $f::<DescribeShareGroupOffsetsRequest>($buf, $v),
            ApiKey::AlterShareGroupOffsets => $f::<AlterShareGroupOffsetsRequest>($buf, $v),
            ApiKey::DeleteShareGroupOffsets => $f::<DeleteShareGroupOffsetsRequest>($buf, $v),
            ApiKey::AddPartitionsToTxn => $f::<AddPartitionsToTxnRequest>($buf, $v),
            ApiKey::AddOffsetsToTxn => $f::<AddOffsetsToTxnRequest>($buf, $v),
            ApiKey::EndTxn => $f::<EndTxnRequest>($buf, $v),
            ApiKey::TxnOffsetCommit => $f::<TxnOffsetCommitRequest>($buf, $v),
            ApiKey::DescribeTransactions => $f::<DescribeTransactionsRequest>($buf, $v),
            ApiKey::ListTransactions => $f::<ListTransactionsRequest>($buf, $v),
            ApiKey::DescribeProducers => $f::<DescribeProducersRequest>($buf, $v),
            ApiKey::DeleteRecords => $f::<DeleteRecordsRequest>($buf, $v),
            ApiKey::DescribeLogDirs => $f::<DescribeLogDirsRequest>($buf, $v),
            ApiKey::AlterReplicaLogDirs => $f::<AlterReplicaLogDirsRequest>($buf, $v),
            ApiKey::DescribeTopicPartitions => $f::<DescribeTopicPartitionsRequest>($buf, $v),
            ApiKey::ElectLeaders => $f::<ElectLeadersRequest>($buf, $v),
            ApiKey::AlterPartitionReassignments => {
                $f::<AlterPartitionReassignmentsRequest>($buf, $v)
            }
            ApiKey::ListPartitionReassignments => $f::<ListPartitionReassignmentsRequest>($buf, $v),
            ApiKey::DescribeQuorum => $f::<DescribeQuorumRequest>($buf, $v),
            ApiKey::AlterConfigs => $f::<AlterConfigsRequest>($buf, $v),
            ApiKey::OffsetForLeaderEpoch => $f::<OffsetForLeaderEpochRequest>($buf, $v),
            ApiKey::DescribeClientQuotas => $f::<DescribeClientQuotasRequest>($buf, $v),
            ApiKey::AlterClientQuotas => $f::<AlterClientQuotasRequest>($buf, $v),
            ApiKey::ListConfigResources => $f::<ListConfigResourcesRequest>($buf, $v),
            ApiKey::GetTelemetrySubscriptions => $f::<GetTelemetrySubscriptionsRequest>($buf, $v),
            ApiKey::PushTelemetry => $f::<PushTelemetryRequest>($buf, $v),
            ApiKey::SaslHandshake => $f::<SaslHandshakeRequest>($buf, $v),
            ApiKey::SaslAuthenticate => $f::<SaslAuthenticateRequest>($buf, $v),
            ApiKey::DescribeUserScramCredentials => {
                $f::<DescribeUserScramCredentialsRequest>($buf, $v)
            }
            ApiKey::AlterUserScramCredentials => $f::<AlterUserScramCredentialsRequest>($buf, $v),
            ApiKey::DescribeAcls => $f::<DescribeAclsRequest>($buf, $v),
            ApiKey::CreateAcls => $f::<CreateAclsRequest>($buf, $v),
            ApiKey::DeleteAcls => $f::<DeleteAclsRequest>($buf, $v),
            other => panic!("no decoder listed for {other:?}"),
        }
    };
}

/// Decodes a whole frame (header + body) with the crate: the bytes consumed, or the error.
fn crate_decode(frame: &[u8]) -> Result<usize, String> {
    if frame.len() < 4 {
        return Err("short".into());
    }
    let api = i16::from_be_bytes([frame[0], frame[1]]);
    let v = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(api).map_err(|_| "api".to_string())?;
    let mut buf = Bytes::copy_from_slice(frame);
    RequestHeader::decode(&mut buf, key.request_header_version(v)).map_err(|e| e.to_string())?;
    if is_share_v2(key, v) {
        // As the door decodes it: the v1 body without the v2 field.
        let (mut v1, _) = crate::share_wire::split_v2(api, &buf).ok_or("short v2 body")?;
        by_api!(key, decode_body, &mut v1, 1).map_err(|e| e.to_string())?;
        return Ok(frame.len() - v1.len());
    }
    by_api!(key, decode_body, &mut buf, v).map_err(|e| e.to_string())?;
    Ok(frame.len() - buf.len())
}

/// ShareFetch / ShareAcknowledge v2, which the crate does not know (see `share_wire`).
fn is_share_v2(key: ApiKey, v: i16) -> bool {
    matches!(key, ApiKey::ShareFetch | ApiKey::ShareAcknowledge) && v == 2
}

// --- frames generated from the schemas ---------------------------------------------------

struct Gen {
    out: BytesMut,
    version: i16,
    flexible: bool,
    /// Varies the filler values.
    n: u8,
}

impl Gen {
    fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.out.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.put_u8(v as u8);
    }

    fn len(&mut self, n: usize, wide: bool) {
        if self.flexible {
            self.uvarint(n as u32 + 1);
        } else if wide {
            self.out.put_i32(n as i32);
        } else {
            self.out.put_i16(n as i16);
        }
    }

    fn fields(&mut self, fields: &[Field]) {
        for f in fields.iter().filter(|f| f.tag.is_none()) {
            if f.present(self.version) {
                self.value(&f.ty);
            }
        }
        if self.flexible {
            let mut tagged: Vec<&Field> = fields
                .iter()
                .filter(|f| f.tag.is_some() && f.present(self.version))
                .collect();
            tagged.sort_by_key(|f| f.tag);
            self.uvarint(tagged.len() as u32);
            for f in tagged {
                let mut inner = Gen {
                    out: BytesMut::new(),
                    version: self.version,
                    flexible: true,
                    n: self.n,
                };
                inner.value(&f.ty);
                self.uvarint(f.tag.expect("tagged"));
                self.uvarint(inner.out.len() as u32);
                self.out.extend_from_slice(&inner.out);
            }
        }
    }

    fn value(&mut self, ty: &Ty) {
        self.n = self.n.wrapping_add(1);
        let n = self.n;
        match ty {
            // Booleans as the crate writes them, other values non-default so that the
            // crate's encoder writes the tagged ones back.
            Ty::Bool => self.out.put_u8(1),
            Ty::Int8 => self.out.put_i8(1),
            Ty::Int16 => self.out.put_i16(i16::from(n) + 1),
            Ty::Int32 => self.out.put_i32(i32::from(n) + 1),
            Ty::Int64 => self.out.put_i64(i64::from(n) + 1),
            Ty::Uuid => self.out.put_slice(&[n | 1; 16]),
            Ty::Str => {
                self.len(2, false);
                self.out.put_slice(&[b'a' + n % 26, b'b']);
            }
            Ty::Bytes => {
                self.len(3, true);
                self.out.put_slice(&[n, 1, 2]);
            }
            Ty::Array(elem) => {
                self.len(2, true);
                self.value(elem);
                self.value(elem);
            }
            Ty::Structs(fields) => {
                self.len(2, true);
                self.fields(fields);
                self.fields(fields);
            }
            Ty::Struct(fields) => self.fields(fields),
            Ty::OptStruct(fields) => {
                self.out.put_i8(1);
                self.fields(fields);
            }
        }
    }
}

/// A frame for `s` at `version`: header (client id "gen") and a filled body.
fn generate(s: &Schema, version: i16) -> Vec<u8> {
    let flexible = version >= s.flexible;
    let mut g = Gen {
        out: BytesMut::new(),
        version,
        flexible: false,
        n: 0,
    };
    g.out.put_i16(s.api as i16);
    g.out.put_i16(version);
    g.out.put_i32(7);
    g.out.put_i16(3);
    g.out.put_slice(b"gen");
    if flexible {
        g.out.put_u8(0);
    }
    g.flexible = flexible;
    g.fields(s.fields);
    g.out.to_vec()
}

fn header_len(frame: &[u8], flexible: bool) -> usize {
    let client = i16::from_be_bytes([frame[8], frame[9]]).max(0) as usize;
    10 + client + usize::from(flexible)
}

#[test]
fn schemas_cover_every_served_api_and_agree_with_the_crate_on_versions() {
    for &(key, _, max) in crate::versions::SUPPORTED {
        let s = schema::for_api(key as i16).unwrap_or_else(|| panic!("{key:?} has no schema"));
        let crate_range = key.valid_versions();
        assert_eq!(s.min, crate_range.min, "{key:?}");
        assert!(max <= s.max, "{key:?} is served beyond its schema");
        // The crate's list may name a version its decoder refuses (InitProducerId v6):
        // nothing beyond the schema's range decodes.
        for v in s.max + 1..=crate_range.max {
            assert!(
                crate_decode(&generate(s, v)).is_err(),
                "{key:?} v{v} decodes"
            );
        }
        for v in s.min..=s.max {
            assert_eq!(
                v >= s.flexible,
                key.request_header_version(v) >= 2,
                "{key:?} v{v}: flexible versions disagree with the crate"
            );
        }
    }
}

#[test]
fn generated_frames_decode_with_the_crate_to_the_last_byte_and_reencode_identically() {
    for s in SCHEMAS {
        for v in s.min..=s.max {
            let frame = generate(s, v);
            let checked = check(s, v, &frame).unwrap_or_else(|e| panic!("{} v{v}: {e}", s.name));
            assert_eq!(checked.used, frame.len(), "{} v{v}", s.name);
            assert_eq!(
                crate_decode(&frame),
                Ok(frame.len()),
                "{} v{v}: the crate reads the generated frame differently",
                s.name
            );
            let flexible = v >= s.flexible;
            let hl = header_len(&frame, flexible);
            assert_eq!(checked.header_len, hl, "{} v{v}", s.name);
            let again = if is_share_v2(s.api, v) {
                let (mut v1, extra) =
                    crate::share_wire::split_v2(s.api as i16, &frame[hl..]).expect("v2 body");
                let again = by_api!(s.api, reencode, &mut v1, 1)
                    .unwrap_or_else(|e| panic!("{} v{v}: {e}", s.name));
                BytesMut::from(
                    &crate::share_wire::join_v2(s.api as i16, &again, extra).expect("join")[..],
                )
            } else {
                let mut body = Bytes::copy_from_slice(&frame[hl..]);
                by_api!(s.api, reencode, &mut body, v)
                    .unwrap_or_else(|e| panic!("{} v{v}: {e}", s.name))
            };
            assert_eq!(
                &again[..],
                &frame[hl..],
                "{} v{v}: the crate's encoding differs from the schema's",
                s.name
            );
        }
    }
}

#[test]
fn huge_counts_are_refused_before_anything_is_sized() {
    // The 23-byte Metadata v4 frame that aborted the broker: topics = 0x7fffffff.
    let mut f = vec![0, 3, 0, 4, 0, 0, 0, 1, 0, 3];
    f.extend_from_slice(b"abc");
    f.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
    f.push(1);
    assert!(check_request(3, 4, &f).is_err());
    let (decoded, largest) = largest_alloc(|| crate_decode(&f));
    assert!(
        decoded.is_err() && largest >= HUGE,
        "the crate does size it"
    );
    // Metadata v12: a compact array count as a varint.
    let mut f = vec![0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0];
    f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
    assert!(check_request(3, 12, &f).is_err());
    // An array of int32 in a tagged struct, a string longer than the frame, a lying tag.
    for s in SCHEMAS {
        for v in s.min..=s.max {
            let frame = generate(s, v);
            for cut in 0..frame.len() {
                assert!(
                    check(s, v, &frame[..cut]).is_err(),
                    "{} v{v} cut at {cut}",
                    s.name
                );
            }
        }
    }
}

#[test]
fn elements_are_capped_per_request() {
    let s = schema::for_api(ApiKey::DeleteGroups as i16).expect("schema");
    // v0: an array of ELEMENTS_MAX + 1 empty strings (2 bytes each) fits the frame bytes
    // but not the element cap.
    let n = ELEMENTS_MAX + 1;
    let mut f = vec![0, 42, 0, 0, 0, 0, 0, 1, 0, 0];
    f.extend_from_slice(&(n as i32).to_be_bytes());
    f.resize(f.len() + 2 * n, 0);
    let e = check(s, 0, &f).expect_err("capped");
    assert!(e.0.contains("array elements"), "{e}");
}

// --- hostile frames ----------------------------------------------------------------------

/// xorshift64*: a fixed, fast sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let body = 4..f.len().max(5);
    for _ in 0..1 + rng.below(3) {
        let at = body.start + rng.below(body.len());
        match rng.below(8) {
            0 if at < f.len() => f[at] ^= 1 << rng.below(8),
            1 if at < f.len() => f[at] = rng.next() as u8,
            2 if at + 4 <= f.len() => {
                let v: i32 = [0x7fff_ffff, 0x7fff_fffe, -2, 0x00ff_ffff, 0x1000][rng.below(5)];
                f[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            3 if at + 2 <= f.len() => {
                let v: i16 = [0x7fff, -2, 0x100][rng.below(3)];
                f[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            4 if at < f.len() => {
                let run = 1 + rng.below(5);
                for b in f.iter_mut().skip(at).take(run) {
                    *b = 0xff;
                }
            }
            5 => f.truncate(at),
            6 => {
                for _ in 0..rng.below(16) {
                    f.push(rng.next() as u8);
                }
            }
            _ if at < f.len() => f[at] = 0,
            _ => {}
        }
    }
    f
}

/// Captured client requests (see `fuzz/corpus/kafka_request/`), if the corpus is there.
fn corpus() -> Vec<Vec<u8>> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kafka_request");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Vec<u8>> = entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter(|f| f.len() >= 8 && f.len() <= 1 << 16)
        .collect();
    out.sort();
    out
}

fn differential(frame: &[u8]) {
    let api = i16::from_be_bytes([frame[0], frame[1]]);
    let v = i16::from_be_bytes([frame[2], frame[3]]);
    let Some(s) = schema::for_api(api) else {
        return;
    };
    if v < s.min || v > s.max {
        return;
    }
    let walked = check(s, v, frame);
    let (decoded, largest) = largest_alloc(|| crate_decode(frame));
    if let Ok(used) = decoded {
        // The crate decodes a known tagged field from the stream whatever size its header
        // announces; the walk refuses a size that lies, which no client sends.
        if matches!(&walked, Err(e) if e.0.contains("tagged field")) {
            return;
        }
        let walked = walked.as_ref().unwrap_or_else(|e| {
            panic!("{} v{v} decodes but is refused ({e}): {frame:02x?}", s.name)
        });
        assert_eq!(walked.used, used, "{} v{v}: {frame:02x?}", s.name);
    }
    if walked.is_ok() {
        // Every element decoded needs its bytes: a few hundred bytes of structs per frame
        // byte at the very most.
        let bound = 1024 * frame.len() + 4096;
        assert!(
            largest <= bound,
            "{} v{v} passes the walk but the crate asks for {largest} bytes: {frame:02x?}",
            s.name
        );
    }
}

#[test]
fn mutated_frames_never_pass_the_walk_with_a_large_allocation_nor_fail_it_when_valid() {
    let mut seeds: Vec<Vec<u8>> = SCHEMAS
        .iter()
        .flat_map(|s| (s.min..=s.max).map(move |v| generate(s, v)))
        .collect();
    seeds.extend(corpus());
    // STROM_BOUNDS_MUTATIONS=N runs longer by hand.
    let per_seed = std::env::var("STROM_BOUNDS_MUTATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in &seeds {
        differential(seed);
        for _ in 0..per_seed {
            differential(&mutate(&mut rng, seed));
        }
    }
}

/// Writes the generated frames as fuzz seeds: `STROM_SEED_DIR=fuzz/corpus/kafka_request
/// cargo test -p strom-kafka -- --ignored write_generated_seeds`.
#[test]
#[ignore = "writes files: run by hand to refresh fuzz/corpus/kafka_request"]
fn write_generated_seeds() {
    let dir = std::env::var("STROM_SEED_DIR").expect("STROM_SEED_DIR names the corpus directory");
    let mut written = 0;
    for s in SCHEMAS {
        for v in s.min..=s.max {
            let path = format!("{dir}/generated-{}-v{v}.bin", s.name);
            std::fs::write(&path, generate(s, v)).expect("write a seed");
            written += 1;
        }
    }
    assert!(written >= SCHEMAS.len());
}
