//! The `strom` client subcommands: `topic`, `produce`, `consume`, `queue`, `group`, `txn`,
//! `bench`.
//!
//! `strom` adds [`Command`] to its clap enum (`#[command(flatten)]`) and calls [`run`].

mod bench;
mod cluster;
mod commands;
mod queue;
mod share_bench;
mod txn;

use clap::{Args, Subcommand};

pub use bench::BenchArgs;
pub use commands::{ConsumeArgs, GroupCmd, ProduceArgs, TopicCmd};
pub use queue::{QueueCmd, QueueConsumeArgs};
pub use txn::TxnCmd;

/// Connection options shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Broker address HOST:PORT.
    #[arg(
        long,
        env = "STROM_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// How the client's connections are secured, with Kafka's names. The SASL password is read
/// from the environment (`STROM_SASL_PASSWORD`), never from a flag: flags show in `ps`.
#[derive(Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(
        long,
        env = "STROM_SECURITY_PROTOCOL",
        default_value = "PLAINTEXT",
        global = true
    )]
    pub security_protocol: String,
    /// PEM file of the CA certificates the brokers' certificates must chain to (SSL,
    /// SASL_SSL).
    #[arg(long, env = "STROM_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM certificate chain presented to the brokers (mutual TLS; with --tls-client-key).
    #[arg(long, env = "STROM_TLS_CLIENT_CERT", global = true)]
    pub tls_client_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-client-cert.
    #[arg(long, env = "STROM_TLS_CLIENT_KEY", global = true)]
    pub tls_client_key: Option<std::path::PathBuf>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_PLAINTEXT, SASL_SSL).
    #[arg(
        long,
        env = "STROM_SASL_MECHANISM",
        default_value = "SCRAM-SHA-512",
        global = true
    )]
    pub sasl_mechanism: String,
    /// The SASL user (its password: the environment variable STROM_SASL_PASSWORD).
    #[arg(long, env = "STROM_SASL_USERNAME", global = true)]
    pub sasl_username: Option<String>,
}

impl SecurityArgs {
    /// Sets this process's connection security (see [`crate::security`]).
    pub fn apply(&self) -> crate::Result<()> {
        use crate::security::{Mechanism, Sasl, Security};
        let bad = |m: String| crate::Error::Invalid(m);
        let protocol = self.security_protocol.to_ascii_uppercase();
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => {
                return Err(bad(format!(
                    "--security-protocol {other:?}: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                )))
            }
        };
        let tls = match (tls, &self.tls_ca) {
            (false, _) => None,
            (true, None) => {
                return Err(bad(format!(
                    "--security-protocol {protocol} needs --tls-ca (the brokers' CA certificates)"
                )))
            }
            (true, Some(ca)) => {
                let identity = match (&self.tls_client_cert, &self.tls_client_key) {
                    (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                    (None, None) => None,
                    _ => {
                        return Err(bad(
                            "--tls-client-cert and --tls-client-key go together".into()
                        ))
                    }
                };
                let config =
                    strom_tls::client_config(ca, identity).map_err(|e| bad(e.to_string()))?;
                Some(std::sync::Arc::new(config))
            }
        };
        let sasl = if sasl {
            let mechanism = Mechanism::from_name(&self.sasl_mechanism).ok_or_else(|| {
                bad(format!(
                    "--sasl-mechanism {:?}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    self.sasl_mechanism
                ))
            })?;
            let username = self.sasl_username.clone().ok_or_else(|| {
                bad(format!(
                    "--security-protocol {protocol} needs --sasl-username"
                ))
            })?;
            let password = std::env::var("STROM_SASL_PASSWORD").map_err(|_| {
                bad(format!(
                    "--security-protocol {protocol}: set the password in STROM_SASL_PASSWORD"
                ))
            })?;
            Some(Sasl {
                mechanism,
                username,
                password,
            })
        } else {
            None
        };
        crate::security::set_security(Security { tls, sasl })
    }
}

/// Client subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, describe, alter and delete topics.
    Topic {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: TopicCmd,
    },
    /// Produce one record per input line.
    Produce(ProduceArgs),
    /// Consume records.
    Consume(ConsumeArgs),
    /// Share groups (KIP-932 queues): consume as a member.
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
    },
    /// List and describe consumer and share groups.
    Group {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// List and describe transactions.
    Txn {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: TxnCmd,
    },
    /// Benchmark produce/consume throughput and end-to-end latency.
    Bench(BenchArgs),
    /// Cluster mode: status (brokers, controller, under-replicated and offline partitions)
    /// and rebalance (spread replicas and leaders over the live brokers).
    Cluster {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: cluster::ClusterCmd,
    },
}

/// Runs a client command; returns the process exit code. Errors print as one line.
pub fn run(cmd: Command) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return 1;
        }
    };
    let security = match &cmd {
        Command::Topic { conn, .. }
        | Command::Group { conn, .. }
        | Command::Txn { conn, .. }
        | Command::Cluster { conn, .. } => &conn.security,
        Command::Produce(a) => &a.conn.security,
        Command::Consume(a) => &a.conn.security,
        Command::Queue {
            cmd: QueueCmd::Consume(a),
        } => &a.conn.security,
        Command::Bench(a) => &a.conn.security,
    };
    if let Err(e) = security.apply() {
        eprintln!("error: {e}");
        return 1;
    }
    let res = rt.block_on(async move {
        match cmd {
            Command::Topic { conn, cmd } => commands::topic(&conn, cmd).await,
            Command::Produce(a) => commands::produce(a).await,
            Command::Consume(a) => commands::consume(a).await,
            Command::Group { conn, cmd } => commands::group(&conn, cmd).await,
            Command::Queue { cmd } => queue::queue(cmd).await,
            Command::Txn { conn, cmd } => txn::txn(&conn, cmd).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Cluster { conn, cmd } => cluster::cluster(&conn, cmd).await,
        }
    });
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
