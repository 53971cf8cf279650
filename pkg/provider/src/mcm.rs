//! The `machine.sapcloud.io/v1alpha1` objects the driver is handed: Machine and MachineClass.
//!
//! Field names follow MCM's CRDs so objects written by MCM round-trip unchanged; fields
//! this provider does not interpret are kept as raw JSON so the controller never drops them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "machine.sapcloud.io";
pub const VERSION: &str = "v1alpha1";

/// Reference from a Machine to its class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
}

/// Desired state of a Machine (MCM's `MachineSpec`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "machine.sapcloud.io",
    version = "v1alpha1",
    kind = "Machine",
    namespaced,
    status = "MachineStatus",
    shortname = "mc",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct MachineSpec {
    #[serde(default)]
    pub class: ClassSpec,
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_template: Option<NodeTemplateSpec>,
    /// MachineConfiguration fields (timeouts, maxEvictRetries, nodeConditions) and anything newer.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Labels, annotations and spec applied to the Node backing a Machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTemplateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<k8s_openapi::api::core::v1::NodeSpec>,
}

/// Observed state of a Machine (MCM's `MachineStatus`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<k8s_openapi::api::core::v1::NodeCondition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operation: Option<LastOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_status: Option<CurrentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_state: Option<String>,
    /// Where the VM is reached; written only without a target cluster (MCM's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<k8s_openapi::api::core::v1::NodeAddress>>,
    /// Whatever MCM adds next.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastOperation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Fields a newer MCM added; kept so a status write never drops them.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// Until when the machine is preserved (MCM v0.62's preservation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_expiry_time: Option<Time>,
    /// Whatever MCM adds next; kept so a status write never drops it.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Reference to a Secret in the control cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// MCM's generic MachineClass. It has no `spec`: its fields sit at the top level, which is
/// why it is written out here rather than derived with `CustomResource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineClass {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The provider-specific spec, decoded by the driver (`KubeVirtProviderSpec` here).
    #[serde(default)]
    pub provider_spec: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_template: Option<serde_json::Value>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl kube::Resource for MachineClass {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "MachineClass".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "machineclasses".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn machine_class_keeps_top_level_fields_and_unknown_ones() {
        let raw = json!({
            "apiVersion": "machine.sapcloud.io/v1alpha1",
            "kind": "MachineClass",
            "metadata": {"name": "c", "namespace": "shoot--a--b"},
            "providerSpec": {"region": "r"},
            "secretRef": {"name": "s", "namespace": "shoot--a--b"},
            "credentialsSecretRef": {"name": "cred", "namespace": "shoot--a--b"},
            "provider": "KubeVirt",
            "somethingNewer": {"x": 1}
        });
        let class: MachineClass = serde_json::from_value(raw).unwrap();
        assert_eq!(class.provider_spec["region"], "r");
        assert_eq!(
            class.secret_ref.as_ref().unwrap().name.as_deref(),
            Some("s")
        );
        assert_eq!(class.extra["somethingNewer"], json!({"x": 1}));
        assert_eq!(MachineClass::plural(&()), "machineclasses");
        assert_eq!(
            MachineClass::api_version(&()),
            "machine.sapcloud.io/v1alpha1"
        );
    }

    #[test]
    fn machine_round_trips_provider_id_and_extra_spec_fields() {
        let raw = json!({
            "apiVersion": "machine.sapcloud.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {
                "class": {"kind": "MachineClass", "name": "c"},
                "providerID": "kubevirt://m",
                "creationTimeout": "20m"
            },
            "status": {"currentStatus": {"phase": "Running"}, "lastOperation": {"type": "Create", "state": "Successful"}}
        });
        let machine: Machine = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(machine.spec.provider_id.as_deref(), Some("kubevirt://m"));
        let status = machine.status.as_ref().unwrap();
        assert_eq!(
            status.last_operation.as_ref().unwrap().type_.as_deref(),
            Some("Create")
        );
        assert_eq!(serde_json::to_value(&machine).unwrap(), raw);
    }

    #[test]
    fn status_round_trips_fields_this_provider_does_not_know() {
        let raw = json!({
            "apiVersion": "machine.sapcloud.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"class": {"name": "c"}},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
                "currentStatus": {"phase": "Running", "preserveExpiryTime": "2030-01-01T00:00:00Z",
                                  "somethingNewer": {"a": 1}},
                "lastOperation": {"type": "HealthCheck", "description": "d", "retries": 3},
                "inPlaceUpdate": {"state": "x"}
            }
        });
        let machine: Machine = serde_json::from_value(raw.clone()).unwrap();
        let status = machine.status.as_ref().unwrap();
        let current = status.current_status.as_ref().unwrap();
        assert_eq!(current.phase.as_deref(), Some("Running"));
        assert_eq!(current.extra["somethingNewer"], json!({"a": 1}));
        assert_eq!(status.last_operation.as_ref().unwrap().extra["retries"], 3);
        assert_eq!(serde_json::to_value(&machine).unwrap(), raw);
    }
}
