//! The server's state: the policy in force and every proxy's resources
//! (its [`Snapshot`]), the last policy refused, and what each connected
//! proxy acknowledged. Guarded by one lock held only briefly, never across
//! an await; a `watch` channel tells the streams a new snapshot is in force.

use super::snapshot::Snapshot;
use crate::render::envoy::Role;
use meridian_proto::xds::meridian::xds::v1 as status;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A refused policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) at_unix: u64,
    pub(crate) errors: Vec<String>,
}

/// What one type of one connected proxy stands at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TypeState {
    /// The proxy asked for this type.
    pub(crate) subscribed: bool,
    pub(crate) acked: String,
    pub(crate) nacked: Option<(String, String)>,
}

/// One connected proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    pub(crate) node_id: String,
    pub(crate) role: Role,
    pub(crate) region: String,
    pub(crate) peer: String,
    pub(crate) connected_unix: u64,
    pub(crate) types: BTreeMap<&'static str, TypeState>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) policy_file: PathBuf,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) accepted_unix: u64,
    pub(crate) refused: Option<Refused>,
    /// By stream id.
    pub(crate) proxies: BTreeMap<u64, Proxy>,
    next_stream: u64,
}

/// The state every stream and the status service share.
#[derive(Debug)]
pub(crate) struct Shared {
    inner: RwLock<Inner>,
    changes: watch::Sender<Arc<Snapshot>>,
    closing: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new(policy_file: PathBuf, snapshot: Snapshot) -> Arc<Self> {
        let snapshot = Arc::new(snapshot);
        let (changes, _) = watch::channel(snapshot.clone());
        let (closing, _) = watch::channel(false);
        Arc::new(Self {
            closing,
            inner: RwLock::new(Inner {
                policy_file,
                snapshot,
                accepted_unix: unix_now(),
                refused: None,
                proxies: BTreeMap::new(),
                next_stream: 1,
            }),
            changes,
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        match self.inner.read() {
            Ok(g) => f(&g),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn write<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        match self.inner.write() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The snapshot in force.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.read(|i| i.snapshot.clone())
    }

    /// Told of every new snapshot.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.changes.subscribe()
    }

    /// Told when the server shuts down (every stream then ends).
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every stream.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Puts `snapshot` in force (a new accepted policy) and tells every stream.
    pub(crate) fn accept(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        self.write(|i| {
            i.snapshot = snapshot.clone();
            i.accepted_unix = unix_now();
            i.refused = None;
        });
        self.changes.send_replace(snapshot);
    }

    /// Records a refused policy (the proxies keep what they have).
    pub(crate) fn refuse(&self, errors: Vec<String>) {
        self.write(|i| i.refused = Some(Refused { at_unix: unix_now(), errors }));
    }

    /// A new stream's id.
    pub(crate) fn open_stream(&self) -> u64 {
        self.write(|i| {
            i.next_stream += 1;
            i.next_stream
        })
    }

    /// Registers the proxy on stream `id`.
    pub(crate) fn connect(&self, id: u64, proxy: Proxy) {
        self.write(|i| {
            i.proxies.insert(id, proxy);
        });
    }

    /// Forgets stream `id`.
    pub(crate) fn disconnect(&self, id: u64) {
        self.write(|i| {
            i.proxies.remove(&id);
        });
    }

    /// Records that the proxy on stream `id` asked for `type_url`.
    pub(crate) fn subscribe_type(&self, id: u64, type_url: &'static str) {
        self.write(|i| {
            if let Some(p) = i.proxies.get_mut(&id) {
                p.types.entry(type_url).or_default().subscribed = true;
            }
        });
    }

    /// Records an ACK of `version` of `type_url` on stream `id`.
    pub(crate) fn ack(&self, id: u64, type_url: &'static str, version: &str) {
        self.write(|i| {
            if let Some(p) = i.proxies.get_mut(&id) {
                let t = p.types.entry(type_url).or_default();
                t.acked = version.to_string();
                t.nacked = None;
            }
        });
    }

    /// The version of `type_url` the proxy on stream `id` last acknowledged.
    pub(crate) fn acked(&self, id: u64, type_url: &str) -> Option<String> {
        self.read(|i| i.proxies.get(&id).and_then(|p| p.types.get(type_url)).map(|t| t.acked.clone()))
    }

    /// Records a NACK of `version` of `type_url` on stream `id`, with Envoy's reason.
    pub(crate) fn nack(&self, id: u64, type_url: &'static str, version: &str, error: &str) {
        self.write(|i| {
            if let Some(p) = i.proxies.get_mut(&id) {
                p.types.entry(type_url).or_default().nacked = Some((version.to_string(), error.to_string()));
            }
        });
    }

    /// The status `meridianctl status` shows.
    pub(crate) fn status(&self) -> status::StatusResponse {
        self.read(|i| {
            let proxies = i
                .proxies
                .values()
                .map(|p| {
                    let node = i.snapshot.node(p.role, &p.region);
                    let resources: Vec<status::ResourceStatus> = super::TYPES
                        .iter()
                        .filter(|type_url| p.types.get(*type_url).is_some_and(|t| t.subscribed))
                        .map(|type_url| {
                            let t = p.types.get(type_url).cloned().unwrap_or_default();
                            let (nacked_version, nack_error) = t.nacked.unwrap_or_default();
                            status::ResourceStatus {
                                type_url: type_url.to_string(),
                                current_version: node
                                    .and_then(|n| n.get(type_url))
                                    .map(|t| t.version.clone())
                                    .unwrap_or_default(),
                                acked_version: t.acked,
                                nacked_version,
                                nack_error,
                            }
                        })
                        .collect();
                    // In sync: every type it asked for acknowledged at the
                    // version the server holds, and nothing refused since.
                    let in_sync = node.is_some()
                        && !resources.is_empty()
                        && resources.iter().all(|r| r.nack_error.is_empty() && r.current_version == r.acked_version);
                    status::Proxy {
                        node_id: p.node_id.clone(),
                        role: p.role.as_str().to_string(),
                        region: p.region.clone(),
                        peer: p.peer.clone(),
                        resources,
                        in_sync,
                        connected_unix: p.connected_unix,
                    }
                })
                .collect();
            status::StatusResponse {
                policy_file: i.policy_file.display().to_string(),
                policy_version: i.snapshot.generation,
                policy_accepted_unix: i.accepted_unix,
                refused: i
                    .refused
                    .as_ref()
                    .map(|r| status::RefusedPolicy { at_unix: r.at_unix, errors: r.errors.clone() }),
                proxies,
            }
        })
    }
}
