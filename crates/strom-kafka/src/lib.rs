//! # strom-kafka: the Kafka wire-protocol door
//!
//! Translates Kafka requests into calls on [`strom_broker::Broker`] and back; holds no broker
//! logic. Message types come from the `kafka-protocol` crate; record batches travel as the
//! opaque bytes the client sent (Produce) or the log stored (Fetch).
//!
//! - `listener`: `--listeners` / `--advertised-listeners` in Kafka's syntax;
//! - `server`: listeners (one accept loop each), framing (length prefix, `socket.request.max.bytes`), one task per
//!   connection, in-order pipelined responses, graceful drain, the dispatch table;
//! - `versions`: the advertised API ranges;
//! - `sasl`: SaslHandshake / SaslAuthenticate per connection, re-authentication, the SCRAM
//!   credential APIs;
//! - `meta`, `data`, `admin`, `group_api`, `txn_api` (transactions): the handlers; `legacy`: UNSUPPORTED_VERSION answers for the
//!   old Produce/Fetch versions advertised for old librdkafka; `codes`: core errors to Kafka
//!   error codes.

mod acl_api;
mod admin;
mod admin2;
mod bounds;
mod cluster_api;
mod codes;
mod consumer_api;
mod data;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod group_api;
mod legacy;
pub mod listener;
mod meta;
mod pool;
mod sasl;
mod schema;
mod server;
mod share_api;
mod share_session;
mod share_wire;
mod txn_api;
mod versions;

pub use listener::{ListenerConfig, SecurityProtocol};
pub use server::{KafkaConfig, KafkaServer};
