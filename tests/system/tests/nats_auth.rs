//! NATS authentication and TLS, end to end against a real nats-server configured for each.
//!
//! Every mode goes through the same path a stage takes: the variables are read by
//! `RuntimeConfig::load` (NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY, NATS_CREDS,
//! NATS_TLS_CA, NATS_TLS_CERT/NATS_TLS_KEY), `vexxy_runtime::connect::connect` opens the
//! connection, and a JetStream round trip (create a stream, publish with PubAck, read it back)
//! proves the connection is usable, not merely open. The credentials are generated at test time:
//! nkeys with the `nkeys` crate, the operator/account/user JWTs of decentralized auth signed by
//! hand (base64url header and claims, ed25519 signature by the issuer's nkey), and a CA, server
//! and client certificates with `rcgen`.
//!
//! Wrong credentials must give a clear error naming the variables to fix, quickly — not a
//! client that retries in the background forever while the stage never becomes ready. One
//! stage binary is also started with a wrong password, and must exit with that message.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vexxy_events::Stage;
use vexxy_harness::{NatsServer, stack};
use vexxy_runtime::config::{Env, RuntimeConfig};
use vexxy_runtime::connect;

/// How long a connect (good or bad) may take before the test calls it a hang.
const CONNECT_BOUND: Duration = Duration::from_secs(15);

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A nats-server with JetStream and the given configuration file content.
fn server_with_config(dir: &Path, config: &str) -> Result<NatsServer> {
    let path = write(dir, "nats.conf", config)?;
    NatsServer::start_with_args(&["-c", path.to_str().context("utf-8 path")?])
}

fn runtime_config(url: &str, vars: &[(&str, String)]) -> Result<RuntimeConfig> {
    let mut pairs: Vec<(String, String)> = vec![
        ("NATS_URL".into(), url.into()),
        (
            "VEXXY_STORE".into(),
            "file:///tmp/vexxy-nats-auth-unused".into(),
        ),
    ];
    pairs.extend(vars.iter().map(|(k, v)| (k.to_string(), v.clone())));
    RuntimeConfig::load(&Env::from_pairs(&pairs)).map_err(|e| anyhow::anyhow!("config: {e}"))
}

/// Connects the way a stage does and proves JetStream works over the connection.
async fn connect_and_round_trip(config: &RuntimeConfig, stream: &str) -> Result<()> {
    let client = tokio::time::timeout(
        CONNECT_BOUND,
        connect::connect(&config.nats, Stage::InstallCheck),
    )
    .await
    .context("connect did not return within 15 s")?
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let js = async_nats::jetstream::new(client);
    let round_trip = async {
        let created = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: stream.to_string(),
                subjects: vec![format!("{}.>", stream.to_lowercase())],
                storage: async_nats::jetstream::stream::StorageType::Memory,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("create stream: {e}"))?;
        let ack = js
            .publish(format!("{}.hello", stream.to_lowercase()), "secured".into())
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?
            .await
            .map_err(|e| anyhow::anyhow!("pub ack: {e}"))?;
        let message = created
            .get_raw_message(ack.sequence)
            .await
            .map_err(|e| anyhow::anyhow!("get: {e}"))?;
        ensure!(
            &message.payload[..] == b"secured",
            "read back {:?}",
            message.payload
        );
        Ok(())
    };
    tokio::time::timeout(CONNECT_BOUND, round_trip)
        .await
        .context("the JetStream round trip did not finish within 15 s (connection not usable)")?
}

