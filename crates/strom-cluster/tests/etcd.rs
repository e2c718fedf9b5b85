//! The etcd client against a real etcd server: each test starts its own `etcd` process (Debian's
//! etcd-server; `apt-get install etcd-server`) on free loopback ports with a fresh data dir, and
//! kills it at the end.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strom_cluster::etcd::{
    CmpOp, Compare, Etcd, EtcdError, EventKind, Kv, TxnOp, WatchEvent, Watcher,
};

/// Where the etcd binary is (`STROM_ETCD` overrides).
fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("STROM_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        path.is_file(),
        "{} not found: these tests need a real etcd server; install it with \
         `apt-get install etcd-server` (or point STROM_ETCD at an etcd binary)",
        path.display()
    );
    path
}

/// `N` distinct free loopback ports (the listeners are all held until every port is picked,
/// then closed again before etcd binds them).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}

/// A running etcd server, killed on drop.
struct EtcdServer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl EtcdServer {
    async fn start() -> (EtcdServer, Etcd) {
        let bin = etcd_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let [client, peer] = free_ports();
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd.log");
        let mut cmd = Command::new(bin);
        cmd.arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&url)
            .arg("--advertise-client-urls")
            .arg(&url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("default={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // etcd reads ETCD_* variables as flags: none of the environment's may leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().expect("spawn etcd");
        let mut server = EtcdServer { child, url, dir };
        let etcd = server.wait_ready().await;
        (server, etcd)
    }

    /// Connects once etcd answers a read; panics with its log after 20 s.
    async fn wait_ready(&mut self) -> Etcd {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(etcd) = Etcd::connect(std::slice::from_ref(&self.url)).await {
                if etcd.get(b"ready?").await.is_ok() {
                    return etcd;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited with {status}:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!("etcd did not answer within 20 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a test body within `secs` seconds.
async fn bounded<F: Future<Output = ()>>(secs: u64, body: F) {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
}

/// Polls `get(key)` until it is `None`, for at most `within`; panics otherwise.
async fn wait_gone(etcd: &Etcd, key: &[u8], within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if etcd.get(key).await.unwrap().is_none() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{} still there after {within:?}",
            String::from_utf8_lossy(key)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next events of `watcher`, until there are `n` of them.
async fn next_events(watcher: &mut Watcher, n: usize) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        events.extend(watcher.next().await.unwrap());
    }
    events
}

#[tokio::test]
async fn put_get_prefix_delete() {
    bounded(30, async {
        let (_server, etcd) = EtcdServer::start().await;
        assert_eq!(etcd.get(b"/t/a").await.unwrap(), None);

        let r1 = etcd.put(b"/t/a", b"1", 0).await.unwrap();
        let r2 = etcd.put(b"/t/b", b"2", 0).await.unwrap();
        etcd.put(b"/u/c", b"3", 0).await.unwrap();
        assert!(r2 > r1);

        let a = etcd.get(b"/t/a").await.unwrap().expect("/t/a");
        assert_eq!(
            a,
            Kv {
                key: b"/t/a".to_vec(),
                value: b"1".to_vec(),
                create_revision: r1,
                mod_revision: r1,
                version: 1,
                lease: 0,
            }
        );
        let r3 = etcd.put(b"/t/a", b"one", 0).await.unwrap();
        let a = etcd.get(b"/t/a").await.unwrap().expect("/t/a");
        assert_eq!((a.value.as_slice(), a.create_revision), (&b"one"[..], r1));
        assert_eq!((a.mod_revision, a.version), (r3, 2));

        let (kvs, rev) = etcd.get_prefix(b"/t/").await.unwrap();
        let keys: Vec<_> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [&b"/t/a"[..], b"/t/b"]);
        assert_eq!(rev, r3);

        assert_eq!(etcd.delete(b"/t/a").await.unwrap(), 1);
        assert_eq!(etcd.delete(b"/t/a").await.unwrap(), 0);
        assert_eq!(etcd.get(b"/t/a").await.unwrap(), None);
        let (kvs, _) = etcd.get_prefix(b"/t/").await.unwrap();
        assert_eq!(kvs.len(), 1);
        // A cloned client shares the channel.
        let other = etcd.clone();
        assert_eq!(other.get(b"/u/c").await.unwrap().unwrap().value, b"3");
    })
    .await;
}

#[tokio::test]
async fn connect_tries_each_endpoint() {
    bounded(30, async {
        let (server, _) = EtcdServer::start().await;
        let [port] = free_ports();
        let dead = format!("http://127.0.0.1:{port}");
        let etcd = Etcd::connect(&[dead.clone(), server.url.clone()])
            .await
            .unwrap();
        etcd.put(b"k", b"v", 0).await.unwrap();
        assert!(matches!(
            Etcd::connect(&[dead]).await,
            Err(EtcdError::Transport(_))
        ));
        assert!(matches!(
            Etcd::connect(&[]).await,
            Err(EtcdError::NoEndpoints)
        ));
    })
    .await;
}

#[tokio::test]
async fn txn_create_if_absent() {
    bounded(30, async {
        let (_server, etcd) = EtcdServer::start().await;
        let create = || {
            etcd.txn(
                vec![Compare::create_revision(&b"/lock"[..], CmpOp::Equal, 0)],
                vec![TxnOp::put(&b"/lock"[..], &b"me"[..], 0)],
                vec![TxnOp::get(&b"/lock"[..]), TxnOp::get(&b"/none"[..])],
            )
        };
        let first = create().await.unwrap();
        assert!(first.succeeded);
        assert!(first.gets.is_empty());
        let second = create().await.unwrap();
        assert!(!second.succeeded);
        assert_eq!(second.revision, first.revision);
        assert_eq!(second.gets.len(), 2);
        let holder = second.gets[0].as_ref().expect("/lock");
        assert_eq!(holder.value, b"me");
        assert_eq!(holder.create_revision, first.revision);
        assert_eq!(second.gets[1], None);
    })
    .await;
}

#[tokio::test]
async fn txn_mod_revision_and_value_compares() {
    bounded(30, async {
        let (_server, etcd) = EtcdServer::start().await;
        let rev = etcd.put(b"/cfg", b"v1", 0).await.unwrap();

        // A stale revision loses.
        let stale = etcd
            .txn(
                vec![Compare::mod_revision(&b"/cfg"[..], CmpOp::Equal, rev - 1)],
                vec![TxnOp::put(&b"/cfg"[..], &b"bad"[..], 0)],
                vec![],
            )
            .await
            .unwrap();
        assert!(!stale.succeeded);
        assert_eq!(etcd.get(b"/cfg").await.unwrap().unwrap().value, b"v1");

        // The current one wins, and a get in the same branch sees the write.
        let won = etcd
            .txn(
                vec![
                    Compare::mod_revision(&b"/cfg"[..], CmpOp::Equal, rev),
                    Compare::value(&b"/cfg"[..], CmpOp::Equal, &b"v1"[..]),
                    Compare::version(&b"/cfg"[..], CmpOp::Less, 2),
                ],
                vec![
                    TxnOp::put(&b"/cfg"[..], &b"v2"[..], 0),
                    TxnOp::get(&b"/cfg"[..]),
                ],
                vec![],
            )
            .await
            .unwrap();
        assert!(won.succeeded);
        assert_eq!(won.revision, rev + 1);
        let kv = won.gets[0].as_ref().unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.mod_revision),
            (&b"v2"[..], rev + 1)
        );

        // Greater / NotEqual, and a delete op.
        let del = etcd
            .txn(
                vec![
                    Compare::mod_revision(&b"/cfg"[..], CmpOp::Greater, rev),
                    Compare::value(&b"/cfg"[..], CmpOp::NotEqual, &b"v1"[..]),
                ],
                vec![TxnOp::delete(&b"/cfg"[..])],
                vec![],
            )
            .await
            .unwrap();
        assert!(del.succeeded);
        assert_eq!(etcd.get(b"/cfg").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn lease_revoke_deletes_its_keys() {
    bounded(30, async {
        let (_server, etcd) = EtcdServer::start().await;
        let lease = etcd.lease_grant(60).await.unwrap();
        assert_ne!(lease, 0);
        etcd.put(b"/brokers/1", b"host:9092", lease).await.unwrap();
        let kv = etcd.get(b"/brokers/1").await.unwrap().expect("key");
        assert_eq!(kv.lease, lease);

        etcd.lease_revoke(lease).await.unwrap();
        assert_eq!(etcd.get(b"/brokers/1").await.unwrap(), None);
        // The lease is gone for good.
        assert!(matches!(
            etcd.put(b"/brokers/1", b"again", lease).await,
            Err(EtcdError::LeaseExpired)
        ));
        assert!(matches!(
            etcd.lease_keepalive(lease).await,
            Err(EtcdError::LeaseExpired)
        ));
    })
    .await;
}

#[tokio::test]
async fn lease_not_kept_alive_expires() {
    bounded(30, async {
        let (_server, etcd) = EtcdServer::start().await;
        let lease = etcd.lease_grant(2).await.unwrap();
        etcd.put(b"/brokers/2", b"x", lease).await.unwrap();
        let took = wait_gone(&etcd, b"/brokers/2", Duration::from_secs(6)).await;
        assert!(
            took >= Duration::from_millis(1500),
            "gone after only {took:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn lease_keepalive_keeps_it() {
    bounded(40, async {
        let (_server, etcd) = EtcdServer::start().await;
        let lease = etcd.lease_grant(2).await.unwrap();
        etcd.put(b"/brokers/3", b"x", lease).await.unwrap();
        let mut keeper = etcd.lease_keepalive(lease).await.unwrap();
        assert_eq!(keeper.id(), lease);

        // 5 s of refreshes, well past the 2 s TTL.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let ttl = keeper.keep_alive().await.unwrap();
            assert!((1..=2).contains(&ttl), "ttl {ttl}");
            assert!(etcd.get(b"/brokers/3").await.unwrap().is_some());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // Once the refreshes stop the lease ends, and a late keep-alive says so.
        wait_gone(&etcd, b"/brokers/3", Duration::from_secs(6)).await;
        assert!(matches!(
            keeper.keep_alive().await,
            Err(EtcdError::LeaseExpired)
        ));
    })
    .await;
}

#[tokio::test]
async fn watch_prefix_sees_puts_and_deletes_in_order() {
    bounded(30, async {
        let (_server, etcd) = EtcdServer::start().await;
        etcd.put(b"/w/old", b"0", 0).await.unwrap();
        let (kvs, rev) = etcd.get_prefix(b"/w/").await.unwrap();
        assert_eq!(kvs.len(), 1);

        // Writes between the read and the watch are not missed: the watch starts at rev + 1.
        let r1 = etcd.put(b"/w/a", b"1", 0).await.unwrap();
        etcd.put(b"/other", b"x", 0).await.unwrap();
        let mut watcher = etcd.watch_prefix(b"/w/", rev + 1).await.unwrap();
        let r2 = etcd.put(b"/w/b", b"2", 0).await.unwrap();
        etcd.delete(b"/w/a").await.unwrap();
        let r4 = etcd.put(b"/w/b", b"22", 0).await.unwrap();

        let events = next_events(&mut watcher, 4).await;
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.kind, e.kv.key.as_slice(), e.kv.value.as_slice()))
            .collect();
        assert_eq!(
            seen,
            [
                (EventKind::Put, &b"/w/a"[..], &b"1"[..]),
                (EventKind::Put, &b"/w/b"[..], &b"2"[..]),
                (EventKind::Delete, &b"/w/a"[..], &b""[..]),
                (EventKind::Put, &b"/w/b"[..], &b"22"[..]),
            ]
        );
        assert_eq!(events[0].kv.mod_revision, r1);
        assert_eq!(events[1].kv.mod_revision, r2);
        assert_eq!(events[3].kv.mod_revision, r4);
        assert_eq!(events[3].kv.version, 2);

        // A watch from now on sees only what follows.
        let mut fresh = etcd.watch_prefix(b"/w/", 0).await.unwrap();
        etcd.put(b"/w/c", b"3", 0).await.unwrap();
        let events = next_events(&mut fresh, 1).await;
        assert_eq!(events[0].kv.key, b"/w/c");
    })
    .await;
}

#[tokio::test]
async fn watch_from_a_compacted_revision_fails() {
    bounded(30, async {
        let (_server, etcd) = EtcdServer::start().await;
        let r1 = etcd.put(b"/c/a", b"1", 0).await.unwrap();
        etcd.put(b"/c/a", b"2", 0).await.unwrap();
        let r3 = etcd.put(b"/c/a", b"3", 0).await.unwrap();
        etcd.compact(r3).await.unwrap();

        let mut watcher = etcd.watch_prefix(b"/c/", r1).await.unwrap();
        match watcher.next().await {
            Err(EtcdError::Compacted { revision }) => assert_eq!(revision, r3),
            other => panic!("expected Compacted, got {other:?}"),
        }
        // From the compaction revision on, the watch works.
        let mut watcher = etcd.watch_prefix(b"/c/", r3).await.unwrap();
        let events = next_events(&mut watcher, 1).await;
        assert_eq!(events[0].kv.value, b"3");
    })
    .await;
}

#[tokio::test]
async fn campaign_waits_for_resign() {
    bounded(40, async {
        let (_server, etcd) = EtcdServer::start().await;
        let election = b"/strom/controller";
        assert_eq!(etcd.leader(election).await.unwrap(), None);

        let lease1 = etcd.lease_grant(30).await.unwrap();
        let lease2 = etcd.lease_grant(30).await.unwrap();
        let first = etcd.campaign(election, lease1, b"broker-1").await.unwrap();
        assert_eq!(first.name, election);
        assert_eq!(first.lease, lease1);
        assert!(first.key.starts_with(election));
        let leader = etcd.leader(election).await.unwrap().expect("a leader");
        assert_eq!(leader.value, b"broker-1");
        assert_eq!(leader.key, first.key);

        let other = etcd.clone();
        let mut second =
            tokio::spawn(async move { other.campaign(election, lease2, b"broker-2").await });
        // Still waiting while the first leads.
        assert!(
            tokio::time::timeout(Duration::from_millis(1500), &mut second)
                .await
                .is_err(),
            "second campaign won while the first leads"
        );
        assert_eq!(
            etcd.leader(election).await.unwrap().unwrap().value,
            b"broker-1"
        );

        etcd.resign(&first).await.unwrap();
        let second = second.await.unwrap().unwrap();
        assert_eq!(second.lease, lease2);
        assert!(second.rev > first.rev);
        let leader = etcd.leader(election).await.unwrap().expect("a leader");
        assert_eq!(leader.value, b"broker-2");

        etcd.resign(&second).await.unwrap();
        assert_eq!(etcd.leader(election).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn campaign_waits_for_lease_revoke() {
    bounded(40, async {
        let (_server, etcd) = EtcdServer::start().await;
        let election = b"/strom/controller";
        let lease1 = etcd.lease_grant(30).await.unwrap();
        let lease2 = etcd.lease_grant(30).await.unwrap();
        etcd.campaign(election, lease1, b"broker-1").await.unwrap();

        let other = etcd.clone();
        let mut second =
            tokio::spawn(async move { other.campaign(election, lease2, b"broker-2").await });
        assert!(
            tokio::time::timeout(Duration::from_millis(1500), &mut second)
                .await
                .is_err()
        );

        // The leader's lease ends (as when its broker dies): the next candidate takes over.
        etcd.lease_revoke(lease1).await.unwrap();
        let second = second.await.unwrap().unwrap();
        assert_eq!(second.lease, lease2);
        assert_eq!(
            etcd.leader(election).await.unwrap().unwrap().value,
            b"broker-2"
        );
    })
    .await;
}
