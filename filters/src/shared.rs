//! The shared state's one key, read and changed under compare-and-swap.

use meridian_filters_core::state::MeshState;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// The shared-data key holding the [`MeshState`] (one per VM id).
pub(crate) const KEY: &str = "meridian.state.v1";

/// Attempts before an update gives up for this tick (its delta is kept).
const CAS_ATTEMPTS: usize = 16;

/// Creates the key if it is missing. Called in `on_vm_start`; a VM that
/// restarts (FAIL_RELOAD) finds the key and keeps the state.
pub(crate) fn ensure() {
    if let Ok((None, _)) = hostcalls::get_shared_data(KEY) {
        let _ = hostcalls::set_shared_data(KEY, Some(b"{}"), None);
    }
}

/// Runs `change` on the current state and writes the result back under
/// CAS, re-reading and re-running on conflict. Returns the state written
/// and what `change` returned, or `None` when every attempt conflicted or
/// the host failed.
pub(crate) fn update<T>(mut change: impl FnMut(&mut MeshState) -> T) -> Option<(MeshState, T)> {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = match hostcalls::get_shared_data(KEY) {
            Ok(found) => found,
            Err(status) => {
                log::warn!("meridian: reading shared state failed: {status:?}");
                return None;
            }
        };
        let mut state = bytes.as_deref().map(MeshState::decode).unwrap_or_default();
        let out = change(&mut state);
        match hostcalls::set_shared_data(KEY, Some(&state.encode()), cas) {
            Ok(()) => return Some((state, out)),
            Err(Status::CasMismatch) => continue,
            Err(status) => {
                log::warn!("meridian: writing shared state failed: {status:?}");
                return None;
            }
        }
    }
    log::warn!("meridian: shared state still conflicting after {CAS_ATTEMPTS} attempts; retrying next tick");
    None
}
