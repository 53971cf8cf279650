//! The driver over a mock SPI: every code MCM can receive, and what reaches the SPI.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    AWSElasticBlockStoreVolumeSource, CSIPersistentVolumeSource, NodeAddress, PersistentVolumeSpec,
};
use serde_json::json;

use super::*;
use crate::codes::MachineCode;
use crate::spi::{MockPluginSpi, VmStatus};
use crate::testing::{self, CLUSTER, TOKEN};

fn request(name: &str) -> MachineRequest {
    MachineRequest {
        machine: testing::machine(name),
        machine_class: testing::machine_class(),
        secret: testing::secret(),
    }
}

fn status(name: &str) -> VmStatus {
    VmStatus {
        provider_id: format!("kubevirt://{name}"),
        node_name: name.to_owned(),
        addresses: vec![NodeAddress {
            address: "10.0.0.7".into(),
            type_: "InternalIP".into(),
        }],
    }
}

fn api_failure(code: MachineCode) -> SpiError {
    SpiError::Api {
        action: "create VirtualMachine \"m-1\"".into(),
        code,
        message: "boom".into(),
    }
}

fn no_spi_calls() -> MachinePlugin<MockPluginSpi> {
    MachinePlugin::new(MockPluginSpi::new())
}

#[tokio::test]
async fn create_passes_ownership_spec_and_secret_to_the_spi() {
    let mut spi = MockPluginSpi::new();
    spi.expect_create_machine()
        .withf(|req| {
            req.ownership.machine_name == "m-1"
                && req.ownership.machine_class == "worker-class"
                && req.ownership.cluster == CLUSTER
                && req.spec.region == "local"
                && req.secret.access.namespace == "vms"
                && req.secret.user_data == testing::USER_DATA.as_bytes()
        })
        .times(1)
        .returning(|_| Ok(status("m-1")));
    let response = MachinePlugin::new(spi)
        .create_machine(&request("m-1"))
        .await
        .unwrap();
    assert_eq!(response.provider_id, "kubevirt://m-1");
    assert_eq!(response.node_name, "m-1");
    assert_eq!(response.last_known_state, "Created kubevirt://m-1");
    assert_eq!(response.addresses, status("m-1").addresses);
}

