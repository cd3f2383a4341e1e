//! The model repository: `<root>/<model>/config.yaml` and
//! `<root>/<model>/<version>/model.onnx`.
//!
//! Loading a model reads its config, picks versions by the version policy,
//! prepares each on its device's runtime (one plan per batch bucket), runs warmup,
//! and starts a batcher per version; only then does the model report
//! ready. A reload prepares the new versions before swapping them in, and
//! the old versions' batchers finish what they had queued, so no in-flight
//! request fails. A model that fails to load is UNAVAILABLE with the reason;
//! the other models keep serving.

pub mod model_config;
pub mod pbtxt;
mod version;
mod watch;

pub use model_config::{ConfigError, ModelConfig};
pub use version::{LoadedVersion, ModelLimits};
pub use watch::{poll, Fingerprint};

use crate::executor::device::Devices;
use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::watch as tokio_watch;

/// Where a model stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// Being loaded; not ready yet.
    Loading,
    /// Serving its versions.
    Ready,
    /// Not serving; the reason says why (load error, unloaded).
    Unavailable(String),
}

impl ModelState {
    /// Triton's state name (`READY`, `LOADING`, `UNAVAILABLE`).
    pub fn name(&self) -> &'static str {
        match self {
            ModelState::Loading => "LOADING",
            ModelState::Ready => "READY",
            ModelState::Unavailable(_) => "UNAVAILABLE",
        }
    }
}

/// One model and its loaded versions.
#[derive(Debug, Clone)]
pub struct Model {
    /// The folder name.
    pub name: String,
    /// Where it stands.
    pub state: ModelState,
    /// Its configuration, once parsed.
    pub config: Option<Arc<ModelConfig>>,
    /// Loaded versions by number.
    pub versions: BTreeMap<u64, Arc<LoadedVersion>>,
    /// Rate limits shared by its versions.
    pub limits: Option<Arc<ModelLimits>>,
    /// The files as last loaded (or unloaded).
    pub fingerprint: Fingerprint,
}

impl Model {
    /// The version `requested` names, or the highest loaded one for "".
    pub fn version(&self, requested: &str) -> Option<&Arc<LoadedVersion>> {
        if requested.is_empty() {
            return self.versions.values().next_back();
        }
        requested.parse::<u64>().ok().and_then(|v| self.versions.get(&v))
    }
}

/// Why a model could not be found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepositoryError {
    /// No folder by that name.
    #[error("no model named '{0}' in the repository")]
    NotFound(String),
}

/// The repository and every model's state.
#[derive(Debug)]
pub struct Repository {
    root: PathBuf,
    devices: Devices,
    metrics: Metrics,
    /// Shared snapshots: a call's lookup clones an `Arc`, not the model.
    models: RwLock<BTreeMap<String, Arc<Model>>>,
    /// Serialises loads and unloads.
    load_lock: tokio::sync::Mutex<()>,
    /// Bumped on every state change (health watchers follow it).
    changes: tokio_watch::Sender<u64>,
}

// === impl Repository ===

impl Repository {
    /// A repository at `root` whose models run on `devices`.
    pub fn new(root: PathBuf, devices: Devices, metrics: Metrics) -> Self {
        let (changes, _) = tokio_watch::channel(0);
        Self { root, devices, metrics, models: RwLock::new(BTreeMap::new()), load_lock: Default::default(), changes }
    }

    /// The repository folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Follows state changes (a counter that increases on each).
    pub fn subscribe(&self) -> tokio_watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Bumps the change counter (also used when the server starts draining).
    pub fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// A snapshot of one model.
    pub fn model(&self, name: &str) -> Option<Arc<Model>> {
        self.read().get(name).cloned()
    }

    /// A snapshot of every model.
    pub fn models(&self) -> Vec<Arc<Model>> {
        self.read().values().cloned().collect()
    }

    /// Every model known is ready (true for an empty repository).
    pub fn all_ready(&self) -> bool {
        self.read().values().all(|m| m.state == ModelState::Ready)
    }

