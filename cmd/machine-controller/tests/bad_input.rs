//! The bad-input corpus (`test/bad-input/*.yaml`): malformed MachineClasses, provider
//! specs, Secrets and machine names, each fed the two ways input reaches this provider.
//!
//! - The driver, as MCM's machine controller calls it: CreateMachine, DeleteMachine,
//!   GetMachineStatus and ListMachines of the KubeVirt driver over the kube-backed SPI and
//!   an in-memory API server standing for the provider cluster. Kubeconfigs are also run
//!   through the real client factory, which builds (but does not connect) the client the
//!   sidecar would use. The calls a case names in `rejectedBy` must answer InvalidArgument
//!   with every expected message and send no request at all; the others must go through
//!   (an invalid MachineClass never blocks deleting or listing its machines).
//! - `machine-controller render` on the same input written to files: exit code 1 with the
//!   same messages. Text cases (YAML or JSON the API server would refuse to store) only
//!   reach the provider this way.
//!
//! Every case must come through without a panic, and no output may quote the credentials
//! or userData of the input. A case is a JSON merge patch over the kubernetes/ samples;
//! the format is described in test/bad-input/README.md.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use async_trait::async_trait;
use futures::FutureExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube_fake::FakeApiServer;
use mcm_provider_kubevirt::driver::{ListMachinesRequest, MachineRequest};
use mcm_provider_kubevirt::kubevirt::kube_spi::{
    ClientFactory, KubeVirtSpi, KubeconfigClientFactory,
};
use mcm_provider_kubevirt::mcm::{Machine, MachineClass, MachineSpec};
use mcm_provider_kubevirt::secret::ClusterAccess;
use mcm_provider_kubevirt::spi::SpiError;
use mcm_provider_kubevirt::{Driver, MachineCode, MachineError, MachinePlugin};
use serde::Deserialize;
use serde_json::Value;

/// Credentials and userData of the samples and the corpus: never to be printed.
const SECRET_MARKERS: [&str; 3] = [
    "replace-with-a-service-account-token",
    "hostname: sample",
    "s3cr3t",
];
const SAMPLE_MACHINE: &str = "sample-machine";
const MINIMUM_CASES: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
enum Call {
    CreateMachine,
    DeleteMachine,
    GetMachineStatus,
    ListMachines,
}

const CALLS: [Call; 4] = [
    Call::CreateMachine,
    Call::DeleteMachine,
    Call::GetMachineStatus,
    Call::ListMachines,
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    name: String,
    description: String,
    /// JSON merge patch (RFC 7386) over kubernetes/machine-class.yaml.
    #[serde(default)]
    machine_class: Option<Value>,
    /// JSON merge patch over kubernetes/secret.yaml.
    #[serde(default)]
    secret: Option<Value>,
    /// Long values, generated after patching.
    #[serde(default)]
    repeat: Vec<Repeat>,
    #[serde(default)]
    machine_name: Option<String>,
    /// The MachineClass file as text, instead of the patched sample (render only).
    #[serde(default)]
    machine_class_text: Option<String>,
    /// The Secret file as text, instead of the patched sample (render only).
    #[serde(default)]
    secret_text: Option<String>,
    /// Each must appear in the error of every rejecting call and of render.
    expect: Vec<String>,
    #[serde(default = "create_only")]
    rejected_by: Vec<Call>,
}

fn create_only() -> Vec<Call> {
    vec![Call::CreateMachine]
}

/// `text` repeated `times` at a JSON pointer into `{"machineClass": …, "secret": …}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Repeat {
    pointer: String,
    text: String,
    times: usize,
}

impl Case {
    fn is_text(&self) -> bool {
        self.machine_class_text.is_some() || self.secret_text.is_some()
    }
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load_corpus() -> Vec<(String, Case)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("test/bad-input"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let group = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let list: Vec<Case> =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        cases.extend(list.into_iter().map(|case| (group.clone(), case)));
    }
    cases
}

/// The case's MachineClass and Secret as objects: the samples with its patches applied.
fn patched_inputs(case: &Case) -> Value {
    let mut class = read_yaml(&repo("kubernetes/machine-class.yaml"));
    let mut secret = read_yaml(&repo("kubernetes/secret.yaml"));
    if let Some(patch) = &case.machine_class {
        json_patch::merge(&mut class, patch);
    }
    if let Some(patch) = &case.secret {
        json_patch::merge(&mut secret, patch);
    }
    let mut inputs = serde_json::json!({"machineClass": class, "secret": secret});
    for repeat in &case.repeat {
        let target = inputs
            .pointer_mut(&repeat.pointer)
            .unwrap_or_else(|| panic!("{}: no {}", case.name, repeat.pointer));
        *target = Value::String(repeat.text.repeat(repeat.times));
    }
    inputs
}

