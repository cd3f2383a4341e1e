//! The mesh's workload identities and their certificate files.
//!
//! Every proxy and model server of a policy has a SPIFFE ID in the
//! policy's trust domain and namespace
//! (`spiffe://<trustDomain>/ns/<namespace>/sa/meridian-gateway-<region>`,
//! `…/sa/meridian-sidecar-<region>`, `…/sa/meridian-caller-proxy`,
//! `…/sa/meridian-prober`); each
//! caller has the identity the policy gives it. Under a certificate root,
//! each workload's files lie in a folder of its own
//! (`gateway-eu-west/cert.pem`, `key.pem`, `ca.pem`, `sds-cert.yaml`,
//! `sds-ca.yaml`), beside the CA's `ca.pem` and `ca.key`.
//!
//! [`issue`] is `meridianctl certs`: a development PKI for the local mesh.
//! The renderers read only the layout ([`MeshCerts`]), so certificates from
//! any CA written in it serve the same.

use crate::policy::Policy;
use meridian_pki::{Authority, PkiError, Validity, Workload as PkiWorkload, WorkloadFiles};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// A workload of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// The caller-side Envoy.
    CallerProxy,
    /// A region's gateway Envoy.
    Gateway(String),
    /// A region's model servers (one certificate for the region's sidecars).
    Sidecar(String),
    /// A caller of the policy (an application that calls models).
    Caller(String),
    /// `meridian-prober`: it sends reference sets to every region's gateway
    /// and so may call every model.
    Prober,
}

impl Workload {
    /// Its folder under the certificate root.
    pub fn dir_name(&self) -> String {
        match self {
            Workload::CallerProxy => "caller-proxy".into(),
            Workload::Gateway(r) => format!("gateway-{r}"),
            Workload::Sidecar(r) => format!("sidecar-{r}"),
            Workload::Caller(c) => format!("caller-{c}"),
            Workload::Prober => "prober".into(),
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.dir_name())
    }
}

/// The SPIFFE ID of `workload` in `policy`'s mesh.
pub fn identity(policy: &Policy, workload: &Workload) -> String {
    let spec = policy.spec();
    let account = |name: &str| format!("spiffe://{}/ns/{}/sa/{name}", spec.istio.trust_domain, spec.metadata.namespace);
    match workload {
        Workload::CallerProxy => account("meridian-caller-proxy"),
        Workload::Gateway(r) => account(&format!("meridian-gateway-{r}")),
        Workload::Sidecar(r) => account(&format!("meridian-sidecar-{r}")),
        Workload::Caller(c) => spec.callers.get(c).and_then(|c| c.identity.clone()).unwrap_or_else(|| account(c)),
        Workload::Prober => account("meridian-prober"),
    }
}

/// Identities of the mesh's own proxies, which forward the identity they
/// verified (`x-forwarded-client-cert`) and whose forwarding the model
/// servers believe (`--trusted-proxy`): the region gateways and the
/// caller-side proxy. A call from an application behind the caller-side
/// proxy, which verified no certificate of it, is the proxy's own.
pub fn forwarding_proxies(policy: &Policy) -> Vec<String> {
    let spec = policy.spec();
    let base = format!("spiffe://{}/ns/{}/sa/", spec.istio.trust_domain, spec.metadata.namespace);
    vec![format!("{base}meridian-gateway-*"), format!("{base}meridian-caller-proxy")]
}

/// Who may run inference on `model` at the model servers: every caller the
/// policy allows it (by its identity), the caller-side proxy, which
/// calls on behalf of the callers it fronts, and the prober, which checks
/// every model's answers against its reference set.
pub fn allowed_identities(policy: &Policy, model: &str) -> Vec<String> {
    let spec = policy.spec();
    let mut ids: Vec<String> = spec
        .callers
        .iter()
        .filter(|(_, c)| c.models.as_ref().is_none_or(|ms| ms.iter().any(|m| m == model)))
        .map(|(name, _)| identity(policy, &Workload::Caller(name.clone())))
        .collect();
    ids.push(identity(policy, &Workload::CallerProxy));
    ids.push(identity(policy, &Workload::Prober));
    ids.sort();
    ids.dedup();
    ids
}

