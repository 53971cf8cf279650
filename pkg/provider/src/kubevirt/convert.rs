//! Conversion between types that share a schema but not a Rust type: core Kubernetes
//! types (k8s-openapi) and their copies inside the generated KubeVirt and CDI types.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codes::MachineCode;
use crate::spi::SpiError;

/// Re-types `value` through its JSON form. A failure is a bug (the schemas disagree), not
/// bad input, so it is Internal.
pub fn convert<T: Serialize, U: DeserializeOwned>(value: &T, what: &str) -> Result<U, SpiError> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|error| SpiError::Api {
            action: format!("compose {what}"),
            code: MachineCode::Internal,
            message: error.to_string(),
        })
}
