//! `machine-controller` started as MCM's Deployment starts the sidecar: its flags, and
//! what it does when it cannot reach its API server.

use std::io::Write;

use assert_cmd::Command;

fn sidecar() -> Command {
    Command::cargo_bin("machine-controller").unwrap()
}

#[test]
fn help_lists_the_go_sidecar_flags() {
    let out = sidecar().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--control-kubeconfig",
        "--target-kubeconfig",
        "--namespace",
        "--port",
        "--address",
        "--concurrent-syncs",
        "--kube-api-qps",
        "--kube-api-burst",
        "--machine-creation-timeout",
        "--machine-health-timeout",
        "--machine-drain-timeout",
        "--machine-max-evict-retries",
        "--machine-pv-detach-timeout",
        "--machine-pv-reattach-timeout",
        "--machine-safety-orphan-vms-period",
        "--machine-safety-apiserver-statuscheck-period",
        "--machine-safety-apiserver-statuscheck-timeout",
        "--node-conditions",
        "--bootstrap-token-auth-extra-groups",
        "--resource-exhausted-retry",
        "--leader-elect",
        "--leader-elect-lease-duration",
        "--leader-elect-renew-deadline",
        "--leader-elect-retry-period",
        "--leader-elect-resource-lock",
        "--min-resync-period",
        "--controller-start-interval",
        "--profiling",
        "--v",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn unknown_flags_fail_naming_the_flag() {
    let out = sidecar()
        .arg("--machine-safety-overshooting-period=1m")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("--machine-safety-overshooting-period"),
        "{stderr}"
    );
}

#[test]
fn invalid_flag_values_fail_before_connecting() {
    let out = sidecar()
        .args(["--concurrent-syncs=0", "--target-kubeconfig=/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--concurrent-syncs"), "{stderr}");
}

/// As with Go's pflag, the last of a repeated flag wins: here the later renew deadline,
/// longer than the lease, is what validation refuses.
#[test]
fn a_repeated_flag_takes_its_last_value() {
    let out = sidecar()
        .args([
            "--leader-elect=false",
            "--leader-elect=true",
            "--leader-elect-renew-deadline=5s",
            "--leader-elect-renew-deadline=20s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("--leader-elect-renew-deadline: must be less than"),
        "{stderr}"
    );
}

/// The Go sidecar's klog flags and underscore spellings still start the sidecar: here it
/// gets as far as validating the flags, whose (underscore-spelled) renew deadline is
/// refused, and the klog flags are not what stops it.
#[test]
fn klog_flags_and_underscore_spellings_are_accepted() {
    let out = sidecar()
        .args([
            "--logtostderr",
            "--log_dir",
            "/var/log",
            "--stderrthreshold=INFO",
            "--leader_elect=true",
            "--leader_elect_renew_deadline=20s",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--leader-elect-renew-deadline: must be less than"),
        "{stderr}"
    );
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
}

/// Gardener's args, with a token-file kubeconfig pointing at a closed port: the sidecar
/// retries for MCM's 10 seconds, then exits 1 naming the unreachable server, and never
/// prints the token.
#[test]
fn gardener_args_with_an_unreachable_api_server_exit_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("mc-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "secret-token-value").unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let mut file = std::fs::File::create(&kubeconfig).unwrap();
    write!(
        file,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"https://127.0.0.1:1\"}}\nusers:\n- name: u\n  user: {{tokenFile: {}}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        token.display()
    )
    .unwrap();
    let kubeconfig = kubeconfig.display().to_string();
    let out = sidecar()
        .args([
            "--control-kubeconfig=inClusterConfig",
            &format!("--target-kubeconfig={kubeconfig}"),
            "--namespace=shoot--dev--kubevirt",
            "--port=10259",
            "--machine-creation-timeout=20m",
            "--machine-drain-timeout=2h",
            "--machine-health-timeout=10m",
            "--machine-safety-orphan-vms-period=30m",
            "--v=3",
        ])
        .output()
        .unwrap();
    // inClusterConfig outside a Pod is refused first, by name.
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--control-kubeconfig"), "{stderr}");

    let out = sidecar()
        .args([
            &format!("--control-kubeconfig={kubeconfig}"),
            &format!("--target-kubeconfig={kubeconfig}"),
            "--namespace=shoot--dev--kubevirt",
            "--v=3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("control cluster API server at https://127.0.0.1:1/ is unreachable"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-token-value"));
    std::fs::remove_dir_all(&dir).ok();
}
