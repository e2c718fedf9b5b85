//! Kafka door (placeholder).
