//! PostgreSQL over TLS (README "PostgreSQL over TLS"): medins hands the database URL to libpq,
//! so `sslmode=verify-full&sslrootcert=CA.pem` in it encrypts the connection and checks the
//! server's certificate and name. These tests run against the server of
//! `MEDINS_TEST_POSTGRES_URL` when that URL asks for `sslmode=verify-full` (as the throwaway
//! cluster of `.ci/pg.sh` does: TLS only, `hostssl` lines only in pg_hba.conf):
//!
//! source .ci/pg.sh && pg_start && cargo test -p medins-common --test postgres_tls; pg_stop

use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, sql_types};
use medins_common::db::{DatabaseUrl, Db, DbConnection, DbError, PoolOptions};

/// The TLS test server's URL, or None (with a note) when there is none.
fn tls_url() -> Option<String> {
    let url = std::env::var("MEDINS_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty());
    match url {
        None => eprintln!("skipped: MEDINS_TEST_POSTGRES_URL is not set"),
        Some(url) if query_value(&url, "sslmode") != Some("verify-full") => {
            eprintln!("skipped: MEDINS_TEST_POSTGRES_URL does not ask for sslmode=verify-full (.ci/pg.sh does)")
        }
        Some(url) => return Some(url),
    }
    None
}

fn query_value<'a>(url: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

/// `url` with each of `params` set: an existing value of the same key is dropped.
fn with_params(url: &str, params: &[(&str, &str)]) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| params.iter().all(|(key, _)| pair.split_once('=').map_or(*pair, |(k, _)| k) != *key))
        .map(str::to_owned)
        .collect();
    pairs.extend(params.iter().map(|(key, value)| format!("{key}={value}")));
    format!("{base}?{}", pairs.join("&"))
}

/// The host of a `postgres://user@host:port/db?...` URL.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").expect("scheme").1;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').expect("closing ]").0.to_owned(),
        None => host_port.split(':').next().unwrap_or(host_port).to_owned(),
    }
}

/// Why libpq or the server refused a connection (the error's text).
fn refusal(url: &str) -> String {
    match PgConnection::establish(url) {
        Ok(_) => panic!("the connection was accepted"),
        Err(error) => error.to_string(),
    }
}

#[derive(QueryableByName)]
struct Session {
    #[diesel(sql_type = sql_types::Bool)]
    ssl: bool,
    #[diesel(sql_type = sql_types::Text)]
    version: String,
    #[diesel(sql_type = sql_types::Text)]
    database: String,
}

/// This session's TLS state as the server sees it.
fn session(conn: &mut DbConnection) -> Result<Session, DbError> {
    let DbConnection::Postgres(conn) = conn else { panic!("not a PostgreSQL connection") };
    Ok(diesel::sql_query(
        "SELECT ssl, coalesce(version, '') AS version, current_database()::text AS database \
         FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .get_result(conn)?)
}

#[tokio::test]
async fn a_pool_on_a_verify_full_url_works_and_the_server_sees_tls() {
    let Some(admin) = tls_url() else { return };
    // A database of its own, named through DatabaseUrl::with_database as the e2e suite does,
    // so the query (sslmode, sslrootcert) is known to survive the change of database.
    let name = format!("medins_tls_{}", uuid::Uuid::now_v7().simple());
    let mut conn = PgConnection::establish(&admin).expect("connect with verify-full");
    diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn).unwrap();
    let url = DatabaseUrl::parse(&admin).unwrap().with_database(&name).unwrap().expose();

    let db = Db::connect(&url, &PoolOptions::default()).unwrap();
    let seen = db.run(session).await.expect("a pooled connection over verify-full");
    assert!(seen.ssl, "the server sees a TLS session");
    assert!(["TLSv1.2", "TLSv1.3"].contains(&seen.version.as_str()), "TLS version {}", seen.version);
    assert_eq!(seen.database, name);
    drop(db);
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut conn).unwrap();
}

#[tokio::test]
async fn a_plaintext_connection_is_refused_by_the_server() {
    let Some(admin) = tls_url() else { return };
    let plaintext = with_params(&admin, &[("sslmode", "disable")]);
    let refused = refusal(&plaintext);
    // The server's answer (pg_hba.conf has hostssl lines only), not a client-side check.
    assert!(refused.contains("no pg_hba.conf entry") && refused.contains("no encryption"), "{refused}");

    // medins's pool reports it as an unreachable database: health NOT_SERVING, calls UNAVAILABLE.
    let options = PoolOptions { connection_timeout: std::time::Duration::from_millis(500), ..PoolOptions::default() };
    let db = Db::connect(&plaintext, &options).unwrap();
    let outcome = db.run(session).await;
    assert!(matches!(outcome, Err(DbError::Unavailable(_))), "plaintext pool: {:?}", outcome.map(|s| s.ssl));
}

#[test]
fn a_server_certificate_not_signed_by_the_given_ca_is_refused() {
    let Some(admin) = tls_url() else { return };
    // A CA of our own, valid and well formed, that did not sign the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=not the server's CA", "-addext", "basicConstraints=critical,CA:TRUE"])
        .arg("-keyout")
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("run openssl (Debian: apt-get install openssl)");
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));

    let refused =
        refusal(&with_params(&admin, &[("sslmode", "verify-full"), ("sslrootcert", other_ca.to_str().unwrap())]));
    assert!(refused.contains("certificate verify failed"), "{refused}");
    // The same URL with the right CA connects: the refusal was the CA's.
    PgConnection::establish(&admin).expect("the right CA connects");
}

#[test]
fn verify_full_refuses_a_certificate_for_another_host_name() {
    let Some(admin) = tls_url() else { return };
    // Connect to the same address, but check the certificate against a name it was not made
    // for (libpq: `hostaddr` is dialled, `host` is what the certificate must name).
    let mut addresses: Vec<std::net::IpAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(url_host(&admin).as_str(), 0))
            .expect("resolve the test server's host")
            .map(|address| address.ip())
            .collect();
    // IPv4 first: `.ci/pg.sh` listens on 127.0.0.1 only, and `localhost` may name ::1 first.
    addresses.sort_by_key(|ip| !ip.is_ipv4());
    let address = addresses.first().expect("an address").to_string();
    let refused = refusal(&with_params(&admin, &[("host", "not-the-server.invalid"), ("hostaddr", &address)]));
    assert!(refused.contains("does not match host name"), "{refused}");
    // sslmode=verify-ca checks the CA only: the same connection then goes through, so the
    // refusal above was the name check of verify-full.
    let verify_ca =
        with_params(&admin, &[("host", "not-the-server.invalid"), ("hostaddr", &address), ("sslmode", "verify-ca")]);
    PgConnection::establish(&verify_ca).expect("verify-ca does not check the name");
}
