//! Meridian's development PKI: a certificate authority and workload
//! certificates whose identity is a SPIFFE ID in the URI SAN
//! (`spiffe://<trust domain>/ns/<namespace>/sa/<account>`), made with
//! rcgen. `meridianctl certs` writes one for the local mesh; the tests make
//! them to check mutual TLS, expiry and rotation.
//!
//! - [`Authority`]: a CA, new or read back from its PEM files, that issues
//!   [`Issued`] certificates for a [`Workload`].
//! - [`WorkloadFiles`]: where one workload's files lie — its certificate,
//!   key and CA bundle (what the sidecar's `--tls-*` flags name), and the
//!   two SDS files Envoy reads them through (`sds-cert.yaml`,
//!   `sds-ca.yaml`), each file replaced by a rename so a watcher never
//!   reads half of one.
//!
//! A development PKI: keys are written unencrypted, and the CA's key lies
//! beside its certificate. Production meshes get their certificates from
//! their own CA (Istio's, SPIRE, cert-manager) in the same file layout.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// The SDS secret name of a workload's certificate and key.
pub const CERT_SECRET: &str = "meridian-cert";
/// The SDS secret name of the CA bundle peers are checked against.
pub const CA_SECRET: &str = "meridian-ca";

/// Why a certificate could not be made or written.
#[derive(Debug, Error)]
pub enum PkiError {
    /// rcgen refused the parameters or a PEM file.
    #[error("{what}: {source}")]
    Rcgen {
        /// What was being done.
        what: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A SPIFFE ID or name is not valid.
    #[error("{0}")]
    Invalid(String),
}

fn rcgen(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Rcgen { what, source }
}

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Valid from.
    pub not_before: OffsetDateTime,
    /// Valid to.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clock skew) for `days` days.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self { not_before: now - Duration::hours(1), not_after: now + Duration::days(days) }
    }

    /// A period that ended a day ago (for tests of expiry).
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Self { not_before: now - Duration::days(30), not_after: now - Duration::days(1) }
    }
}

/// What a workload certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The subject's common name.
    pub common_name: String,
    /// Its SPIFFE ID (URI SAN), if it has one.
    pub spiffe_id: Option<String>,
    /// DNS names (SANs) servers answer as.
    pub dns_names: Vec<String>,
    /// IP addresses (SANs) servers answer at.
    pub ips: Vec<IpAddr>,
    /// Its validity.
    pub validity: Validity,
}

impl Workload {
    /// A workload with a SPIFFE ID that serves and calls on loopback
    /// (`localhost`, 127.0.0.1), valid for a year.
    pub fn spiffe(spiffe_id: &str) -> Result<Self, PkiError> {
        check_spiffe_id(spiffe_id)?;
        let common_name = spiffe_id.rsplit('/').next().unwrap_or(spiffe_id).to_string();
        Ok(Self {
            common_name,
            spiffe_id: Some(spiffe_id.to_string()),
            dns_names: vec!["localhost".into()],
            ips: vec![IpAddr::from([127, 0, 0, 1])],
            validity: Validity::days(365),
        })
    }

    /// The same workload with another validity.
    pub fn valid(mut self, validity: Validity) -> Self {
        self.validity = validity;
        self
    }

    /// The same workload also answering at `ips`.
    pub fn with_ips(mut self, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        for ip in ips {
            if !self.ips.contains(&ip) {
                self.ips.push(ip);
            }
        }
        self
    }
}

/// Checks that `id` is a SPIFFE ID: `spiffe://<trust domain>/<path>`.
pub fn check_spiffe_id(id: &str) -> Result<(), PkiError> {
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or_else(|| PkiError::Invalid(format!("`{id}` is not a SPIFFE ID (spiffe://<trust domain>/<path>)")))?;
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    let domain_ok = !domain.is_empty()
        && domain.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if !domain_ok || path.is_empty() || path.split('/').any(str::is_empty) {
        return Err(PkiError::Invalid(format!(
            "`{id}` is not a SPIFFE ID: a lower-case trust domain and a non-empty path with no empty segments"
        )));
    }
    Ok(())
}

