//! `machine-controller render` as a user runs it, on the kubernetes/ samples and on bad input.

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
fn bad_input_fails_with_the_field_named() {
    let dir = std::env::temp_dir().join(format!("render-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let class = dir.join("class.yaml");
    let sample = std::fs::read_to_string(repo("kubernetes/machine-class.yaml")).unwrap();
    std::fs::write(
        &class,
        sample.replace("  zone: local-1\n", "  zone: local-1\n  zoen: typo\n"),
    )
    .unwrap();
    let out = render(&class, &repo("kubernetes/secret.yaml"), "m", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("providerSpec.zoen: Unknown field"), "{err}");

    let secret = dir.join("secret.yaml");
    std::fs::write(&secret, "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData:\n  kubeconfig: 'token: s3cr3t ['\n").unwrap();
    let out = render(&repo("kubernetes/machine-class.yaml"), &secret, "m", &[]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("secret.data.kubeconfig: Invalid value"),
        "{err}"
    );
    assert!(
        err.contains("secret.data.userData: Required value"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");

    let out = render(
        &repo("kubernetes/machine-class.yaml"),
        &repo("kubernetes/secret.yaml"),
        "Bad_Name",
        &[],
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--machine-name"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
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