/// Every workload of `policy`: the caller proxy, the prober, each region's
/// gateway and model servers, each caller.
pub fn workloads(policy: &Policy) -> Vec<Workload> {
    let spec = policy.spec();
    let mut all = vec![Workload::CallerProxy, Workload::Prober];
    for r in &spec.regions {
        all.push(Workload::Gateway(r.name.clone()));
        all.push(Workload::Sidecar(r.name.clone()));
    }
    all.extend(spec.callers.keys().map(|c| Workload::Caller(c.clone())));
    all
}

/// The addresses a workload answers at (IP SANs beside 127.0.0.1).
fn addresses(policy: &Policy, workload: &Workload) -> Vec<IpAddr> {
    let spec = policy.spec();
    let ip = |text: &str| text.parse::<SocketAddr>().ok().map(|a| a.ip());
    match workload {
        Workload::CallerProxy => ip(&spec.caller_proxy.listen).into_iter().collect(),
        Workload::Gateway(r) => {
            spec.region(r).and_then(|r| r.gateway.as_ref()).and_then(|g| ip(&g.address)).into_iter().collect()
        }
        Workload::Sidecar(r) => {
            spec.region(r).map(|r| r.endpoints.iter().filter_map(|e| ip(&e.address)).collect()).unwrap_or_default()
        }
        Workload::Caller(_) | Workload::Prober => Vec::new(),
    }
}

/// A certificate root in the layout above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshCerts {
    /// The root folder.
    pub root: PathBuf,
}

impl MeshCerts {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// A workload's files.
    pub fn files(&self, workload: &Workload) -> WorkloadFiles {
        WorkloadFiles::new(self.root.join(workload.dir_name()))
    }

    /// Whether every workload of `policy` has its files here; `Err` names
    /// the first missing file and how to make it.
    pub fn check(&self, policy: &Policy) -> Result<(), String> {
        for w in workloads(policy) {
            let files = self.files(&w);
            for path in [files.cert(), files.key(), files.ca(), files.sds_cert(), files.sds_ca()] {
                if !path.is_file() {
                    return Err(format!(
                        "{}: missing (the certificates of {w}); run `meridianctl certs -f <policy> --out {}`",
                        path.display(),
                        self.root.display()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFor {
    /// The workload.
    pub workload: Workload,
    /// Its SPIFFE ID.
    pub identity: String,
    /// The certificate's serial.
    pub serial: String,
    /// Its folder.
    pub dir: PathBuf,
}

/// Issues a certificate for every workload of `policy` under `root`, from
/// the CA there (`ca.pem`, `ca.key`), or a new one when there is none or
/// `new_ca` is set. Re-running rotates every workload's certificate;
/// proxies and sidecars pick the new files up while they run.
pub fn issue(policy: &Policy, root: &Path, days: i64, new_ca: bool) -> Result<Vec<IssuedFor>, PkiError> {
    let has_ca = root.join("ca.pem").is_file() && root.join("ca.key").is_file();
    // A new CA is trusted beside the old one until every peer has moved.
    let mut bundle = String::new();
    let ca = if has_ca && !new_ca {
        Authority::load(root)?
    } else {
        if has_ca {
            bundle = std::fs::read_to_string(root.join("ca.pem"))
                .map_err(|source| PkiError::Io { path: root.join("ca.pem").display().to_string(), source })?;
        }
        let name = format!("{} mesh CA ({})", policy.spec().metadata.name, policy.spec().istio.trust_domain);
        let ca = Authority::generate(&name, Validity::days(days.max(1) * 2))?;
        ca.save(root)?;
        ca
    };
    let bundle = format!("{}{bundle}", ca.cert_pem());
    let certs = MeshCerts::new(root);
    let mut issued = Vec::new();
    for workload in workloads(policy) {
        let id = identity(policy, &workload);
        let spec = PkiWorkload::spiffe(&id)?.with_ips(addresses(policy, &workload)).valid(Validity::days(days));
        let cert = ca.issue(&spec)?;
        let files = certs.files(&workload);
        files.write(&cert, &bundle)?;
        issued.push(IssuedFor { workload, identity: id, serial: cert.serial, dir: files.dir });
    }
    Ok(issued)
}