/// A certificate and its key, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// Its serial as x509-parser prints it (`5a:01:…`), what a peer sees.
    pub serial: String,
}

/// A certificate authority.
#[derive(Debug)]
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Invalid("the system random number generator failed".into()))?;
    // Positive, and no leading zero byte for DER to drop.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn serial_text(serial: &SerialNumber) -> String {
    serial.to_bytes().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl Authority {
    /// A new self-signed CA named `name`.
    pub fn generate(name: &str, validity: Validity) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(rcgen("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationName, "Meridian development PKI");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(rcgen("signing the CA certificate"))?;
        let key_pem = key.serialize_pem();
        Ok(Self { issuer: Issuer::new(params, key), cert_pem: cert.pem(), key_pem })
    }

    /// The CA whose certificate and key these PEM texts hold.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen("reading the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(rcgen("reading the CA certificate"))?;
        Ok(Self { issuer, cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string() })
    }

    /// Reads `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        Self::from_pem(&read(&dir.join("ca.pem"))?, &read(&dir.join("ca.key"))?)
    }

    /// Writes `ca.pem` and `ca.key` (owner-only) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        write_atomically(&dir.join("ca.pem"), self.cert_pem.as_bytes(), false)?;
        write_atomically(&dir.join("ca.key"), self.key_pem.as_bytes(), true)
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `workload`: usable as a TLS server and
    /// client certificate.
    pub fn issue(&self, workload: &Workload) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(rcgen("generating a workload key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, workload.common_name.as_str());
        let mut sans = Vec::new();
        if let Some(id) = &workload.spiffe_id {
            check_spiffe_id(id)?;
            sans.push(SanType::URI(id.as_str().try_into().map_err(rcgen(format!("the SPIFFE ID {id}")))?));
        }
        for name in &workload.dns_names {
            sans.push(SanType::DnsName(name.as_str().try_into().map_err(rcgen(format!("the DNS name {name}")))?));
        }
        sans.extend(workload.ips.iter().copied().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = workload.validity.not_before;
        params.not_after = workload.validity.not_after;
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen(format!("signing the certificate of {}", workload.common_name)))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), serial: serial_text(&serial) })
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io { path: path.display().to_string(), source })
}

/// Writes `bytes` to `path` through a temporary file in the same folder
/// and a rename, so a reader sees the old file or the new one, never half.
pub fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> Result<(), PkiError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| PkiError::Io { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// One workload's files in its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadFiles {
    /// The folder.
    pub dir: PathBuf,
}

impl WorkloadFiles {
    /// The files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The certificate chain (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The private key (PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// The CA bundle peers are checked against (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Envoy's SDS file for the certificate and key ([`CERT_SECRET`]).
    pub fn sds_cert(&self) -> PathBuf {
        self.dir.join("sds-cert.yaml")
    }

    /// Envoy's SDS file for the CA bundle ([`CA_SECRET`]).
    pub fn sds_ca(&self) -> PathBuf {
        self.dir.join("sds-ca.yaml")
    }

    /// Writes the certificate, key and CA bundle, then the SDS files that
    /// point Envoy at them. The key and certificate are replaced one after
    /// the other; a reader that catches them between sees a mismatch and
    /// keeps its old material (the sidecar and Envoy both do).
    pub fn write(&self, issued: &Issued, ca_bundle: &str) -> Result<(), PkiError> {
        write_atomically(&self.ca(), ca_bundle.as_bytes(), false)?;
        write_atomically(&self.key(), issued.key_pem.as_bytes(), true)?;
        write_atomically(&self.cert(), issued.cert_pem.as_bytes(), false)?;
        self.write_sds()
    }

