//! Strom core (placeholder until the Kafka door lands).

pub mod producer;
