//! What the fuzz targets (test/fuzz) check, beyond "never panics": properties of
//! provider-spec decoding, VM composition, the SSH-key merge into cloud-config and
//! kubeconfig validation that must hold for any input. Each function panics when its
//! property fails; `tests/seeds.rs` replays the seeds and earlier findings through them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::ByteString;
use kube::config::Kubeconfig;
use mcm_provider_kubevirt::kubevirt::kube_spi::{ClientFactory, KubeconfigClientFactory};
use mcm_provider_kubevirt::kubevirt::ownership::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, Ownership};
use mcm_provider_kubevirt::kubevirt::userdata::merge_ssh_keys;
use mcm_provider_kubevirt::kubevirt::vm::{USER_DATA_SECRET_KEY, compose_machine};
use mcm_provider_kubevirt::provider_spec::decode_provider_spec;
use mcm_provider_kubevirt::secret::{ClusterAccess, ProviderSecret};
use mcm_provider_kubevirt::spi::{CreateRequest, SpiError};
use serde_json::Value;

const MACHINE: &str = "fuzz-machine";

/// Input parts are separated by the first NUL byte, which YAML text cannot contain.
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// `<providerSpec as YAML or JSON> NUL <userData>`: decoded strictly, then composed.
pub fn provider_spec(data: &[u8]) {
    let (spec_text, user_data) = split(data);
    let Ok(text) = std::str::from_utf8(spec_text) else {
        return;
    };
    let Ok(raw) = serde_saphyr::from_str::<Value>(text) else {
        return;
    };
    let spec = match decode_provider_spec(&raw) {
        Ok(spec) => spec,
        Err(errors) => {
            let message = errors.to_string();
            assert!(message.starts_with("providerSpec"), "{message}");
            return;
        }
    };
    // What was accepted decodes again to the same spec: nothing is lost or reinterpreted.
    let encoded = serde_json::to_value(&spec).expect("a decoded spec encodes");
    let again = decode_provider_spec(&encoded)
        .unwrap_or_else(|e| panic!("an accepted spec is rejected once re-encoded: {e}"));
    assert_eq!(again, spec);

    let request = CreateRequest {
        ownership: Ownership {
            machine_name: MACHINE.to_owned(),
            machine_class: "fuzz-class".to_owned(),
            cluster: "fuzz".to_owned(),
        },
        secret: ProviderSecret {
            access: ClusterAccess {
                kubeconfig: Kubeconfig::default(),
                namespace: "vms".to_owned(),
            },
            user_data: user_data.to_vec(),
        },
        spec,
    };
    match compose_machine(&request) {
        Ok(composed) => {
            assert_eq!(composed.vm.metadata.name.as_deref(), Some(MACHINE));
            let labels = composed.vm.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get(MANAGED_BY_LABEL).map(String::as_str),
                Some(MANAGED_BY_VALUE)
            );
            let stored = composed
                .user_data_secret
                .data
                .as_ref()
                .and_then(|data| data.get(USER_DATA_SECRET_KEY))
                .expect("the userdata Secret holds the userData");
            // The keys are in already: merging them again changes nothing.
            let remerged = merge_ssh_keys(&stored.0, &request.spec.ssh_keys)
                .expect("composed userData takes its own keys again");
            assert_eq!(remerged, stored.0);
            serde_json::to_value(&composed.vm).expect("the VM encodes");
        }
        Err(SpiError::InvalidInput(errors)) => assert!(!errors.is_empty()),
        Err(other) => panic!("composition failed other than on its input: {other}"),
    }
}

/// `<userData> NUL <SSH keys, one per line>`: the merge into `#cloud-config`.
pub fn cloud_config(data: &[u8]) {
    let (user_data, keys_text) = split(data);
    let keys: Vec<String> = String::from_utf8_lossy(keys_text)
        .lines()
        .map(str::to_owned)
        .collect();
    let wanted: Vec<&str> = keys
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .collect();
    let Ok(merged) = merge_ssh_keys(user_data, &keys) else {
        return;
    };
    if wanted.is_empty() {
        assert_eq!(merged, user_data, "no keys, no change");
        return;
    }
    assert_eq!(
        merge_ssh_keys(&merged, &keys).as_deref(),
        Ok(merged.as_slice()),
        "merging twice is merging once"
    );
    let text = std::str::from_utf8(&merged).expect("merged userData is text");
    assert!(text.starts_with("#cloud-config"), "the header stays first");
    let document: Value = serde_saphyr::from_str(text).expect("merged userData parses");
    let listed: Vec<&str> = document["ssh_authorized_keys"]
        .as_array()
        .expect("ssh_authorized_keys is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for key in wanted {
        assert!(listed.contains(&key), "key {key:?} merged");
    }
}

/// Clients are built inside a runtime (kube spawns a buffer task); one for the process.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// Any bytes as the Secret's kubeconfig: rejected naming it, or accepted with a namespace
/// and then good for the client the SPI builds from it (without connecting).
pub fn kubeconfig(data: &[u8]) {
    let secret_data = BTreeMap::from([("kubeconfig".to_owned(), ByteString(data.to_vec()))]);
    match ClusterAccess::from_data(&secret_data) {
        Ok(access) => {
            assert!(!access.namespace.is_empty());
            if let Err(error) =
                runtime().block_on(KubeconfigClientFactory::default().client(&access))
            {
                panic!("a kubeconfig that validates builds no client: {error}");
            }
        }
        Err(errors) => {
            let message = errors.to_string();
            assert!(message.starts_with("secret.data.kubeconfig"), "{message}");
        }
    }
}
