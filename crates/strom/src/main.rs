//! `strom`: the broker (`strom serve`) and its command line client (`topic`, `produce`,
//! `consume`, `group`, `bench`, `user`, `acl`, `token`,
//! `quota`).

mod acl;
mod quota;
mod serve;
mod token;
mod user;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strom",
    version,
    about = "Strom: a Kafka-compatible message broker in one binary"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start: the size of the flags struct does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the broker.
    Serve(serve::ServeArgs),
    /// SCRAM users (SASL PLAIN and SCRAM logins): set, delete, list; offline with
    /// --data-dir or online with --bootstrap.
    User {
        #[command(flatten)]
        target: user::Target,
        #[command(subcommand)]
        cmd: user::UserCmd,
    },
    /// Kafka ACLs (enforced with `strom serve --authorizer acl`): add, list, remove;
    /// offline with --data-dir or online with --bootstrap.
    Acl {
        #[command(flatten)]
        target: user::Target,
        #[command(subcommand)]
        cmd: acl::AclCmd,
    },
    /// Client quotas (producer_byte_rate, consumer_byte_rate, ...): set, remove, list;
    /// offline with --data-dir or online with --bootstrap.
    Quota {
        #[command(flatten)]
        target: user::Target,
        #[command(subcommand)]
        cmd: quota::QuotaCmd,
    },
    /// Bearer tokens of the HTTP door: create, list, revoke (on --data-dir; a running
    /// broker sees a change within a second).
    Token {
        #[command(flatten)]
        target: token::Target,
        #[command(subcommand)]
        cmd: token::TokenCmd,
    },
    #[command(flatten)]
    Client(strom_client::cli::Command),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Serve(args) => match serve::run(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
        Cmd::User { target, cmd } => user::run(target, cmd),
        Cmd::Acl { target, cmd } => acl::run(target, cmd),
        Cmd::Quota { target, cmd } => quota::run(target, cmd),
        Cmd::Token { target, cmd } => token::run(target, cmd),
        Cmd::Client(cmd) => strom_client::cli::run(cmd),
    };
    std::process::exit(code);
}
