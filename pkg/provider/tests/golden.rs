//! Golden tests of VM composition: each case's VirtualMachine and userdata Secret, as
//! YAML, must equal `test/golden/<case>.yaml`. After an intended change, regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p mcm-provider-kubevirt --test golden` and review the diff.

use std::path::PathBuf;

use k8s_openapi::ByteString;
use kube::config::Kubeconfig;
use mcm_provider_kubevirt::kubevirt::ownership::Ownership;
use mcm_provider_kubevirt::kubevirt::vm::compose_machine;
use mcm_provider_kubevirt::provider_spec::decode_provider_spec;
use mcm_provider_kubevirt::secret::{ClusterAccess, ProviderSecret};
use mcm_provider_kubevirt::spi::CreateRequest;
use serde_json::{Value, json};

fn base_spec() -> Value {
    json!({
        "region": "eu-1",
        "zone": "eu-1a",
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}},
        "rootVolume": {
            "pvc": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}, "storageClassName": "ssd"},
            "source": {"registry": {"url": "docker://registry.example.com/os/gardenlinux:1443"}}
        }
    })
}

fn with(mut spec: Value, patch: Value) -> Value {
    for (key, value) in patch.as_object().unwrap() {
        spec[key] = value.clone();
    }
    spec
}

fn cases() -> Vec<(&'static str, Value, &'static str)> {
    let user_data =
        "#cloud-config\nwrite_files:\n- path: /etc/motd\n  permissions: 0644\n  content: hello\n";
    vec![
        ("minimal", base_spec(), user_data),
        (
            "multus-default-network-and-dns-none",
            with(
                base_spec(),
                json!({
                    "region": "default", "zone": "default",
                    "networks": [{"name": "infra/vlan-10", "default": true}, {"name": "storage"}],
                    "dnsPolicy": "None",
                    "dnsConfig": {"nameservers": ["10.0.0.10"], "searches": ["cluster.local"]}
                }),
            ),
            user_data,
        ),
        (
            "volumes-disks-and-ssh-keys",
            with(
                base_spec(),
                json!({
                    "additionalVolumes": [
                        {"name": "scratch", "dataVolume": {"storage": {"resources": {"requests": {"storage": "50Gi"}}}, "source": {"blank": {}}}},
                        {"name": "images", "volumeSource": {"persistentVolumeClaim": {"claimName": "shared-images", "readOnly": true}}},
                        {"name": "config", "volumeSource": {"configMap": {"name": "node-config"}}}
                    ],
                    "devices": {
                        "disks": [{"name": "root-disk", "disk": {"bus": "scsi"}}, {"name": "images", "disk": {"bus": "virtio", "readonly": true}}],
                        "rng": {}, "blockMultiQueue": true, "networkInterfaceMultiqueue": true
                    },
                    "cpu": {"cores": 2, "dedicatedCpuPlacement": true},
                    "memory": {"hugepages": {"pageSize": "1Gi"}},
                    "sshKeys": ["ssh-ed25519 AAAAC3Nza operator@example"],
                    "tags": {"team": "infra", "cluster.x-k8s.io/role": "worker"}
                }),
            ),
            "#cloud-config\nssh_authorized_keys:\n- ssh-rsa AAAAB3Nza existing@example\nruncmd:\n- [systemctl, restart, kubelet]\n",
        ),
    ]
}

fn golden_path(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../test/golden")
        .join(format!("{case}.yaml"))
}

fn render(spec: &Value, user_data: &str) -> String {
    let request = CreateRequest {
        ownership: Ownership {
            machine_name: "shoot--dev--worker-z1-abcde".into(),
            machine_class: "shoot--dev--worker-z1-8f3a2".into(),
            cluster: "shoot--dev--kubevirt".into(),
        },
        spec: decode_provider_spec(spec).unwrap(),
        secret: ProviderSecret {
            access: ClusterAccess {
                kubeconfig: Kubeconfig::default(),
                namespace: "vms".into(),
            },
            user_data: user_data.as_bytes().to_vec(),
        },
    };
    let composed = compose_machine(&request).unwrap();
    // The userdata is shown as text so the golden file reviews well.
    let mut secret = serde_json::to_value(&composed.user_data_secret).unwrap();
    let data: ByteString = serde_json::from_value(secret["data"]["userdata"].take()).unwrap();
    secret.as_object_mut().unwrap().remove("data");
    secret["stringData"] = json!({"userdata": String::from_utf8(data.0).unwrap()});
    format!(
        "---\n{}---\n{}",
        serde_saphyr::to_string(&composed.vm).unwrap(),
        serde_saphyr::to_string(&secret).unwrap()
    )
}

#[test]
fn composition_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (case, spec, user_data) in cases() {
        let rendered = render(&spec, user_data);
        let path = golden_path(case);
        if update {
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
        if rendered != expected {
            mismatches.push(format!("{case}:\n{rendered}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "composition differs from golden files:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn rendered_vms_parse_back_as_kubevirt_virtual_machines() {
    for (case, spec, user_data) in cases() {
        let rendered = render(&spec, user_data);
        let vm_yaml = rendered.split("---\n").nth(1).unwrap();
        let vm: kubevirt_api::kubevirt::v1::virtualmachines::VirtualMachine =
            serde_saphyr::from_str(vm_yaml).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(vm.spec.run_strategy.as_deref(), Some("Always"), "{case}");
    }
}
