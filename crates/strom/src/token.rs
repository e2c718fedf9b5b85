//! `strom token create|list|revoke`: bearer tokens of the HTTP door, on a data directory
//! (`--data-dir DIR`, a stopped or a running broker: the broker re-reads the token file
//! within a second). The token is printed once by `create` (standard output, alone on its
//! line, for `TOKEN=$(strom token create ...)`); only its SHA-256 is stored.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use strom_broker::security::tokens::Tokens;

/// Where the tokens are.
#[derive(Args, Debug, Clone)]
pub(crate) struct Target {
    /// The broker's data directory.
    #[arg(
        long,
        env = "STROM_DATA_DIR",
        default_value = "strom-data",
        global = true
    )]
    data_dir: PathBuf,
    /// Print JSON instead of a table (list).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCmd {
    /// Make a token that authenticates as USER; prints it (it cannot be shown again).
    Create {
        /// A unique name for the token (what `revoke` takes).
        name: String,
        /// The user it authenticates as (principal `User:<user>`).
        #[arg(long)]
        user: String,
        /// How long it is valid: a number and s, m, h or d (`30d`); `never` for no expiry.
        #[arg(long, default_value = "30d")]
        ttl: String,
    },
    /// List the tokens (names, users, expiry; never the tokens).
    List,
    /// Revoke a token by name.
    Revoke { name: String },
}

/// `30d`, `12h`, `15m`, `90s`; `never` is `None`.
fn parse_ttl(s: &str) -> Result<Option<Duration>> {
    if s == "never" {
        return Ok(None);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .with_context(|| format!("--ttl {s:?}: a number and s, m, h or d (30d), or never"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--ttl {s:?}: the unit must be s, m, h or d (30d), or never"),
    };
    if n == 0 {
        bail!("--ttl must be more than zero");
    }
    Ok(Some(Duration::from_secs(n.saturating_mul(secs))))
}

fn iso(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Runs the command; returns the process exit code.
pub(crate) fn run(target: Target, cmd: TokenCmd) -> i32 {
    crate::user::exit_code(run_inner(&target, cmd))
}

fn run_inner(target: &Target, cmd: TokenCmd) -> Result<()> {
    let dir = &target.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tokens = Tokens::open(dir)?;
    match cmd {
        TokenCmd::Create { name, user, ttl } => {
            let ttl = parse_ttl(&ttl)?;
            let token = tokens.create(&name, &user, ttl)?;
            println!("{token}");
            eprintln!(
                "token {name}: authenticates as User:{user}, {} (stored hashed in {}; this is the only time it is shown)",
                match ttl {
                    Some(t) => format!(
                        "expires {}",
                        iso(SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| (d + t).as_millis() as i64))
                    ),
                    None => "never expires".to_string(),
                },
                dir.display()
            );
        }
        TokenCmd::Revoke { name } => {
            let t = tokens.revoke(&name)?;
            eprintln!("token {name} of User:{} revoked", t.user);
        }
        TokenCmd::List => {
            let all = tokens.list();
            if target.json {
                println!("{}", serde_json::to_string(&all)?);
                return Ok(());
            }
            println!("{:<24} {:<24} {:<22} EXPIRES", "NAME", "USER", "CREATED");
            for t in all {
                println!(
                    "{:<24} {:<24} {:<22} {}",
                    t.name,
                    t.user,
                    iso(t.created_ms),
                    t.expires_ms.map_or("never".to_string(), iso)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_and_dates() {
        assert_eq!(
            parse_ttl("30d").unwrap(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_ttl("90s").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("never").unwrap(), None);
        assert!(parse_ttl("0d").is_err());
        assert!(parse_ttl("3w").is_err());
        assert!(parse_ttl("d").is_err());
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_798_761_600_000), "2027-01-01T00:00:00Z");
        assert_eq!(iso(951_782_400_000 + 86_399_000), "2000-02-29T23:59:59Z");
    }
}
