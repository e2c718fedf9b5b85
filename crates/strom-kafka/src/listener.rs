//! Listeners in Kafka's syntax: `listeners` (`NAME://HOST:PORT,...`), the
//! `listener.security.protocol.map` (`NAME:PROTOCOL,...`) and `advertised.listeners`.
//!
//! A listener's name is its security protocol unless the map says otherwise (Kafka's default
//! map names each protocol after itself). Names are case-insensitive (kept upper case, as
//! Kafka normalises them); each listener has its own name and its own port. An advertised
//! listener names a listener and gives the host and port clients are told to connect to for
//! it; a listener without one advertises its own address (127.0.0.1 for an unspecified one,
//! the bound port for port 0).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Kafka's security protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Every protocol, in Kafka's order.
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    /// Kafka's name of the protocol.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// The protocol named `s` (any case).
    pub fn from_name(s: &str) -> Option<SecurityProtocol> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Whether connections on it authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Whether connections on it start with a TLS handshake.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A listener to bind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The listener's name (upper case).
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Where it listens.
    pub listen: SocketAddr,
    /// Host and port advertised for it; `None`: its own address (see the module).
    pub advertised: Option<(String, u16)>,
}

impl ListenerConfig {
    /// A PLAINTEXT listener on `listen` advertising its own address.
    pub fn plaintext(listen: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            name: SecurityProtocol::Plaintext.name().into(),
            protocol: SecurityProtocol::Plaintext,
            listen,
            advertised: None,
        }
    }

    /// What it advertises once bound to `bound`.
    pub fn advertised_for(&self, bound: SocketAddr) -> (String, u16) {
        match &self.advertised {
            Some((h, p)) => (h.clone(), *p),
            None if bound.ip().is_unspecified() => ("127.0.0.1".into(), bound.port()),
            None => (bound.ip().to_string(), bound.port()),
        }
    }

    /// Refuses a TLS listener (SSL, SASL_SSL) without a certificate (`tls`: whether
    /// `--tls-cert` / `--tls-key` are given).
    pub fn check_supported(&self, tls: bool) -> Result<(), ListenerError> {
        if self.protocol.tls() && !tls {
            return Err(ListenerError(format!(
                "listener {}://{} uses {}: give its certificate with --tls-cert FILE --tls-key FILE",
                self.name, self.listen, self.protocol
            )));
        }
        Ok(())
    }
}

/// A bad listener setting, with a message that says which and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerError(pub String);

impl fmt::Display for ListenerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ListenerError {}

fn err<T>(msg: String) -> Result<T, ListenerError> {
    Err(ListenerError(msg))
}

/// One `NAME://HOST:PORT` entry, unresolved.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    name: String,
    host: String,
    port: u16,
}

/// Splits a comma-separated list; an empty list or an empty entry is an error.
fn entries<'a>(flag: &str, s: &'a str) -> Result<Vec<&'a str>, ListenerError> {
    if s.trim().is_empty() {
        return err(format!("{flag} is empty"));
    }
    let list: Vec<&str> = s.split(',').map(str::trim).collect();
    if list.iter().any(|e| e.is_empty()) {
        return err(format!("{flag} {s:?} has an empty entry"));
    }
    Ok(list)
}

fn check_name(flag: &str, entry: &str, name: &str) -> Result<String, ListenerError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return err(format!(
            "{entry:?} in {flag}: the listener name {name:?} must be letters, digits, '_' or '-'"
        ));
    }
    Ok(name.to_ascii_uppercase())
}

/// `HOST:PORT`, `[V6]:PORT` or `:PORT` (host empty).
pub fn parse_host_port(flag: &str, s: &str) -> Result<(String, u16), ListenerError> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return err(format!("{flag} {s:?} is not HOST:PORT"));
    };
    let host = match host.strip_prefix('[') {
        Some(rest) => match rest.strip_suffix(']') {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
            _ => return err(format!("{flag} {s:?}: {host:?} is not an IPv6 address")),
        },
        None if host.contains(':') => {
            return err(format!(
                "{flag} {s:?}: write an IPv6 host in brackets ([::1]:9092)"
            ))
        }
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| {
        ListenerError(format!(
            "{flag} {s:?}: bad port {port:?} (a number in [0, 65535])"
        ))
    })?;
    Ok((host.to_string(), port))
}