    /// Writes the two SDS files (they name the PEM files, which Envoy
    /// watches through the folder).
    pub fn write_sds(&self) -> Result<(), PkiError> {
        let dir = self.dir.display().to_string();
        let secret = |name: &str, body: (&str, serde_json::Value)| {
            let mut secret = serde_json::json!({
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": name,
            });
            secret[body.0] = body.1;
            serde_json::json!({ "resources": [secret] })
        };
        let cert = secret(
            CERT_SECRET,
            (
                "tls_certificate",
                serde_json::json!({
                    "certificate_chain": {"filename": self.cert().display().to_string()},
                    "private_key": {"filename": self.key().display().to_string()},
                    "watched_directory": {"path": dir},
                }),
            ),
        );
        let ca = secret(
            CA_SECRET,
            (
                "validation_context",
                serde_json::json!({
                    "trusted_ca": {"filename": self.ca().display().to_string()},
                    "watched_directory": {"path": dir},
                }),
            ),
        );
        // JSON is YAML: Envoy reads both by the `.yaml` name.
        for (path, doc) in [(self.sds_cert(), cert), (self.sds_ca(), ca)] {
            let text = serde_json::to_string_pretty(&doc).map_err(|e| PkiError::Invalid(e.to_string()))?;
            write_atomically(&path, text.as_bytes(), false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pem: &str) -> (String, Vec<String>, bool) {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let cert = pem.parse_x509().expect("x509");
        let uris = cert
            .subject_alternative_name()
            .expect("san ext")
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        (cert.raw_serial_as_string(), uris, cert.validity().is_valid())
    }

    #[test]
    fn issued_certificates_carry_the_spiffe_id_and_the_serial_peers_see() {
        let ca = Authority::generate("test CA", Validity::days(1)).expect("ca");
        let issued = ca.issue(&Workload::spiffe("spiffe://td/ns/web/sa/a").expect("workload")).expect("issue");
        let (serial, uris, valid) = parse(&issued.cert_pem);
        assert_eq!(serial, issued.serial);
        assert_eq!(uris, ["spiffe://td/ns/web/sa/a"]);
        assert!(valid);
        let again = ca.issue(&Workload::spiffe("spiffe://td/ns/web/sa/a").expect("workload")).expect("issue");
        assert_ne!(again.serial, issued.serial, "every certificate gets its own serial");
        let expired =
            ca.issue(&Workload::spiffe("spiffe://td/x/y").expect("w").valid(Validity::expired())).expect("issue");
        assert!(!parse(&expired.cert_pem).2);
    }

    #[test]
    fn a_saved_authority_issues_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let ca = Authority::generate("test CA", Validity::days(1)).expect("ca");
        ca.save(dir.path()).expect("save");
        let back = Authority::load(dir.path()).expect("load");
        assert_eq!(back.cert_pem(), ca.cert_pem());
        back.issue(&Workload::spiffe("spiffe://td/ns/a/sa/b").expect("w")).expect("issue");
    }

    #[test]
    fn spiffe_ids_are_checked() {
        for bad in ["web", "spiffe://", "spiffe://TD/x", "spiffe://td", "spiffe://td/", "spiffe://td/a//b"] {
            assert!(check_spiffe_id(bad).is_err(), "{bad}");
        }
        check_spiffe_id("spiffe://cluster.local/ns/web/sa/web-eu").expect("valid");
    }

    #[test]
    fn sds_files_name_the_pem_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let ca = Authority::generate("test CA", Validity::days(1)).expect("ca");
        let files = WorkloadFiles::new(dir.path().join("gw"));
        files
            .write(&ca.issue(&Workload::spiffe("spiffe://td/gw").expect("w")).expect("issue"), ca.cert_pem())
            .expect("write");
        let sds: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(files.sds_cert()).expect("read")).expect("json");
        let tls = &sds["resources"][0]["tls_certificate"];
        assert_eq!(tls["certificate_chain"]["filename"], files.cert().display().to_string());
        assert_eq!(sds["resources"][0]["name"], CERT_SECRET);
        assert_eq!(std::fs::read_to_string(files.ca()).expect("ca"), ca.cert_pem());
    }
}
