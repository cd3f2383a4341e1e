//! `meridian.xds.v1.MeshStatus`: what `meridianctl status --xds` reads.

use super::state::Shared;
use meridian_proto::xds::meridian::xds::v1::mesh_status_server::MeshStatus;
use meridian_proto::xds::meridian::xds::v1::{StatusRequest, StatusResponse};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The service.
#[derive(Debug, Clone)]
pub(crate) struct StatusService {
    pub(crate) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl MeshStatus for StatusService {
    async fn get(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.shared.status()))
    }
}
