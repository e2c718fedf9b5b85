use super::*;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// Certificates from `scripts/test-certs` (CA, server, a client `alice`) in a fresh directory.
fn certs_in(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-certs");
    let ok = std::process::Command::new(script)
        .arg(dir)
        .arg("alice")
        .status()
        .expect("scripts/test-certs runs (needs openssl)")
        .success();
    assert!(ok, "scripts/test-certs failed");
}

fn files(dir: &Path, mutual: bool) -> TlsFiles {
    TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: mutual.then(|| dir.join("ca.pem")),
    }
}

/// A client trusting `dir`'s CA, presenting `alice`'s certificate when `with_cert`.
fn connector(dir: &Path, with_cert: bool) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in certs(&dir.join("ca.pem"), "ca").unwrap() {
        roots.add(c).unwrap();
    }
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if with_cert {
        let chain = certs(&dir.join("client-alice.pem"), "client").unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("client-alice.key")).unwrap();
        b.with_client_auth_cert(chain, key).unwrap()
    } else {
        b.with_no_client_auth()
    };
    TlsConnector::from(Arc::new(config))
}

/// Runs a handshake between `tls` and `client` over an in-memory pipe and echoes one
/// message; the server's result is the CN it saw.
async fn handshake(
    tls: &Tls,
    client: TlsConnector,
) -> (io::Result<Option<String>>, io::Result<()>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = async {
        let mut s = tls.accept(a, Duration::from_secs(5)).await?;
        let cn = peer_common_name(&s);
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        s.write_all(&buf).await?;
        s.flush().await?;
        Ok(cn)
    };
    let client = async {
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = client.connect(name, b).await?;
        c.write_all(b"ping").await?;
        c.flush().await?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(())
    };
    tokio::join!(server, client)
}

#[tokio::test]
async fn serves_tls_and_reads_the_client_cn_with_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    certs_in(dir.path());
    let plain = Tls::load(files(dir.path(), false), vec![]).unwrap();
    assert!(!plain.mutual());
    let (s, c) = handshake(&plain, connector(dir.path(), false)).await;
    assert_eq!(s.unwrap(), None, "no client certificate asked for");
    c.unwrap();

    let mutual = Tls::load(files(dir.path(), true), vec![]).unwrap();
    let (s, c) = handshake(&mutual, connector(dir.path(), true)).await;
    assert_eq!(s.unwrap().as_deref(), Some("alice"));
    c.unwrap();

    let (s, _) = handshake(&mutual, connector(dir.path(), false)).await;
    assert!(s.is_err(), "a client without a certificate is refused");
}

#[test]
fn bad_files_are_named_and_a_failed_reload_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    certs_in(dir.path());
    let mut f = files(dir.path(), false);
    f.key = dir.path().join("missing.key");
    let e = Tls::load(f, vec![]).unwrap_err().to_string();
    assert!(e.contains("missing.key"), "{e}");

    let mut f = files(dir.path(), false);
    f.key = dir.path().join("client-alice.key");
    let e = Tls::load(f, vec![]).unwrap_err().to_string();
    assert!(
        e.contains("server.pem") && e.contains("client-alice.key"),
        "{e}"
    );

    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let mut f = files(dir.path(), false);
    f.cert = dir.path().join("empty.pem");
    let e = Tls::load(f, vec![]).unwrap_err().to_string();
    assert!(e.contains("no PEM certificate"), "{e}");

    let tls = Tls::load(files(dir.path(), false), vec![]).unwrap();
    let before = tls.config.read().clone();
    std::fs::write(dir.path().join("server.key"), "garbage").unwrap();
    assert!(tls.reload().is_err());
    assert!(Arc::ptr_eq(&before, &tls.config.read()), "old config kept");
}

#[tokio::test]
async fn reload_serves_new_certificates_to_new_handshakes() {
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();
    certs_in(old.path());
    certs_in(new.path());
    let live = tempfile::tempdir().unwrap();
    for f in ["server.pem", "server.key"] {
        std::fs::copy(old.path().join(f), live.path().join(f)).unwrap();
    }
    let tls = Tls::load(files(live.path(), false), vec![]).unwrap();
    handshake(&tls, connector(old.path(), false))
        .await
        .1
        .unwrap();
    for f in ["server.pem", "server.key"] {
        std::fs::copy(new.path().join(f), live.path().join(f)).unwrap();
    }
    tls.reload().unwrap();
    handshake(&tls, connector(new.path(), false))
        .await
        .1
        .unwrap();
    let (_, c) = handshake(&tls, connector(old.path(), false)).await;
    assert!(c.is_err(), "the old CA no longer verifies the server");
}

#[test]
fn common_name_of_garbage_is_none() {
    assert_eq!(common_name(b"not a certificate"), None);
    assert_eq!(common_name(&[]), None);
}