/// A connect that must fail fast with an error naming each of `names`.
async fn expect_clear_failure(config: &RuntimeConfig, names: &[&str]) -> Result<String> {
    let started = Instant::now();
    let result = tokio::time::timeout(
        CONNECT_BOUND,
        connect::connect(&config.nats, Stage::InstallCheck),
    )
    .await;
    let error = match result {
        Err(_) => bail!("connect hung for {CONNECT_BOUND:?} instead of failing"),
        Ok(Ok(client)) => {
            // A client that "connected" must at least be unusable; either way this is the hang
            // the user would see: the stage never becomes ready and says nothing actionable.
            let state = client.connection_state();
            bail!(
                "connect returned a client (state {state:?}) instead of an error naming {names:?}"
            )
        }
        Ok(Err(error)) => error.to_string(),
    };
    for name in names {
        ensure!(
            error.contains(name),
            "the error does not name {name}: {error}"
        );
    }
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "failing took {:?}",
        started.elapsed()
    );
    Ok(error)
}

#[tokio::test]
async fn user_and_password() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let nats = server_with_config(
        dir.path(),
        r#"authorization { user: "vexxy", password: "s3cret-pass-word" }"#,
    )?;
    let good = runtime_config(
        &nats.url(),
        &[
            ("NATS_USER", "vexxy".into()),
            ("NATS_PASSWORD", "s3cret-pass-word".into()),
        ],
    )?;
    connect_and_round_trip(&good, "AUTH_USER").await?;
    let wrong = runtime_config(
        &nats.url(),
        &[
            ("NATS_USER", "vexxy".into()),
            ("NATS_PASSWORD", "wrong".into()),
        ],
    )?;
    let error = expect_clear_failure(&wrong, &["NATS_USER", "NATS_PASSWORD"]).await?;
    ensure!(
        !error.contains("wrong"),
        "the error echoes the password: {error}"
    );
    let none = runtime_config(&nats.url(), &[])?;
    expect_clear_failure(
        &none,
        &["NATS_USER", "NATS_TOKEN", "NATS_NKEY", "NATS_CREDS"],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let nats = server_with_config(dir.path(), r#"authorization { token: "tok-3f9a2c" }"#)?;
    let good = runtime_config(&nats.url(), &[("NATS_TOKEN", "tok-3f9a2c".into())])?;
    connect_and_round_trip(&good, "AUTH_TOKEN").await?;
    let wrong = runtime_config(&nats.url(), &[("NATS_TOKEN", "tok-guess".into())])?;
    let error = expect_clear_failure(&wrong, &["NATS_TOKEN"]).await?;
    ensure!(
        !error.contains("tok-guess"),
        "the error echoes the token: {error}"
    );
    Ok(())
}

#[tokio::test]
async fn nkey() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let user = nkeys::KeyPair::new_user();
    let nats = server_with_config(
        dir.path(),
        &format!(
            r#"authorization {{ users = [ {{ nkey: "{}" }} ] }}"#,
            user.public_key()
        ),
    )?;
    let good = runtime_config(&nats.url(), &[("NATS_NKEY", user.seed()?)])?;
    connect_and_round_trip(&good, "AUTH_NKEY").await?;
    let stranger = nkeys::KeyPair::new_user();
    let wrong = runtime_config(&nats.url(), &[("NATS_NKEY", stranger.seed()?)])?;
    let error = expect_clear_failure(&wrong, &["NATS_NKEY"]).await?;
    ensure!(
        !error.contains(&stranger.seed()?),
        "the error echoes the seed: {error}"
    );
    Ok(())
}