/// What the driver is handed: `stringData` folded into `data`, as the API server stores it.
fn driver_secret(secret: &Value) -> Secret {
    let mut secret: Secret = serde_json::from_value(secret.clone()).unwrap();
    let mut data: BTreeMap<String, ByteString> = secret.data.take().unwrap_or_default();
    for (key, value) in secret.string_data.take().unwrap_or_default() {
        data.insert(key, ByteString(value.into_bytes()));
    }
    Secret {
        data: Some(data),
        ..Default::default()
    }
}

/// The real kubeconfig checks of the sidecar's client factory, then the in-memory server.
struct CheckedClients(FakeApiServer);

#[async_trait]
impl ClientFactory for CheckedClients {
    async fn client(&self, access: &ClusterAccess) -> Result<Client, SpiError> {
        KubeconfigClientFactory::default().client(access).await?;
        Ok(self.0.client(&access.namespace))
    }
}

enum Answer {
    Rejected(String),
    Passed,
    Wrong(String),
    Panicked,
}

async fn call(
    driver: &MachinePlugin<KubeVirtSpi<CheckedClients>>,
    call: Call,
    request: &MachineRequest,
) -> Result<Result<(), MachineError>, ()> {
    let list_request = ListMachinesRequest {
        machine_class: request.machine_class.clone(),
        secret: request.secret.clone(),
    };
    let answer = match call {
        Call::CreateMachine => AssertUnwindSafe(driver.create_machine(request))
            .catch_unwind()
            .await
            .map(|r| r.map(drop)),
        Call::DeleteMachine => AssertUnwindSafe(driver.delete_machine(request))
            .catch_unwind()
            .await
            .map(|r| r.map(drop)),
        Call::GetMachineStatus => AssertUnwindSafe(driver.get_machine_status(request))
            .catch_unwind()
            .await
            .map(|r| r.map(drop)),
        Call::ListMachines => AssertUnwindSafe(driver.list_machines(&list_request))
            .catch_unwind()
            .await
            .map(|r| r.map(drop)),
    };
    answer.map_err(drop)
}

/// Each call of the driver on the case's input, judged against the case.
async fn through_the_driver(case: &Case, inputs: &Value) -> Vec<(Call, Answer)> {
    let class: MachineClass = serde_json::from_value(inputs["machineClass"].clone())
        .unwrap_or_else(|e| {
            panic!(
                "{}: the patched MachineClass does not decode: {e}",
                case.name
            )
        });
    let name = case.machine_name.as_deref().unwrap_or(SAMPLE_MACHINE);
    let mut machine = Machine::new(name, MachineSpec::default());
    machine.metadata.namespace = class.metadata.namespace.clone();
    let request = MachineRequest {
        machine,
        machine_class: class,
        secret: driver_secret(&inputs["secret"]),
    };
    let server = FakeApiServer::new();
    let driver = MachinePlugin::new(KubeVirtSpi::new(CheckedClients(server.clone())));
    let mut answers = Vec::new();
    for which in CALLS {
        server.clear_requests();
        let answer = match call(&driver, which, &request).await {
            Err(()) => Answer::Panicked,
            Ok(result) => judge(case, which, result, server.request_lines()),
        };
        answers.push((which, answer));
    }
    answers
}

fn judge(
    case: &Case,
    which: Call,
    result: Result<(), MachineError>,
    requests: Vec<String>,
) -> Answer {
    let rejected = case.rejected_by.contains(&which);
    match result {
        Err(error) if rejected => {
            let missing: Vec<&String> = case
                .expect
                .iter()
                .filter(|e| !error.message.contains(e.as_str()))
                .collect();
            if error.code != MachineCode::InvalidArgument || !missing.is_empty() {
                Answer::Wrong(format!(
                    "{:?} {:?}, missing {missing:?}",
                    error.code, error.message
                ))
            } else if !requests.is_empty() {
                Answer::Wrong(format!("sent requests before rejecting: {requests:?}"))
            } else {
                Answer::Rejected(error.message)
            }
        }
        Ok(()) if rejected => Answer::Wrong("succeeded".into()),
        // A fresh provider cluster has no VM: status is NotFound, delete and list succeed.
        Err(error) if which == Call::GetMachineStatus && error.code == MachineCode::NotFound => {
            Answer::Passed
        }
        Err(error) => Answer::Wrong(format!("{:?} {:?}", error.code, error.message)),
        Ok(()) if which == Call::GetMachineStatus => Answer::Wrong("found a VM".into()),
        Ok(()) => Answer::Passed,
    }
}

