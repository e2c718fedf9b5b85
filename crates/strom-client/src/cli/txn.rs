//! `strom txn list` / `strom txn describe ID`: the broker's transactions, through
//! ListTransactions and DescribeTransactions (Strom is one broker: it is every transactional
//! id's coordinator).

use clap::Subcommand;
use kafka_protocol::messages::{
    DescribeTransactionsRequest, ListTransactionsRequest, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::commands::print_table;
use super::Conn;
use crate::{check, Client, Result};

#[derive(Subcommand, Debug)]
pub enum TxnCmd {
    /// Every transactional id: its producer id and state.
    List,
    /// One transactional id: state, producer id and epoch, timeout, start time and the
    /// partitions of its ongoing transaction.
    Describe {
        /// The transactional id.
        id: String,
    },
}

pub(crate) async fn txn(conn: &Conn, cmd: TxnCmd) -> Result<()> {
    let c = Client::connect(&conn.bootstrap).await?;
    match cmd {
        TxnCmd::List => {
            let resp = c.call(&ListTransactionsRequest::default()).await?;
            check(resp.error_code, || "ListTransactions".into())?;
            let rows: Vec<(String, i64, String)> = resp
                .transaction_states
                .iter()
                .map(|t| {
                    (
                        t.transactional_id.to_string(),
                        t.producer_id.0,
                        t.transaction_state.to_string(),
                    )
                })
                .collect();
            if conn.json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(id, p, s)| json!({"transactional_id": id, "producer_id": p, "state": s}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                let rows: Vec<Vec<String>> = rows
                    .into_iter()
                    .map(|(id, p, s)| vec![id, p.to_string(), s])
                    .collect();
                print_table(&["TRANSACTIONAL ID", "PRODUCER ID", "STATE"], &rows);
            }
        }
        TxnCmd::Describe { id } => {
            let req = DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.clone()))]);
            let resp = c.call(&req).await?;
            let Some(t) = resp.transaction_states.into_iter().next() else {
                return Err(crate::Error::Protocol(
                    "DescribeTransactions answered no transaction".into(),
                ));
            };
            check(t.error_code, || format!("transactional id {id:?}"))?;
            let partitions: Vec<String> = t
                .topics
                .iter()
                .flat_map(|d| {
                    d.partitions
                        .iter()
                        .map(move |p| format!("{}-{p}", d.topic.0.as_str()))
                })
                .collect();
            if conn.json {
                println!(
                    "{}",
                    json!({"transactional_id": id, "state": t.transaction_state.as_str(),
                    "producer_id": t.producer_id.0, "producer_epoch": t.producer_epoch,
                    "timeout_ms": t.transaction_timeout_ms,
                    "start_time_ms": t.transaction_start_time_ms, "partitions": partitions})
                );
            } else {
                let rows = vec![
                    vec!["transactional id".to_string(), id],
                    vec!["state".into(), t.transaction_state.to_string()],
                    vec!["producer id".into(), t.producer_id.0.to_string()],
                    vec!["producer epoch".into(), t.producer_epoch.to_string()],
                    vec!["timeout ms".into(), t.transaction_timeout_ms.to_string()],
                    vec![
                        "start time ms".into(),
                        t.transaction_start_time_ms.to_string(),
                    ],
                    vec!["partitions".into(), partitions.join(",")],
                ];
                print_table(&["FIELD", "VALUE"], &rows);
            }
        }
    }
    Ok(())
}
