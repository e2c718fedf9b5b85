//! The `strom` client subcommands: `topic`, `produce`, `consume`, `queue`, `group`, `txn`,
//! `bench`.
//!
//! `strom` adds [`Command`] to its clap enum (`#[command(flatten)]`) and calls [`run`].

mod bench;
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
    let res = rt.block_on(async move {
        match cmd {
            Command::Topic { conn, cmd } => commands::topic(&conn, cmd).await,
            Command::Produce(a) => commands::produce(a).await,
            Command::Consume(a) => commands::consume(a).await,
            Command::Group { conn, cmd } => commands::group(&conn, cmd).await,
            Command::Queue { cmd } => queue::queue(cmd).await,
            Command::Txn { conn, cmd } => txn::txn(&conn, cmd).await,
            Command::Bench(a) => bench::run(a).await,
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