#[tokio::test]
async fn create_rejects_invalid_specs_as_invalid_argument_without_calling_the_spi() {
    let mut spec = testing::provider_spec_json();
    spec.as_object_mut().unwrap().remove("region");
    spec["rootVolume"]["pvc"]["resources"]["requests"]["storage"] = json!("0");
    let mut req = request("m-1");
    req.machine_class = testing::machine_class_with(spec);
    let err = no_spi_calls().create_machine(&req).await.unwrap_err();
    assert_eq!(err.code, MachineCode::InvalidArgument);
    assert!(
        err.message.contains("providerSpec.region: Required value"),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("providerSpec.rootVolume.pvc.resources.requests.storage"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn create_rejects_unknown_fields_and_bad_secrets_together() {
    let mut spec = testing::provider_spec_json();
    spec["zonee"] = json!("x");
    let mut req = request("m-1");
    req.machine_class = testing::machine_class_with(spec);
    req.secret = testing::secret_with(&[("kubeconfig", &testing::kubeconfig_yaml(Some("vms")))]);
    let err = no_spi_calls().create_machine(&req).await.unwrap_err();
    assert_eq!(err.code, MachineCode::InvalidArgument);
    assert!(
        err.message.contains("providerSpec.zonee: Unknown field"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("secret.data.userData: Required value"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn create_rejects_machine_names_that_cannot_name_a_vm() {
    for name in ["", "Upper", "a_b", &"a".repeat(64)] {
        let err = no_spi_calls()
            .create_machine(&request(name))
            .await
            .unwrap_err();
        assert_eq!(err.code, MachineCode::InvalidArgument, "{name}");
        assert!(
            err.message.contains("machine.metadata.name"),
            "{}",
            err.message
        );
    }
}

#[tokio::test]
async fn create_maps_spi_failures_to_their_codes() {
    let cases = [
        (
            SpiError::NotOwned {
                kind: "VirtualMachine",
                name: "m-1".into(),
            },
            MachineCode::AlreadyExists,
        ),
        (
            api_failure(MachineCode::Unavailable),
            MachineCode::Unavailable,
        ),
        (
            api_failure(MachineCode::ResourceExhausted),
            MachineCode::ResourceExhausted,
        ),
        (api_failure(MachineCode::Internal), MachineCode::Internal),
        (
            SpiError::InvalidInput(
                crate::field::FieldError::invalid(
                    &crate::field::FieldPath::new("secret")
                        .child("data")
                        .child("userData"),
                    "not cloud-config",
                )
                .into(),
            ),
            MachineCode::InvalidArgument,
        ),
    ];
    for (failure, code) in cases {
        let mut spi = MockPluginSpi::new();
        let returned = failure.clone();
        spi.expect_create_machine()
            .returning(move |_| Err(returned.clone()));
        let err = MachinePlugin::new(spi)
            .create_machine(&request("m-1"))
            .await
            .unwrap_err();
        assert_eq!(err.code, code, "{failure}");
        assert!(
            err.message.contains("could not create machine \"m-1\""),
            "{}",
            err.message
        );
    }
}

#[tokio::test]
async fn initialize_is_unimplemented_which_mcm_takes_as_success() {
    let err = no_spi_calls()
        .initialize_machine(&request("m-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code, MachineCode::Unimplemented);
}

#[tokio::test]
async fn delete_reports_each_outcome_as_success() {
    let outcomes = [
        (Ok(DeleteOutcome::Deleted), "Deleted kubevirt://m-1"),
        (
            Ok(DeleteOutcome::AlreadyGone),
            "kubevirt://m-1 already deleted",
        ),
        (
            Err(SpiError::NotFound("m-1".into())),
            "kubevirt://m-1 already deleted",
        ),
        (
            Ok(DeleteOutcome::NotOwned),
            "kubevirt://m-1 not owned by this provider; left in place",
        ),
    ];
    for (outcome, state) in outcomes {
        let mut spi = MockPluginSpi::new();
        spi.expect_delete_machine()
            .withf(|m| m.ownership.machine_name == "m-1" && m.ownership.cluster == CLUSTER)
            .times(1)
            .returning(move |_| outcome.clone());
        let response = MachinePlugin::new(spi)
            .delete_machine(&request("m-1"))
            .await
            .unwrap();
        assert_eq!(response.last_known_state, state);
    }
}

#[tokio::test]
async fn delete_needs_only_the_kubeconfig() {
    let mut req = request("m-1");
    req.machine_class = testing::machine_class_with(json!({"region": 5, "bogus": true}));
    req.secret = testing::secret_with(&[("kubeconfig", &testing::kubeconfig_yaml(Some("vms")))]);
    let mut spi = MockPluginSpi::new();
    spi.expect_delete_machine()
        .times(1)
        .returning(|_| Ok(DeleteOutcome::Deleted));
    MachinePlugin::new(spi).delete_machine(&req).await.unwrap();

    req.secret = testing::secret_with(&[("userData", "x")]);
    let err = no_spi_calls().delete_machine(&req).await.unwrap_err();
    assert_eq!(err.code, MachineCode::InvalidArgument);
    assert!(
        err.message
            .contains("secret.data.kubeconfig: Required value"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn delete_passes_api_failures_on() {
    let mut spi = MockPluginSpi::new();
    spi.expect_delete_machine()
        .returning(|_| Err(api_failure(MachineCode::Unavailable)));
    let err = MachinePlugin::new(spi)
        .delete_machine(&request("m-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code, MachineCode::Unavailable);
}

#[tokio::test]
async fn status_reports_the_vm_or_not_found() {
    let mut spi = MockPluginSpi::new();
    spi.expect_get_machine_status()
        .withf(|m| m.ownership.machine_name == "m-1")
        .returning(|_| Ok(status("m-1")));
    spi.expect_get_machine_status()
        .withf(|m| m.ownership.machine_name == "m-2")
        .returning(|_| Err(SpiError::NotFound("m-2".into())));
    spi.expect_get_machine_status()
        .withf(|m| m.ownership.machine_name == "m-3")
        .returning(|_| {
            Err(SpiError::NotOwned {
                kind: "VirtualMachine",
                name: "m-3".into(),
            })
        });
    let driver = MachinePlugin::new(spi);

    let found = driver.get_machine_status(&request("m-1")).await.unwrap();
    assert_eq!(found.provider_id, "kubevirt://m-1");
    assert_eq!(found.node_name, "m-1");
    assert_eq!(found.addresses.len(), 1);

    let missing = driver
        .get_machine_status(&request("m-2"))
        .await
        .unwrap_err();
    assert_eq!(missing.code, MachineCode::NotFound);
    assert_eq!(missing.message, "VirtualMachine \"m-2\" not found");

    let foreign = driver
        .get_machine_status(&request("m-3"))
        .await
        .unwrap_err();
    assert_eq!(foreign.code, MachineCode::AlreadyExists);
}

#[tokio::test]
async fn list_returns_the_spi_map_for_the_class_namespace_identity() {
    let mut spi = MockPluginSpi::new();
    spi.expect_list_machines()
        .withf(|req| req.cluster == CLUSTER && req.access.namespace == "vms")
        .times(1)
        .returning(|_| {
            Ok(BTreeMap::from([(
                "kubevirt://m-1".to_owned(),
                "m-1".to_owned(),
            )]))
        });
    let response = MachinePlugin::new(spi)
        .list_machines(&ListMachinesRequest {
            machine_class: testing::machine_class(),
            secret: testing::secret(),
        })
        .await
        .unwrap();
    assert_eq!(response.machine_list["kubevirt://m-1"], "m-1");
}

#[tokio::test]
async fn list_failures_keep_their_code_and_bad_secrets_are_invalid() {
    let mut spi = MockPluginSpi::new();
    spi.expect_list_machines()
        .returning(|_| Err(api_failure(MachineCode::PermissionDenied)));
    let err = MachinePlugin::new(spi)
        .list_machines(&ListMachinesRequest {
            machine_class: testing::machine_class(),
            secret: testing::secret(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, MachineCode::PermissionDenied);

    let err = no_spi_calls()
        .list_machines(&ListMachinesRequest {
            machine_class: testing::machine_class(),
            secret: testing::secret_with(&[("kubeconfig", "::: not yaml")]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, MachineCode::InvalidArgument);
    assert!(
        err.message
            .contains("secret.data.kubeconfig: Invalid value"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn volume_ids_are_the_handles_of_kubevirt_csi_volumes_only() {
    let csi = |driver: &str, handle: &str| PersistentVolumeSpec {
        csi: Some(CSIPersistentVolumeSource {
            driver: driver.into(),
            volume_handle: handle.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ebs = PersistentVolumeSpec {
        aws_elastic_block_store: Some(AWSElasticBlockStoreVolumeSource {
            volume_id: "vol-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let response = no_spi_calls()
        .get_volume_ids(&GetVolumeIdsRequest {
            pv_specs: vec![
                csi("csi.kubevirt.io", "pvc-dv-1"),
                csi("ebs.csi.aws.com", "vol-2"),
                ebs,
                csi("csi.kubevirt.io", "pvc-dv-2"),
            ],
        })
        .await
        .unwrap();
    assert_eq!(response.volume_ids, vec!["pvc-dv-1", "pvc-dv-2"]);
}

#[tokio::test]
async fn errors_never_carry_secret_material() {
    let mut req = request("m-1");
    req.machine_class = testing::machine_class_with(json!({}));
    let err = no_spi_calls().create_machine(&req).await.unwrap_err();
    assert!(!err.message.contains(TOKEN), "{}", err.message);
    assert!(!err.message.contains("bootstrap-token"), "{}", err.message);
}

#[test]
fn request_debug_shows_the_secret_keys_only() {
    let shown = format!("{:?}", request("m-1"));
    assert!(
        shown.contains("m-1") && shown.contains("kubeconfig"),
        "{shown}"
    );
    assert!(
        !shown.contains(TOKEN) && !shown.contains("bootstrap-token"),
        "{shown}"
    );
    let list = ListMachinesRequest {
        machine_class: testing::machine_class(),
        secret: testing::secret(),
    };
    let shown = format!("{list:?}");
    assert!(
        shown.contains("worker-class") && !shown.contains(TOKEN),
        "{shown}"
    );
}
