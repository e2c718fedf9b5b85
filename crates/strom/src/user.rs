//! `strom user set|delete|list`: SCRAM credentials, offline on a data directory
//! (`--data-dir DIR`, the way the first user is made before the broker ever starts) or
//! online through a broker (`--bootstrap`, AlterUserScramCredentials /
//! DescribeUserScramCredentials over a PLAINTEXT listener).
//!
//! The password is read from standard input (`--password-stdin`, first line), never from
//! the command line, where `ps` would show it.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use strom_broker::security::credentials::Credentials;
use strom_broker::security::scram::{random_bytes, ScramMechanism, MIN_ITERATIONS};

/// Where the credentials are.
#[derive(Args, Debug, Clone)]
pub(crate) struct Target {
    /// Work on this data directory directly (no broker needed).
    #[arg(long, global = true)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Broker address HOST:PORT (when --data-dir is not given), reached as
    /// --security-protocol says.
    #[arg(
        long,
        env = "STROM_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub(crate) bootstrap: String,
    /// Print JSON instead of a table (list).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) security: strom_client::cli::SecurityArgs,
}

impl Target {
    /// A client of the broker at --bootstrap, secured as the flags say.
    pub(crate) async fn connect(&self) -> Result<strom_client::Client> {
        self.security.apply()?;
        Ok(strom_client::Client::connect(&self.bootstrap).await?)
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum UserCmd {
    /// Create a user or change its password for one mechanism.
    Set(SetArgs),
    /// Delete a user's credential for one mechanism, or for every mechanism.
    Delete {
        name: String,
        /// Only this mechanism [default: every mechanism the user has].
        #[arg(long)]
        mechanism: Option<String>,
    },
    /// List the users and their mechanisms.
    List,
}

#[derive(Args, Debug)]
pub(crate) struct SetArgs {
    name: String,
    /// SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN logins are checked against either).
    #[arg(long, default_value = "SCRAM-SHA-512")]
    mechanism: String,
    /// Read the password from the first line of standard input.
    #[arg(long, required = true)]
    password_stdin: bool,
    /// PBKDF2 iterations, 4096 to 16384.
    #[arg(long, default_value_t = MIN_ITERATIONS)]
    iterations: u32,
}

impl SetArgs {
    /// The mechanism by name and the password from standard input.
    fn read(&self) -> Result<(ScramMechanism, String)> {
        Ok((mechanism(&self.mechanism)?, read_password()?))
    }
}

fn mechanism(name: &str) -> Result<ScramMechanism> {
    ScramMechanism::from_name(name)
        .with_context(|| format!("unknown mechanism {name:?} (SCRAM-SHA-256 or SCRAM-SHA-512)"))
}

fn read_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        bail!("the password on standard input is empty");
    }
    Ok(pw)
}

/// Runs the command; returns the process exit code.
pub(crate) fn run(target: Target, cmd: UserCmd) -> i32 {
    exit_code(match &target.data_dir {
        Some(dir) => offline(dir.clone(), &target, cmd),
        None => block_on(online(&target, cmd)),
    })
}

/// Runs an online command on a one-thread runtime.
pub(crate) fn block_on(f: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(f)
}

