//! `machine-controller render` as a user runs it, on the kubernetes/ samples; bad input is
//! the corpus of `tests/bad_input.rs`.

use std::path::PathBuf;

use assert_cmd::Command;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn render(class: &PathBuf, secret: &PathBuf, name: &str, extra: &[&str]) -> std::process::Output {
    Command::cargo_bin("machine-controller")
        .unwrap()
        .arg("render")
        .arg("--machine-class")
        .arg(class)
        .arg("--secret")
        .arg(secret)
        .args(["--machine-name", name])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn sample_renders_a_vm_and_a_redacted_secret() {
    let out = render(
        &repo("kubernetes/machine-class.yaml"),
        &repo("kubernetes/secret.yaml"),
        "sample-machine",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("kind: VirtualMachine"), "{text}");
    assert!(text.contains("namespace: shoot--dev--kubevirt"), "{text}");
    assert!(text.contains("runStrategy: Always"), "{text}");
    assert!(text.contains("userdata: \"<redacted: "), "{text}");
    assert!(!text.contains("hostname: sample"), "{text}");
    assert!(
        !text.contains("replace-with-a-service-account-token"),
        "{text}"
    );
}

#[test]
fn secret_data_is_printed_only_on_request() {
    let out = render(
        &repo("kubernetes/machine-class.yaml"),
        &repo("kubernetes/secret.yaml"),
        "sample-machine",
        &["--include-secret-data"],
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\n  userdata: "), "{text}");
    assert!(!text.contains("<redacted"), "{text}");
}

#[test]
fn schema_command_prints_the_provider_spec_schema() {
    let out = Command::cargo_bin("machine-controller")
        .unwrap()
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema["properties"]["rootVolume"].is_object(), "{schema}");
}
