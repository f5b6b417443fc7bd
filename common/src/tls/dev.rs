//! A development certificate authority (`medins up --tls`, tests): a CA, server certificates
//! for this machine's names and client certificates for partners and services, made with
//! rcgen (ECDSA P-256). Never for production: the CA key sits beside the data it protects.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData as _,
};
use sha2::{Digest, Sha256};

/// Subject of every development CA (the issuer name of what it signs, so a CA re-read from its
/// files signs exactly as the one that was generated).
const CA_NAME: &str = "medins development CA (not for production)";

/// How long a development CA is valid.
const CA_DAYS: i64 = 3650;

/// How long a development leaf certificate is valid.
const LEAF_DAYS: i64 = 365;

/// A certificate is made anew when it expires within this many days.
pub const RENEW_WITHIN_DAYS: i64 = 30;

/// From yesterday (clock skew) to `days` from now.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let date = |at: chrono::DateTime<Utc>| {
        let day = at.date_naive();
        rcgen::date_time_ymd(day.year(), day.month() as u8, day.day() as u8)
    };
    params.not_before = date(Utc::now() - chrono::Duration::days(1));
    params.not_after = date(Utc::now() + chrono::Duration::days(days));
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, CA_DAYS);
    Ok(params)
}

/// A development CA.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A certificate and its key, as PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    cert_der: Vec<u8>,
    spki_sha256: [u8; 32],
}

impl Issued {
    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 of its SubjectPublicKeyInfo (what a partner entry pins).
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.spki_sha256
    }

    /// Writes the certificate and (readable by the owner only) the key. Each file is written
    /// to a temporary name and renamed, so a server watching them never reads half a file.
    pub fn write(&self, cert_file: &Path, key_file: &Path) -> anyhow::Result<()> {
        write_atomically(key_file, self.key_pem.as_bytes(), true)?;
        write_atomically(cert_file, self.cert_pem.as_bytes(), false)
    }
}

impl DevCa {
    /// A new CA.
    pub fn generate() -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let params = ca_params()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self { issuer: Issuer::new(params, key), cert_pem })
    }

    /// The CA of these files, if they hold one made by [`DevCa::generate`] that stays valid
    /// beyond [`RENEW_WITHIN_DAYS`].
    pub fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Self> {
        let cert_pem =
            std::fs::read_to_string(cert_file).with_context(|| format!("reading {}", cert_file.display()))?;
        let key_pem = std::fs::read_to_string(key_file).with_context(|| format!("reading {}", key_file.display()))?;
        let key = KeyPair::from_pem(&key_pem).with_context(|| format!("{} is not a key", key_file.display()))?;
        let certificate = super::read_certificates(cert_file)?.remove(0);
        let read = LeafFacts::of(&certificate)?;
        anyhow::ensure!(read.names.iter().any(|name| name == CA_NAME), "not a medins development CA");
        anyhow::ensure!(read.spki == key.subject_public_key_info(), "the CA key is not the certificate's");
        anyhow::ensure!(read.valid_for_days() > RENEW_WITHIN_DAYS, "the CA expires soon");
        Ok(Self { issuer: Issuer::new(ca_params()?, key), cert_pem })
    }

    /// The CA certificate (what clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA certificate and (owner-only) key.
    pub fn write(&self, cert_file: &Path, key_file: &Path) -> anyhow::Result<()> {
        write_atomically(key_file, self.issuer.key().serialize_pem().as_bytes(), true)?;
        write_atomically(cert_file, self.cert_pem.as_bytes(), false)
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[String]) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(names.to_vec())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate naming `name` (subject common name and DNS name).
    pub fn issue_client(&self, name: &str) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> anyhow::Result<Issued> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, LEAF_DAYS);
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            cert_der: certificate.der().to_vec(),
            spki_sha256: Sha256::digest(key.subject_public_key_info()).into(),
        })
    }
}

/// What `medins up --tls` needs to know about a certificate on disk.
struct LeafFacts {
    names: Vec<String>,
    spki: Vec<u8>,
    not_after_unix: i64,
}