/// 0, or 1 with the error on standard error.
pub(crate) fn exit_code(result: Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn print_list(target: &Target, users: &[(String, Vec<(ScramMechanism, u32)>)]) {
    if target.json {
        let v: Vec<serde_json::Value> = users
            .iter()
            .map(|(u, ms)| {
                serde_json::json!({
                    "user": u,
                    "credentials": ms.iter().map(|(m, i)| serde_json::json!({
                        "mechanism": m.name(), "iterations": i
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    println!("{:<32} MECHANISMS", "USER");
    for (u, ms) in users {
        let ms: Vec<String> = ms
            .iter()
            .map(|(m, i)| format!("{} ({i} iterations)", m.name()))
            .collect();
        println!("{u:<32} {}", ms.join(", "));
    }
}

fn offline(dir: PathBuf, target: &Target, cmd: UserCmd) -> Result<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let store = Credentials::open(&dir)?;
    match cmd {
        UserCmd::Set(set) => {
            let (m, pw) = set.read()?;
            store.set_password(&set.name, m, pw.as_bytes(), set.iterations)?;
            eprintln!(
                "user {}: {} credential set in {}",
                set.name,
                m.name(),
                dir.display()
            );
        }
        UserCmd::Delete { name, mechanism: m } => {
            let mechs: Vec<ScramMechanism> = match m {
                Some(m) => vec![mechanism(&m)?],
                None => store
                    .list()
                    .into_iter()
                    .find(|(u, _)| *u == name)
                    .map(|(_, ms)| ms.into_iter().map(|(m, _)| m).collect())
                    .with_context(|| format!("user {name:?} has no credential"))?,
            };
            for m in mechs {
                store.delete(&name, m)?;
                eprintln!("user {name}: {} credential deleted", m.name());
            }
        }
        UserCmd::List => print_list(target, &store.list()),
    }
    Ok(())
}

/// A per-user error of DescribeUserScramCredentials or AlterUserScramCredentials.
fn user_error(user: &str, code: i16, message: Option<&str>) -> anyhow::Error {
    anyhow::anyhow!("user {user}: error {code}: {}", message.unwrap_or(""))
}

pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

async fn describe(
    client: &strom_client::Client,
    name: Option<&str>,
) -> Result<Vec<(String, Vec<(ScramMechanism, u32)>)>> {
    let req = DescribeUserScramCredentialsRequest::default()
        .with_users(name.map(|n| vec![UserName::default().with_name(sb(n))]));
    let resp = client.call(&req).await?;
    if resp.error_code != 0 {
        bail!(
            "DescribeUserScramCredentials: error {}: {}",
            resp.error_code,
            resp.error_message.as_deref().unwrap_or("")
        );
    }
    let mut out = Vec::new();
    for r in resp.results {
        if r.error_code != 0 {
            return Err(user_error(
                r.user.as_str(),
                r.error_code,
                r.error_message.as_deref(),
            ));
        }
        let ms = r
            .credential_infos
            .iter()
            .filter_map(|c| {
                ScramMechanism::from_code(c.mechanism).map(|m| (m, c.iterations as u32))
            })
            .collect();
        out.push((r.user.to_string(), ms));
    }
    Ok(out)
}

async fn online(target: &Target, cmd: UserCmd) -> Result<()> {
    let client = target.connect().await?;
    let mut req = AlterUserScramCredentialsRequest::default();
    let name = match cmd {
        UserCmd::List => {
            print_list(target, &describe(&client, None).await?);
            return Ok(());
        }
        UserCmd::Set(set) => {
            let (m, pw) = set.read()?;
            // The client salts and hashes: the password never leaves this process.
            let salt = random_bytes(24);
            let salted = m.salted_password(pw.as_bytes(), &salt, set.iterations);
            req.upsertions.push(
                ScramCredentialUpsertion::default()
                    .with_name(sb(&set.name))
                    .with_mechanism(m.code())
                    .with_iterations(set.iterations as i32)
                    .with_salt(salt.into())
                    .with_salted_password(salted.into()),
            );
            set.name
        }
        UserCmd::Delete { name, mechanism: m } => {
            let mechs: Vec<ScramMechanism> = match m {
                Some(m) => vec![mechanism(&m)?],
                None => describe(&client, Some(&name))
                    .await?
                    .into_iter()
                    .flat_map(|(_, ms)| ms.into_iter().map(|(m, _)| m))
                    .collect(),
            };
            for m in mechs {
                req.deletions.push(
                    ScramCredentialDeletion::default()
                        .with_name(sb(&name))
                        .with_mechanism(m.code()),
                );
            }
            name
        }
    };
    let resp = client.call(&req).await?;
    for r in &resp.results {
        if r.error_code != 0 {
            return Err(user_error(
                r.user.as_str(),
                r.error_code,
                r.error_message.as_deref(),
            ));
        }
    }
    eprintln!("user {name}: credentials altered on {}", target.bootstrap);
    Ok(())
}