/// `machine-controller render` on the case's input written to files.
fn through_render(case: &Case, inputs: &Value, dir: &Path) -> Result<String, String> {
    let class = dir.join(format!("{}-class.yaml", case.name));
    let secret = dir.join(format!("{}-secret.yaml", case.name));
    let text = |object: &Value| serde_saphyr::to_string(object).unwrap();
    let class_text = case
        .machine_class_text
        .clone()
        .unwrap_or_else(|| text(&inputs["machineClass"]));
    let secret_text = case
        .secret_text
        .clone()
        .unwrap_or_else(|| text(&inputs["secret"]));
    std::fs::write(&class, class_text).unwrap();
    std::fs::write(&secret, secret_text).unwrap();
    let out = Command::cargo_bin("machine-controller")
        .unwrap()
        .arg("render")
        .arg("--machine-class")
        .arg(&class)
        .arg("--secret")
        .arg(&secret)
        .args([
            "--machine-name",
            case.machine_name.as_deref().unwrap_or(SAMPLE_MACHINE),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let missing: Vec<&String> = case
        .expect
        .iter()
        .filter(|e| !stderr.contains(e.as_str()))
        .collect();
    match out.status.code() {
        Some(101) => Err(format!("render panicked: {stderr}")),
        Some(1) if missing.is_empty() && stdout.is_empty() => Ok(stderr + &stdout),
        code => {
            let output: String = (stderr + &stdout).chars().take(400).collect();
            Err(format!(
                "render exit {code:?}, missing {missing:?}: {output}"
            ))
        }
    }
}

fn leaks(text: &str) -> Vec<&'static str> {
    SECRET_MARKERS
        .into_iter()
        .filter(|marker| text.contains(marker))
        .collect()
}

#[tokio::test]
async fn every_bad_input_is_rejected_naming_its_field_without_a_panic() {
    let corpus = load_corpus();
    let dir = std::env::temp_dir().join(format!("bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut failures = Vec::new();
    let mut per_group = BTreeMap::<String, usize>::new();
    let (mut rejected, mut passed, mut panics, mut renders) = (0, 0, 0, 0);
    for (group, case) in &corpus {
        *per_group.entry(group.clone()).or_default() += 1;
        let mut fail = |why: String| failures.push(format!("{group}/{}: {why}", case.name));
        assert!(
            !case.description.is_empty() && !case.expect.is_empty(),
            "{}",
            case.name
        );
        let inputs = patched_inputs(case);

        if !case.is_text() {
            for (which, answer) in through_the_driver(case, &inputs).await {
                match answer {
                    Answer::Rejected(message) => {
                        rejected += 1;
                        if !leaks(&message).is_empty() {
                            fail(format!("{which:?} quotes {:?}: {message}", leaks(&message)));
                        }
                    }
                    Answer::Passed => passed += 1,
                    Answer::Wrong(why) => fail(format!("{which:?}: {why}")),
                    Answer::Panicked => {
                        panics += 1;
                        fail(format!("{which:?} panicked"));
                    }
                }
            }
        }

        renders += 1;
        match through_render(case, &inputs, &dir) {
            Ok(output) if leaks(&output).is_empty() => {}
            Ok(output) => fail(format!("render quotes {:?}: {output}", leaks(&output))),
            Err(why) => {
                panics += usize::from(why.starts_with("render panicked"));
                fail(why);
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();

    println!(
        "bad-input corpus: {} cases ({}); driver: {rejected} calls rejected with InvalidArgument, {passed} passed through; render: {renders} runs rejected; {panics} panics; {} failures",
        corpus.len(),
        per_group
            .iter()
            .map(|(group, n)| format!("{group} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        failures.len(),
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(corpus.len() >= MINIMUM_CASES, "{} cases", corpus.len());
    let mut names: Vec<&str> = corpus.iter().map(|(_, case)| case.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), corpus.len(), "case names are unique");
}

/// The runner itself fails a case whose expectation is not met: a valid input, and an
/// expected message that the error does not contain.
#[tokio::test]
async fn a_case_that_is_not_rejected_fails() {
    let case: Case = serde_saphyr::from_str(
        "name: valid\ndescription: the sample as it is\nexpect: ['providerSpec.region']\n",
    )
    .unwrap();
    let inputs = patched_inputs(&case);
    let answers = through_the_driver(&case, &inputs).await;
    assert!(matches!(
        answers[0],
        (Call::CreateMachine, Answer::Wrong(_))
    ));
    assert!(through_render(&case, &inputs, &std::env::temp_dir()).is_err());

    let case: Case = serde_saphyr::from_str(
        "name: wrong-field\ndescription: d\nmachineClass: {providerSpec: {zone: ''}}\nexpect: ['providerSpec.region']\n",
    )
    .unwrap();
    let answers = through_the_driver(&case, &patched_inputs(&case)).await;
    assert!(matches!(
        answers[0],
        (Call::CreateMachine, Answer::Wrong(_))
    ));
    assert!(matches!(answers[1], (Call::DeleteMachine, Answer::Passed)));
}