    /// The model folders on disk.
    pub fn model_dirs(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if let Some(name) = entry.file_name().to_str() {
                    if !name.starts_with('.') {
                        names.push(name.to_string());
                    }
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Loads every model folder; failures leave that model UNAVAILABLE.
    pub async fn load_all(self: &Arc<Self>) -> std::io::Result<()> {
        for name in self.model_dirs()? {
            // A model that fails is logged and marked; the rest go on.
            let _ = self.load(&name).await;
        }
        Ok(())
    }

    /// Loads (or reloads) one model. On failure the model is UNAVAILABLE
    /// with the reason, and the error is returned.
    pub async fn load(self: &Arc<Self>, name: &str) -> Result<(), String> {
        let _guard = self.load_lock.lock().await;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            let reason = RepositoryError::NotFound(name.to_string()).to_string();
            return Err(reason);
        }
        // A model already serving keeps serving its current versions while
        // the new ones load; only a model that is not serving shows LOADING.
        let serving = self.read().get(name).is_some_and(|m| m.state == ModelState::Ready);
        if !serving {
            self.set_state(name, ModelState::Loading, Fingerprint::of(&dir));
        }
        let this = self.clone();
        let model_name = name.to_string();
        let loaded =
            tokio::task::spawn_blocking(move || version::load_model(&this.devices, &this.metrics, &model_name, &dir))
                .await
                .map_err(|e| format!("the load task failed: {e}"))
                .and_then(|r| r);
        match loaded {
            Ok(model) => {
                tracing::info!(model = name, versions = ?model.versions.keys().collect::<Vec<_>>(), "model ready");
                self.swap(model);
                Ok(())
            }
            Err(reason) => {
                tracing::error!(model = name, %reason, "model failed to load");
                let fingerprint = Fingerprint::of(&self.root.join(name));
                let old = self.replace(name, |m| {
                    m.state = ModelState::Unavailable(reason.clone());
                    m.fingerprint = fingerprint;
                    std::mem::take(&mut m.versions)
                });
                retire(old);
                Err(reason)
            }
        }
    }

    /// Unloads a model: it stays listed as UNAVAILABLE ("unloaded"), its
    /// versions finish what they had queued.
    pub async fn unload(&self, name: &str) -> Result<(), RepositoryError> {
        let _guard = self.load_lock.lock().await;
        if self.read().get(name).is_none() && !self.root.join(name).is_dir() {
            return Err(RepositoryError::NotFound(name.to_string()));
        }
        let fingerprint = Fingerprint::of(&self.root.join(name));
        let old = self.replace(name, |m| {
            m.state = ModelState::Unavailable("unloaded".into());
            m.fingerprint = fingerprint;
            std::mem::take(&mut m.versions)
        });
        retire(old);
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Drops a model whose folder is gone.
    pub async fn forget(&self, name: &str) {
        let _guard = self.load_lock.lock().await;
        let old = self.write().remove(name).map(|m| m.versions.clone()).unwrap_or_default();
        retire(old);
        self.notify();
        tracing::info!(model = name, "model folder removed; model dropped");
    }

    fn swap(&self, model: Model) {
        let old = {
            let mut models = self.write();
            models.insert(model.name.clone(), Arc::new(model)).map(|m| m.versions.clone()).unwrap_or_default()
        };
        retire(old);
        self.notify();
    }

    fn set_state(&self, name: &str, state: ModelState, fingerprint: Fingerprint) {
        self.replace(name, |m| {
            m.state = state;
            m.fingerprint = fingerprint;
        });
    }

    fn replace<R>(&self, name: &str, f: impl FnOnce(&mut Model) -> R) -> R {
        let r = {
            let mut models = self.write();
            let model = models.entry(name.to_string()).or_insert_with(|| {
                Arc::new(Model {
                    name: name.to_string(),
                    state: ModelState::Loading,
                    config: None,
                    versions: BTreeMap::new(),
                    limits: None,
                    fingerprint: Fingerprint::default(),
                })
            });
            f(Arc::make_mut(model))
        };
        self.notify();
        r
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Model>>> {
        self.models.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Model>>> {
        self.models.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Shuts old versions down off the caller's thread: their batchers finish
/// the queued requests (whoever still holds an `Arc` keeps it alive).
fn retire(versions: BTreeMap<u64, Arc<LoadedVersion>>) {
    if versions.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        for v in versions.into_values() {
            v.batcher.close();
        }
    });
}