/// Decentralized auth: an operator signs an account, the account signs a user; the server
/// trusts the operator and resolves accounts from memory; the stage gets a `.creds` file.
#[tokio::test]
async fn creds_file_with_operator_account_and_user_jwts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let operator_jwt = sign_jwt(
        &operator,
        &operator.public_key(),
        "vexxy-test-operator",
        json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
    )?;
    let system_jwt = sign_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        account_claims(false),
    )?;
    let account_jwt = sign_jwt(
        &operator,
        &account.public_key(),
        "VEXXY",
        account_claims(true),
    )?;
    let operator_file = write(dir.path(), "operator.jwt", &operator_jwt)?;
    let config = format!(
        "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{}\"\n  {}: \"{}\"\n}}\n",
        operator_file.display(),
        system.public_key(),
        system.public_key(),
        system_jwt,
        account.public_key(),
        account_jwt
    );
    let nats = server_with_config(dir.path(), &config)?;

    let user = nkeys::KeyPair::new_user();
    let user_jwt = sign_jwt(&account, &user.public_key(), "vexxy-stage", user_claims())?;
    let creds = write(
        dir.path(),
        "stage.creds",
        &creds_file(&user_jwt, &user.seed()?),
    )?;
    let good = runtime_config(&nats.url(), &[("NATS_CREDS", creds.display().to_string())])?;
    connect_and_round_trip(&good, "AUTH_CREDS").await?;

    // A user signed by an account the operator never signed.
    let rogue_account = nkeys::KeyPair::new_account();
    let rogue = nkeys::KeyPair::new_user();
    let rogue_jwt = sign_jwt(&rogue_account, &rogue.public_key(), "rogue", user_claims())?;
    let rogue_creds = write(
        dir.path(),
        "rogue.creds",
        &creds_file(&rogue_jwt, &rogue.seed()?),
    )?;
    let wrong = runtime_config(
        &nats.url(),
        &[("NATS_CREDS", rogue_creds.display().to_string())],
    )?;
    expect_clear_failure(&wrong, &["NATS_CREDS"]).await?;
    Ok(())
}

fn account_claims(jetstream: bool) -> Value {
    let storage = if jetstream { -1 } else { 0 };
    json!({
        "type": "account",
        "version": 2,
        "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": storage, "disk_storage": storage, "streams": storage, "consumer": storage
        },
        "default_permissions": {"pub": {}, "sub": {}}
    })
}

fn user_claims() -> Value {
    json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
}

/// A NATS JWT (v2): base64url(header) "." base64url(claims) "." base64url(ed25519 signature of
/// the first two parts by the issuer's nkey). `jti` identifies the claims (a hash of them).
fn sign_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> Result<String> {
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut claims = json!({
        "jti": "",
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let digest = Sha256::digest(serde_json::to_vec(&claims)?);
    claims["jti"] = json!(BASE32_NOPAD.encode(&digest));
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(&serde_json::to_vec(&claims)?);
    let signing_input = format!("{header}.{body}");
    let signature = issuer
        .sign(signing_input.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    Ok(format!(
        "{signing_input}.{}",
        BASE64URL_NOPAD.encode(&signature)
    ))
}

fn creds_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed nothing here (a client trusting it must not trust the server).
    other_ca: PathBuf,
}

fn make_pki(dir: &Path) -> Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "vexxy test CA");
    let ca = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(vec!["localhost".to_string()])?;
    server_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let server = server_params.signed_by(&server_key, &ca, &ca_key)?;

    let client_key = KeyPair::generate()?;
    let mut client_params = CertificateParams::new(vec!["vexxy-stage".to_string()])?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, "vexxy-stage");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca, &ca_key)?;

    let other_key = KeyPair::generate()?;
    let mut other_params = CertificateParams::new(Vec::<String>::new())?;
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = other_params.self_signed(&other_key)?;

    Ok(Pki {
        ca: write(dir, "ca.pem", &ca.pem())?,
        server_cert: write(dir, "server.pem", &server.pem())?,
        server_key: write(dir, "server-key.pem", &server_key.serialize_pem())?,
        client_cert: write(dir, "client.pem", &client.pem())?,
        client_key: write(dir, "client-key.pem", &client_key.serialize_pem())?,
        other_ca: write(dir, "other-ca.pem", &other.pem())?,
    })
}

fn tls_block(pki: &Pki, verify_clients: bool) -> String {
    format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify_clients}\n  timeout: 2\n}}\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    )
}

