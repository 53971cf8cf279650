//! Go-style command lines as the Go sidecar took them: pflag normalizes `_` to `-` in flag
//! names (MCM sets the word-separator normalization), and klog's own flags were accepted.
//! klog's flags have no meaning here (logs go to stderr, `--v` and `--logging-format` set
//! them up), so they are dropped with a deprecation warning instead of failing the start
//! of a Deployment that still passes them.

use std::ffi::OsString;

/// klog flags that take a value (`--log-dir=/x` or `--log-dir /x`).
const KLOG_VALUE_FLAGS: &[&str] = &[
    "log-dir",
    "log-file",
    "log-file-max-size",
    "stderrthreshold",
    "log-backtrace-at",
];

/// klog flags that are booleans (`--logtostderr` or `--logtostderr=false`; pflag never
/// takes a boolean's value from the next argument).
const KLOG_BOOL_FLAGS: &[&str] = &[
    "logtostderr",
    "alsologtostderr",
    "add-dir-header",
    "one-output",
    "skip-headers",
    "skip-log-headers",
];

/// The arguments with flag names normalized and klog's flags removed, and the names of
/// the removed flags (to warn about once logging is set up).
pub fn normalize(args: Vec<OsString>) -> (Vec<OsString>, Vec<String>) {
    let mut kept = Vec::with_capacity(args.len());
    let mut dropped = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Flags are ASCII; anything else (a value, a path) passes as it is.
        let Some(text) = arg.to_str() else {
            kept.push(arg);
            continue;
        };
        if text == "--" {
            kept.push(arg);
            kept.extend(args);
            break;
        }
        let Some(flag) = text.strip_prefix("--") else {
            kept.push(arg);
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name.replace('_', "-"), Some(value)),
            None => (flag.replace('_', "-"), None),
        };
        if KLOG_BOOL_FLAGS.contains(&name.as_str()) {
            dropped.push(name);
            continue;
        }
        if KLOG_VALUE_FLAGS.contains(&name.as_str()) {
            if value.is_none() {
                args.next();
            }
            dropped.push(name);
            continue;
        }
        kept.push(match value {
            Some(value) => format!("--{name}={value}").into(),
            None => format!("--{name}").into(),
        });
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let (kept, dropped) = normalize(args.iter().map(OsString::from).collect());
        let kept = kept
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        (kept, dropped)
    }

    #[test]
    fn underscores_in_flag_names_become_dashes_but_values_keep_theirs() {
        let (kept, dropped) = run(&[
            "machine-controller",
            "--machine_creation_timeout=20m",
            "--namespace",
            "shoot_ns",
            "--target-kubeconfig=/a_b",
        ]);
        assert_eq!(
            kept,
            [
                "machine-controller",
                "--machine-creation-timeout=20m",
                "--namespace",
                "shoot_ns",
                "--target-kubeconfig=/a_b"
            ]
        );
        assert!(dropped.is_empty());
    }

    #[test]
    fn klog_flags_are_dropped_with_their_values() {
        let (kept, dropped) = run(&[
            "machine-controller",
            "--logtostderr",
            "--alsologtostderr=false",
            "--log_dir",
            "/var/log",
            "--stderrthreshold=INFO",
            "--v=3",
            "--skip_headers",
            "--namespace=ns",
        ]);
        assert_eq!(kept, ["machine-controller", "--v=3", "--namespace=ns"]);
        assert_eq!(
            dropped,
            [
                "logtostderr",
                "alsologtostderr",
                "log-dir",
                "stderrthreshold",
                "skip-headers"
            ]
        );
    }

    #[test]
    fn nothing_after_a_double_dash_is_touched() {
        let (kept, _) = run(&["machine-controller", "--", "--log_dir", "x"]);
        assert_eq!(kept, ["machine-controller", "--", "--log_dir", "x"]);
    }
}
