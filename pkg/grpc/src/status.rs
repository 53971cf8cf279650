//! MCM machine codes on gRPC.
//!
//! Codes 0 to 16 are gRPC's own codes under the same numbers. MCM's Uninitialized (17)
//! has no gRPC twin and travels as FAILED_PRECONDITION. Every error also carries a
//! `google.rpc.ErrorInfo` (domain [`DOMAIN`], reason the MCM code name, metadata
//! `machineCode`), so a client recovers the exact MCM code; an Uninitialized status
//! response travels in the same metadata (`providerID`, `nodeName`).

use std::collections::HashMap;

use mcm_provider_kubevirt::driver::GetMachineStatusResponse;
use mcm_provider_kubevirt::{MachineCode, MachineError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub const DOMAIN: &str = "machine.sapcloud.io";
const CODE_KEY: &str = "machineCode";
const PROVIDER_ID_KEY: &str = "providerID";
const NODE_NAME_KEY: &str = "nodeName";

/// The gRPC code a machine code travels as.
pub fn grpc_code(code: MachineCode) -> Code {
    match code {
        MachineCode::Uninitialized => Code::FailedPrecondition,
        other => Code::from_i32(other.value() as i32),
    }
}

/// A driver error as the gRPC status a client receives.
pub fn to_status(error: &MachineError) -> Status {
    let mut metadata = HashMap::from([(CODE_KEY.to_owned(), error.code.value().to_string())]);
    if let Some(status) = &error.uninitialized {
        metadata.insert(PROVIDER_ID_KEY.to_owned(), status.provider_id.clone());
        metadata.insert(NODE_NAME_KEY.to_owned(), status.node_name.clone());
    }
    Status::with_error_details(
        grpc_code(error.code),
        error.message.clone(),
        ErrorDetails::with_error_info(error.code.name(), DOMAIN, metadata),
    )
}

/// A gRPC status back as the driver error: the MCM code from the ErrorInfo when present
/// (so Uninitialized and its status response survive), else the gRPC code itself.
pub fn from_status(status: &Status) -> MachineError {
    let info = status
        .get_error_details()
        .error_info()
        .filter(|info| info.domain == DOMAIN)
        .cloned();
    let code = info
        .as_ref()
        .and_then(|info| MachineCode::from_name(&info.reason))
        .or_else(|| MachineCode::from_value(status.code() as u32))
        .unwrap_or(MachineCode::Unknown);
    let message = status.message().to_owned();
    match (code, info) {
        (MachineCode::Uninitialized, Some(info)) if info.metadata.contains_key(PROVIDER_ID_KEY) => {
            let get = |key: &str| info.metadata.get(key).cloned().unwrap_or_default();
            MachineError::uninitialized(
                message,
                GetMachineStatusResponse {
                    provider_id: get(PROVIDER_ID_KEY),
                    node_name: get(NODE_NAME_KEY),
                    addresses: Vec::new(),
                },
            )
        }
        (code, _) => MachineError::new(code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_up_to_unauthenticated_keep_their_number() {
        for code in MachineCode::ALL {
            let grpc = grpc_code(code);
            if code == MachineCode::Uninitialized {
                assert_eq!(grpc, Code::FailedPrecondition);
            } else {
                assert_eq!(grpc as u32, code.value(), "{code}");
            }
        }
    }

    #[test]
    fn every_code_survives_the_round_trip() {
        for code in MachineCode::ALL
            .into_iter()
            .filter(|c| *c != MachineCode::Ok)
        {
            let error = MachineError::new(code, format!("failed with {code}"));
            let back = from_status(&to_status(&error));
            assert_eq!(back, error);
        }
    }

    #[test]
    fn uninitialized_keeps_its_status_response() {
        let error = MachineError::uninitialized(
            "not initialized yet",
            GetMachineStatusResponse {
                provider_id: "kubevirt://m".into(),
                node_name: "m".into(),
                addresses: Vec::new(),
            },
        );
        let status = to_status(&error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, "Uninitialized");
        assert_eq!(info.metadata["providerID"], "kubevirt://m");
        assert_eq!(from_status(&status), error);
    }

    #[test]
    fn a_plain_grpc_status_maps_by_its_code() {
        let back = from_status(&Status::unavailable("connection refused"));
        assert_eq!(back.code, MachineCode::Unavailable);
        assert_eq!(back.message, "connection refused");
    }
}