impl LeafFacts {
    fn of(der: &[u8]) -> anyhow::Result<Self> {
        use x509_cert::der::{Decode, Encode};
        let certificate = x509_cert::Certificate::from_der(der).context("not an X.509 certificate")?;
        let tbs = &certificate.tbs_certificate;
        let names = super::ClientCertificate::from_der(der)?.names;
        Ok(Self {
            names,
            spki: tbs.subject_public_key_info.to_der()?,
            not_after_unix: i64::try_from(tbs.validity.not_after.to_unix_duration().as_secs()).unwrap_or(i64::MAX),
        })
    }

    fn valid_for_days(&self) -> i64 {
        (self.not_after_unix - Utc::now().timestamp()) / 86_400
    }
}

/// Whether `cert_file` holds a certificate naming every one of `names` and valid beyond
/// [`RENEW_WITHIN_DAYS`], and `key_file` exists.
pub fn still_usable(cert_file: &Path, key_file: &Path, names: &[String]) -> bool {
    let Ok(certificates) = super::read_certificates(cert_file) else { return false };
    let Ok(facts) = LeafFacts::of(&certificates[0]) else { return false };
    key_file.exists()
        && facts.valid_for_days() > RENEW_WITHIN_DAYS
        && names.iter().all(|name| facts.names.contains(name) || name.parse::<std::net::IpAddr>().is_ok())
}

fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The files of a development TLS folder (`data/tls/`).
#[derive(Debug, Clone)]
pub struct DevTlsDir {
    /// The folder.
    pub root: PathBuf,
}

impl DevTlsDir {
    /// The CA certificate: what clients pass as `-cacert`.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    /// The CA key (owner-only).
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca-key.pem")
    }
    /// The servers' certificate (both services: one host).
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.pem")
    }
    /// Its key.
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server-key.pem")
    }
    /// The client certificate of a service or partner `id`.
    pub fn client_cert(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}-client.pem"))
    }
    /// Its key.
    pub fn client_key(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}-client-key.pem"))
    }

    /// The names the development server certificate covers.
    pub fn server_names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    }

    /// Makes whatever is missing, expiring within [`RENEW_WITHIN_DAYS`] or not made by the
    /// current CA: the CA, the server certificate and a client certificate per id in `clients`.
    /// Returns the files written (empty when everything was reused).
    pub fn ensure(&self, clients: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        let (ca, new_ca) = match DevCa::load(&self.ca_cert(), &self.ca_key()) {
            Ok(ca) => (ca, false),
            Err(_) => {
                let ca = DevCa::generate()?;
                ca.write(&self.ca_cert(), &self.ca_key())?;
                written.push(self.ca_cert());
                (ca, true)
            }
        };
        if new_ca || !still_usable(&self.server_cert(), &self.server_key(), &Self::server_names()) {
            ca.issue_server(&Self::server_names())?.write(&self.server_cert(), &self.server_key())?;
            written.push(self.server_cert());
        }
        for id in clients {
            let (cert, key) = (self.client_cert(id), self.client_key(id));
            if new_ca || !still_usable(&cert, &key, &[(*id).to_owned()]) {
                ca.issue_client(id)?.write(&cert, &key)?;
                written.push(cert);
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_folder_is_made_once_and_reused_while_valid() {
        let dir = tempfile::tempdir().unwrap();
        let tls = DevTlsDir { root: dir.path().join("tls") };
        let written = tls.ensure(&["insurance-svc"]).unwrap();
        assert_eq!(written.len(), 3, "{written:?}");
        assert!(tls.ensure(&["insurance-svc"]).unwrap().is_empty(), "everything reused");
        // A new client id gets its certificate from the same CA.
        assert_eq!(tls.ensure(&["insurance-svc", "identity-svc"]).unwrap(), vec![tls.client_cert("identity-svc")]);
        // A broken server certificate is made anew, the CA kept.
        std::fs::write(tls.server_cert(), "x").unwrap();
        assert_eq!(tls.ensure(&["insurance-svc"]).unwrap(), vec![tls.server_cert()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tls.ca_key()).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the CA key is the owner's only");
        }
        // The server certificate loads as a server configuration.
        super::super::ReloadingServerConfig::load(super::super::ServerTlsOptions::new(
            tls.server_cert(),
            tls.server_key(),
        ))
        .unwrap();
    }
}
