//! `strom quota set|remove|list`: client quotas (producer_byte_rate, consumer_byte_rate,
//! request_percentage, controller_mutation_rate) per user and / or client id, or their
//! defaults; offline on a data directory (`--data-dir DIR`, also on a running broker: it
//! re-reads the file within a second) or online through a broker (`--bootstrap`:
//! AlterClientQuotas / DescribeClientQuotas, as kafka-configs.sh).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use strom_broker::quota::{ClientQuotas, QuotaEntity, QuotaOps};

use crate::user::{block_on, exit_code, sb, Target};

#[derive(Subcommand, Debug)]
pub(crate) enum QuotaCmd {
    /// Set quotas of one entity (a user, a client id, or both; or their defaults).
    Set(SetArgs),
    /// Remove quotas of one entity (the keys given, or all of them).
    Remove(RemoveArgs),
    /// List every quota.
    List,
}

/// The entity: `--user` and / or `--client-id`, each a name or the default.
#[derive(Args, Debug)]
pub(crate) struct Entity {
    /// The user (principal `User:<name>`) the quota is for.
    #[arg(long, conflicts_with = "default_user")]
    user: Option<String>,
    /// The quota of every user that has none of its own (each user gets it separately).
    #[arg(long)]
    default_user: bool,
    /// The client id (client.id) the quota is for.
    #[arg(long, conflicts_with = "default_client_id")]
    client_id: Option<String>,
    /// The quota of every client id that has none of its own.
    #[arg(long)]
    default_client_id: bool,
}

impl Entity {
    fn entity(&self) -> Result<QuotaEntity> {
        let mut e = Vec::new();
        if self.user.is_some() || self.default_user {
            e.push(("user".to_string(), self.user.clone()));
        }
        if self.client_id.is_some() || self.default_client_id {
            e.push(("client-id".to_string(), self.client_id.clone()));
        }
        if e.is_empty() {
            bail!("name the entity: --user NAME / --default-user and / or --client-id NAME / --default-client-id");
        }
        Ok(e)
    }
}

#[derive(Args, Debug)]
pub(crate) struct SetArgs {
    #[command(flatten)]
    entity: Entity,
    /// Bytes per second the entity may produce.
    #[arg(long)]
    producer_byte_rate: Option<f64>,
    /// Bytes per second the entity may fetch.
    #[arg(long)]
    consumer_byte_rate: Option<f64>,
    /// Percentage of one request thread's time (stored, not enforced).
    #[arg(long)]
    request_percentage: Option<f64>,
    /// Partition mutations per second (stored, not enforced).
    #[arg(long)]
    controller_mutation_rate: Option<f64>,
}

#[derive(Args, Debug)]
pub(crate) struct RemoveArgs {
    #[command(flatten)]
    entity: Entity,
    /// A key to remove (repeatable) [default: every key].
    #[arg(long)]
    key: Vec<String>,
}

const KEYS: [&str; 4] = [
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
    "controller_mutation_rate",
];

/// The entity and the checked operations of a command (`None`: a `list`).
fn change(cmd: &QuotaCmd) -> Result<Option<(QuotaEntity, QuotaOps)>> {
    let (entity, ops): (QuotaEntity, QuotaOps) = match cmd {
        QuotaCmd::List => return Ok(None),
        QuotaCmd::Set(s) => {
            let values = [
                s.producer_byte_rate,
                s.consumer_byte_rate,
                s.request_percentage,
                s.controller_mutation_rate,
            ];
            let ops: QuotaOps = KEYS
                .iter()
                .zip(values)
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), Some(v))))
                .collect();
            if ops.is_empty() {
                bail!("give at least one of --producer-byte-rate, --consumer-byte-rate, --request-percentage, --controller-mutation-rate");
            }
            (s.entity.entity()?, ops)
        }
        QuotaCmd::Remove(r) => {
            let keys: Vec<String> = if r.key.is_empty() {
                KEYS.iter().map(|k| k.to_string()).collect()
            } else {
                r.key.clone()
            };
            (
                r.entity.entity()?,
                keys.into_iter().map(|k| (k, None)).collect(),
            )
        }
    };
    ClientQuotas::check(&entity, &ops)?;
    Ok(Some((entity, ops)))
}

/// Runs the command; returns the process exit code.
pub(crate) fn run(target: Target, cmd: QuotaCmd) -> i32 {
    exit_code(match &target.data_dir {
        Some(dir) => offline(dir, &target, cmd),
        None => block_on(online(&target, cmd)),
    })
}

fn entity_text(e: &QuotaEntity) -> String {
    e.iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(",")
}

fn print(target: &Target, all: &[(QuotaEntity, Vec<(String, f64)>)]) {
    if target.json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|(e, values)| {
                serde_json::json!({
                    "entity": e.iter().map(|(t, n)| serde_json::json!({"type": t, "name": n})).collect::<Vec<_>>(),
                    "values": values.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    println!("{:<48} QUOTAS", "ENTITY");
    for (e, values) in all {
        let vs: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{:<48} {}", entity_text(e), vs.join(", "));
    }
}

fn offline(dir: &std::path::Path, target: &Target, cmd: QuotaCmd) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let store = ClientQuotas::open(dir)?;
    match change(&cmd)? {
        None => print(target, &store.describe(&[], false)),
        Some((entity, ops)) => {
            store.alter(&[(entity.clone(), ops)])?;
            eprintln!(
                "quotas of {} changed in {}",
                entity_text(&entity),
                dir.display()
            );
        }
    }
    Ok(())
}

async fn online(target: &Target, cmd: QuotaCmd) -> Result<()> {
    let client = target.connect().await?;
    let Some((entity, ops)) = change(&cmd)? else {
        let resp = client.call(&DescribeClientQuotasRequest::default()).await?;
        if resp.error_code != 0 {
            bail!(
                "DescribeClientQuotas: error {}: {}",
                resp.error_code,
                resp.error_message.as_deref().unwrap_or("")
            );
        }
        let all: Vec<(QuotaEntity, Vec<(String, f64)>)> = resp
            .entries
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                (
                    e.entity
                        .iter()
                        .map(|x| {
                            (
                                x.entity_type.to_string(),
                                x.entity_name.as_ref().map(|n| n.to_string()),
                            )
                        })
                        .collect(),
                    e.values
                        .iter()
                        .map(|v| (v.key.to_string(), v.value))
                        .collect(),
                )
            })
            .collect();
        print(target, &all);
        return Ok(());
    };
    let entry = EntryData::default()
        .with_entity(
            entity
                .iter()
                .map(|(t, n)| {
                    EntityData::default()
                        .with_entity_type(sb(t))
                        .with_entity_name(n.as_deref().map(sb))
                })
                .collect(),
        )
        .with_ops(
            ops.iter()
                .map(|(k, v)| {
                    OpData::default()
                        .with_key(sb(k))
                        .with_value(v.unwrap_or(0.0))
                        .with_remove(v.is_none())
                })
                .collect(),
        );
    let resp = client
        .call(&AlterClientQuotasRequest::default().with_entries(vec![entry]))
        .await?;
    for e in &resp.entries {
        if e.error_code != 0 {
            bail!(
                "AlterClientQuotas: error {}: {}",
                e.error_code,
                e.error_message.as_deref().unwrap_or("")
            );
        }
    }
    eprintln!(
        "quotas of {} changed on {}",
        entity_text(&entity),
        target.bootstrap
    );
    Ok(())
}
