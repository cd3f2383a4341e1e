//! Noticing changes on disk: a fingerprint of a model folder's files and a
//! poller that loads new models, reloads changed ones and drops removed ones.

use super::{ModelState, Repository};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Size and modification time of `config.yaml`, `config.pbtxt` and every
/// `<version>/model.onnx` of a model folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<(String, u64, Option<SystemTime>)>);

impl Fingerprint {
    /// Reads the fingerprint of a model folder (empty if it is gone).
    pub fn of(dir: &Path) -> Self {
        let mut files = Vec::new();
        let mut push = |rel: String, path: &Path| {
            if let Ok(meta) = std::fs::metadata(path) {
                files.push((rel, meta.len(), meta.modified().ok()));
            }
        };
        push("config.yaml".into(), &dir.join("config.yaml"));
        push(super::model_config::PBTXT.into(), &dir.join(super::model_config::PBTXT));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.parse::<u64>().is_ok() {
                    push(
                        format!("{name}/{}", super::version::MODEL_FILE),
                        &entry.path().join(super::version::MODEL_FILE),
                    );
                }
            }
        }
        files.sort();
        Fingerprint(files)
    }
}

/// Every `every`, compares each model folder with what was loaded.
pub async fn poll(repo: Arc<Repository>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let on_disk = match repo.model_dirs() {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(root = %repo.root().display(), error = %e, "cannot list the model repository");
                continue;
            }
        };
        for model in repo.models() {
            if !on_disk.contains(&model.name) {
                repo.forget(&model.name).await;
            }
        }
        for name in on_disk {
            let current = Fingerprint::of(&repo.root().join(&name));
            let changed = match repo.model(&name) {
                None => true,
                Some(m) => m.state != ModelState::Loading && m.fingerprint != current,
            };
            if changed {
                tracing::info!(model = %name, "model files changed; loading");
                let _ = repo.load(&name).await;
            }
        }
    }
}