fn endpoints(flag: &str, s: &str) -> Result<Vec<Endpoint>, ListenerError> {
    let mut out: Vec<Endpoint> = Vec::new();
    for entry in entries(flag, s)? {
        let Some((name, addr)) = entry.split_once("://") else {
            return err(format!(
                "{entry:?} in {flag} is not NAME://HOST:PORT (e.g. PLAINTEXT://127.0.0.1:9092)"
            ));
        };
        let name = check_name(flag, entry, name)?;
        let (host, port) = parse_host_port(&format!("{name} in {flag}"), addr)?;
        if out.iter().any(|e| e.name == name) {
            return err(format!("{flag} names listener {name} twice"));
        }
        out.push(Endpoint { name, host, port });
    }
    Ok(out)
}

/// Parses a `listener.security.protocol.map`: `NAME:PROTOCOL,...`.
pub fn parse_protocol_map(
    flag: &str,
    s: &str,
) -> Result<Vec<(String, SecurityProtocol)>, ListenerError> {
    let mut out: Vec<(String, SecurityProtocol)> = Vec::new();
    for entry in entries(flag, s)? {
        let Some((name, proto)) = entry.split_once(':') else {
            return err(format!(
                "{entry:?} in {flag} is not NAME:PROTOCOL (e.g. INTERNAL:PLAINTEXT)"
            ));
        };
        let name = check_name(flag, entry, name.trim())?;
        let Some(protocol) = SecurityProtocol::from_name(proto.trim()) else {
            return err(format!(
                "{entry:?} in {flag}: unknown security protocol {proto:?} ({})",
                protocol_list()
            ));
        };
        if out.iter().any(|(n, _)| *n == name) {
            return err(format!("{flag} maps listener {name} twice"));
        }
        out.push((name, protocol));
    }
    Ok(out)
}

fn protocol_list() -> String {
    let names: Vec<&str> = SecurityProtocol::ALL.iter().map(|p| p.name()).collect();
    format!("one of {}", names.join(", "))
}

fn resolve_listen(flag: &str, e: &Endpoint) -> Result<SocketAddr, ListenerError> {
    if e.host.is_empty() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), e.port));
    }
    if let Ok(ip) = e.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, e.port));
    }
    let what = format!("listener {}://{}:{} in {flag}", e.name, e.host, e.port);
    (e.host.as_str(), e.port)
        .to_socket_addrs()
        .map_err(|x| ListenerError(format!("{what}: cannot resolve {:?}: {x}", e.host)))?
        .next()
        .ok_or_else(|| ListenerError(format!("{what}: {:?} resolves to nothing", e.host)))
}

/// The listeners of `listeners` (`--listeners`), their protocols from `map`
/// (`--listener-security-protocol-map`; a name it does not map must be a protocol's) and
/// their advertised addresses from `advertised` (`--advertised-listeners`).
pub fn parse_listeners(
    listeners: &str,
    map: Option<&str>,
    advertised: Option<&str>,
) -> Result<Vec<ListenerConfig>, ListenerError> {
    const FLAG: &str = "--listeners";
    let map = match map {
        Some(m) => parse_protocol_map("--listener-security-protocol-map", m)?,
        None => Vec::new(),
    };
    let mut out: Vec<ListenerConfig> = Vec::new();
    for e in endpoints(FLAG, listeners)? {
        let protocol = match map.iter().find(|(n, _)| *n == e.name) {
            Some((_, p)) => *p,
            None => SecurityProtocol::from_name(&e.name).ok_or_else(|| {
                ListenerError(format!(
                    "listener {}://{}:{} in {FLAG}: {} is neither a security protocol ({}) nor \
                     a name given in --listener-security-protocol-map",
                    e.name,
                    e.host,
                    e.port,
                    e.name,
                    protocol_list()
                ))
            })?,
        };
        if e.port != 0 {
            if let Some(other) = out.iter().find(|l| l.listen.port() == e.port) {
                return err(format!(
                    "{FLAG}: listeners {} and {} both use port {} (each listener needs its own port)",
                    other.name, e.name, e.port
                ));
            }
        }
        out.push(ListenerConfig {
            protocol,
            listen: resolve_listen(FLAG, &e)?,
            name: e.name,
            advertised: None,
        });
    }
    if let Some(list) = advertised {
        apply_advertised(&mut out, list)?;
    }
    Ok(out)
}

