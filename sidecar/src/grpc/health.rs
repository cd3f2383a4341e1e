//! `grpc.health.v1.Health`: the server as a whole ("") and one service per
//! model name.

use super::ServerState;
use crate::repository::ModelState;
use meridian_proto::health::health_check_response::ServingStatus;
use meridian_proto::health::health_server::Health;
use meridian_proto::health::{HealthCheckRequest, HealthCheckResponse};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The health service.
#[derive(Debug, Clone)]
pub struct HealthService {
    state: Arc<ServerState>,
}

impl HealthService {
    /// A health service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }
}

/// The status of `service` now; `None` for an unknown service name.
fn status(state: &ServerState, service: &str) -> Option<ServingStatus> {
    if service.is_empty() {
        return Some(if state.is_ready() { ServingStatus::Serving } else { ServingStatus::NotServing });
    }
    let model = state.repo.model(service)?;
    Some(if !state.is_draining() && model.state == ModelState::Ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        let status =
            status(&self.state, &service).ok_or_else(|| Status::not_found(format!("unknown service '{service}'")))?;
        Ok(Response::new(HealthCheckResponse { status: status as i32 }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let service = req.into_inner().service;
        let state = self.state.clone();
        let mut changes = state.repo.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let now = status(&state, &service).unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(now) {
                    last = Some(now);
                    if tx.send(Ok(HealthCheckResponse { status: now as i32 })).await.is_err() {
                        return;
                    }
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
