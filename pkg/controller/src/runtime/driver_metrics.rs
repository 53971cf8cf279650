//! The driver as the controller calls it: every call timed and its failures counted
//! under MCM's `mcm_cloud_api_driver_*` names.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use mcm_provider_kubevirt::driver::*;
use mcm_provider_kubevirt::{Driver, MachineError};

use crate::runtime::metrics::Metrics;

pub struct InstrumentedDriver {
    inner: Arc<dyn Driver>,
    metrics: Arc<Metrics>,
}

impl InstrumentedDriver {
    pub fn new(inner: Arc<dyn Driver>, metrics: Arc<Metrics>) -> Self {
        InstrumentedDriver { inner, metrics }
    }

    fn record<T>(&self, operation: &str, started: Instant, result: &Result<T, MachineError>) {
        let code = result.as_ref().err().map(|e| e.code.name());
        self.metrics.driver_call(operation, started.elapsed(), code);
    }
}

macro_rules! instrumented {
    ($self:ident, $operation:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.record($operation, started, &result);
        result
    }};
}

#[async_trait]
impl Driver for InstrumentedDriver {
    async fn create_machine(
        &self,
        request: &CreateMachineRequest,
    ) -> Result<CreateMachineResponse, MachineError> {
        instrumented!(self, "CreateMachine", self.inner.create_machine(request))
    }
    async fn initialize_machine(
        &self,
        request: &InitializeMachineRequest,
    ) -> Result<InitializeMachineResponse, MachineError> {
        instrumented!(
            self,
            "InitializeMachine",
            self.inner.initialize_machine(request)
        )
    }
    async fn delete_machine(
        &self,
        request: &DeleteMachineRequest,
    ) -> Result<DeleteMachineResponse, MachineError> {
        instrumented!(self, "DeleteMachine", self.inner.delete_machine(request))
    }
    async fn get_machine_status(
        &self,
        request: &GetMachineStatusRequest,
    ) -> Result<GetMachineStatusResponse, MachineError> {
        instrumented!(
            self,
            "GetMachineStatus",
            self.inner.get_machine_status(request)
        )
    }
    async fn list_machines(
        &self,
        request: &ListMachinesRequest,
    ) -> Result<ListMachinesResponse, MachineError> {
        instrumented!(self, "ListMachines", self.inner.list_machines(request))
    }
    async fn get_volume_ids(
        &self,
        request: &GetVolumeIdsRequest,
    ) -> Result<GetVolumeIdsResponse, MachineError> {
        instrumented!(self, "GetVolumeIDs", self.inner.get_volume_ids(request))
    }
}