/// Sets the advertised address of each listener `list` (`--advertised-listeners`) names.
pub fn apply_advertised(out: &mut [ListenerConfig], list: &str) -> Result<(), ListenerError> {
    const FLAG: &str = "--listeners";
    {
        const AFLAG: &str = "--advertised-listeners";
        for a in endpoints(AFLAG, list)? {
            let Some(l) = out.iter_mut().find(|l| l.name == a.name) else {
                let names: Vec<&str> = out.iter().map(|l| l.name.as_str()).collect();
                return err(format!(
                    "{AFLAG} advertises {}, which is not a listener of {FLAG} ({})",
                    a.name,
                    names.join(", ")
                ));
            };
            l.advertised = Some(check_advertised(
                &format!("{} in {AFLAG}", a.name),
                a.host,
                a.port,
            )?);
        }
    }
    Ok(())
}

/// An advertised address must be one a client can connect to.
pub fn check_advertised(
    what: &str,
    host: String,
    port: u16,
) -> Result<(String, u16), ListenerError> {
    if host.is_empty() {
        return err(format!("{what}: the advertised host is empty"));
    }
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return err(format!(
            "{what}: cannot advertise the unspecified address {host} (clients cannot connect to it)"
        ));
    }
    if port == 0 {
        return err(format!("{what}: cannot advertise port 0"));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<ListenerConfig>, ListenerError> {
        parse_listeners(s, None, None)
    }

    fn msg<T: fmt::Debug>(r: Result<T, ListenerError>) -> String {
        r.expect_err("an error").0
    }

    #[test]
    fn the_issues_example() {
        let ls = parse("PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093").unwrap();
        assert_eq!(ls.len(), 2);
        assert_eq!(
            ls[0],
            ListenerConfig::plaintext("127.0.0.1:9092".parse().unwrap())
        );
        assert_eq!(ls[1].name, "SASL_SSL");
        assert_eq!(ls[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(ls[1].listen, "0.0.0.0:9093".parse().unwrap());
        assert!(ls[0].check_supported(false).is_ok());
        assert!(ls[1].check_supported(true).is_ok());
        let e = ls[1].check_supported(false).unwrap_err().0;
        assert!(e.contains("SASL_SSL") && e.contains("--tls-cert"), "{e}");
        assert!(ls[1].protocol.sasl() && !ls[0].protocol.sasl());
    }

    #[test]
    fn every_protocol_any_case_ipv6_and_empty_host() {
        let ls = parse(
            "plaintext://[::1]:1, ssl://:2 ,Sasl_Plaintext://127.0.0.1:3,SASL_SSL://localhost:4",
        )
        .unwrap();
        let protos: Vec<_> = ls.iter().map(|l| l.protocol).collect();
        assert_eq!(protos, SecurityProtocol::ALL);
        assert_eq!(ls[0].name, "PLAINTEXT");
        assert_eq!(ls[0].listen, "[::1]:1".parse().unwrap());
        assert_eq!(ls[1].listen, "0.0.0.0:2".parse().unwrap());
        assert_eq!(ls[3].listen.port(), 4);
        assert!(ls[3].listen.ip().is_loopback());
        for p in SecurityProtocol::ALL {
            assert_eq!(p.tls(), p.name().contains("SSL"));
            assert_eq!(p.sasl(), p.name().starts_with("SASL"));
        }
        assert!(ls[1].check_supported(true).is_ok());
        let e = ls[1].check_supported(false).unwrap_err().0;
        assert!(e.contains("--tls-cert"), "{e}");
    }

    #[test]
    fn advertised_defaults_to_the_bound_address() {
        let l = ListenerConfig::plaintext("0.0.0.0:0".parse().unwrap());
        assert_eq!(
            l.advertised_for("0.0.0.0:4321".parse().unwrap()),
            ("127.0.0.1".into(), 4321)
        );
        assert_eq!(
            l.advertised_for("10.1.2.3:9".parse().unwrap()),
            ("10.1.2.3".into(), 9)
        );
    }

    #[test]
    fn advertised_listeners_per_name() {
        let ls = parse_listeners(
            "PLAINTEXT://127.0.0.1:9092,INTERNAL://0.0.0.0:9093",
            Some("internal:PLAINTEXT"),
            Some("INTERNAL://broker.internal:19093"),
        )
        .unwrap();
        assert_eq!(ls[0].advertised, None);
        assert_eq!(ls[1].name, "INTERNAL");
        assert_eq!(ls[1].protocol, SecurityProtocol::Plaintext);
        assert_eq!(ls[1].advertised, Some(("broker.internal".into(), 19093)));
        let bound = "0.0.0.0:9093".parse().unwrap();
        assert_eq!(
            ls[1].advertised_for(bound),
            ("broker.internal".into(), 19093)
        );
    }

    #[test]
    fn port_zero_may_repeat() {
        assert!(parse("PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0").is_ok());
    }

    #[test]
    fn bad_listeners() {
        for (spec, want) in [
            ("", "--listeners is empty"),
            ("  ", "--listeners is empty"),
            ("PLAINTEXT://127.0.0.1:9092,", "empty entry"),
            ("127.0.0.1:9092", "is not NAME://HOST:PORT"),
            ("PLAINTEXT:/127.0.0.1:9092", "is not NAME://HOST:PORT"),
            ("://127.0.0.1:9092", "listener name \"\""),
            ("PLAIN TEXT://127.0.0.1:9092", "listener name"),
            ("FOO://127.0.0.1:9092", "FOO is neither a security protocol"),
            ("PLAINTEXT://127.0.0.1", "is not HOST:PORT"),
            ("PLAINTEXT://127.0.0.1:", "bad port \"\""),
            ("PLAINTEXT://127.0.0.1:65536", "bad port \"65536\""),
            ("PLAINTEXT://127.0.0.1:-1", "bad port"),
            ("PLAINTEXT://127.0.0.1:http", "bad port \"http\""),
            ("PLAINTEXT://::1:9092", "IPv6 host in brackets"),
            ("PLAINTEXT://[nope]:9092", "is not an IPv6 address"),
            (
                "PLAINTEXT://127.0.0.1:9092,SSL://0.0.0.0:9092",
                "listeners PLAINTEXT and SSL both use port 9092",
            ),
            (
                "PLAINTEXT://127.0.0.1:9092,plaintext://127.0.0.1:9093",
                "names listener PLAINTEXT twice",
            ),
            (
                "PLAINTEXT://no-such-host.invalid:9092",
                "cannot resolve \"no-such-host.invalid\"",
            ),
        ] {
            let e = msg(parse(spec));
            assert!(e.contains(want), "{spec:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn bad_protocol_maps() {
        let l = "A://127.0.0.1:1";
        for (map, want) in [
            ("", "--listener-security-protocol-map is empty"),
            ("A", "is not NAME:PROTOCOL"),
            ("A:TLS", "unknown security protocol \"TLS\""),
            ("A:PLAINTEXT,a:SSL", "maps listener A twice"),
            ("A B:SSL", "listener name"),
        ] {
            let e = msg(parse_listeners(l, Some(map), None));
            assert!(e.contains(want), "{map:?}: {e:?} lacks {want:?}");
        }
        // A name the map does not give must be a protocol's.
        let e = msg(parse_listeners("B://127.0.0.1:1", Some("A:SSL"), None));
        assert!(e.contains("B is neither"), "{e}");
    }

    #[test]
    fn bad_advertised_listeners() {
        let l = "PLAINTEXT://0.0.0.0:9092";
        for (adv, want) in [
            ("", "--advertised-listeners is empty"),
            ("host:9092", "is not NAME://HOST:PORT"),
            ("SSL://host:9092", "advertises SSL, which is not a listener"),
            ("PLAINTEXT://0.0.0.0:9092", "unspecified address"),
            ("PLAINTEXT://[::]:9092", "unspecified address"),
            ("PLAINTEXT://:9092", "advertised host is empty"),
            ("PLAINTEXT://host:0", "cannot advertise port 0"),
            ("PLAINTEXT://host:99999", "bad port"),
            (
                "PLAINTEXT://a:1,PLAINTEXT://b:2",
                "names listener PLAINTEXT twice",
            ),
        ] {
            let e = msg(parse_listeners(l, None, Some(adv)));
            assert!(e.contains(want), "{adv:?}: {e:?} lacks {want:?}");
        }
    }
}