fn path_of(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn tls_with_a_private_ca() -> Result<()> {
    vexxy_runtime::store::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let pki = make_pki(dir.path())?;
    let nats = server_with_config(dir.path(), &tls_block(&pki, false))?;
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let good = runtime_config(&url, &[("NATS_TLS_CA", path_of(&pki.ca))])?;
    connect_and_round_trip(&good, "AUTH_TLS").await?;
    let untrusted = runtime_config(&url, &[("NATS_TLS_CA", path_of(&pki.other_ca))])?;
    expect_clear_failure(&untrusted, &["NATS_TLS_CA"]).await?;
    Ok(())
}

#[tokio::test]
async fn mutual_tls_with_user_and_password() -> Result<()> {
    vexxy_runtime::store::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let pki = make_pki(dir.path())?;
    let config = format!(
        "{}authorization {{ user: \"vexxy\", password: \"over-tls\" }}\n",
        tls_block(&pki, true)
    );
    let nats = server_with_config(dir.path(), &config)?;
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let auth = [
        ("NATS_USER", "vexxy".to_string()),
        ("NATS_PASSWORD", "over-tls".to_string()),
    ];
    let mut with_cert = auth.to_vec();
    with_cert.extend([
        ("NATS_TLS_CA", path_of(&pki.ca)),
        ("NATS_TLS_CERT", path_of(&pki.client_cert)),
        ("NATS_TLS_KEY", path_of(&pki.client_key)),
    ]);
    connect_and_round_trip(&runtime_config(&url, &with_cert)?, "AUTH_MTLS").await?;

    let mut without_cert = auth.to_vec();
    without_cert.push(("NATS_TLS_CA", path_of(&pki.ca)));
    expect_clear_failure(
        &runtime_config(&url, &without_cert)?,
        &["NATS_TLS_CERT", "NATS_TLS_KEY"],
    )
    .await?;
    Ok(())
}

/// A kubeconfig naming a cluster nobody listens on: enough for the stage to build its client
/// (it connects to NATS before it ever calls the cluster).
fn unreachable_kubeconfig(dir: &Path) -> Result<PathBuf> {
    write(
        dir,
        "kubeconfig",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: none\n  cluster: {server: \"http://127.0.0.1:1\"}\n\
         users:\n- name: none\n  user: {}\ncontexts:\n- name: none\n  context: {cluster: none, user: none}\n\
         current-context: none\n",
    )
}

/// A stage process given a wrong password stops at start with a message naming the variables
/// (exit code 2, like any other configuration error), instead of running unready forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_with_a_wrong_password_exits_naming_the_variables() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let nats = server_with_config(
        dir.path(),
        r#"authorization { user: "vexxy", password: "right-one" }"#,
    )?;
    tokio::task::block_in_place(|| stack::build_binaries(&vexxy_harness::workspace_root()))?;
    let binary = stack::binary("vexxy-install-check")?;
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NATS_URL", nats.url())
        .env("NATS_USER", "vexxy")
        .env("NATS_PASSWORD", "not-the-right-one")
        .env(
            "VEXXY_STORE",
            format!("file://{}", dir.path().join("store").display()),
        )
        .env("VEXXY_HEALTH_ADDR", "127.0.0.1:0")
        .env(
            "KUBECONFIG",
            unreachable_kubeconfig(dir.path())?.display().to_string(),
        )
        .env("K8S_IN_CLUSTER", "false");
    let mut process = vexxy_harness::ChildProcess::spawn(
        "install-check",
        command,
        &dir.path().join("stage.log"),
    )?;
    let status = tokio::task::block_in_place(|| process.wait_timeout(Duration::from_secs(20)))?;
    let logs = process.logs();
    let Some(status) = status else {
        bail!(
            "the stage is still running 20 s after start with a wrong password; its log:\n{logs}"
        );
    };
    ensure!(
        status.code() == Some(2),
        "exit status {status}, expected 2 (configuration error); log:\n{logs}"
    );
    ensure!(
        logs.contains("NATS_USER") && logs.contains("NATS_PASSWORD"),
        "the log does not name NATS_USER and NATS_PASSWORD:\n{logs}"
    );
    ensure!(
        !logs.contains("not-the-right-one"),
        "the log contains the password:\n{logs}"
    );
    Ok(())
}
