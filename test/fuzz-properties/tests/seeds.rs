//! Replays the fuzz seeds (test/fuzz/seeds/<target>, including inputs that once failed)
//! and a few edge inputs through the fuzz properties, so `cargo test` keeps them holding
//! without a fuzzing toolchain. The properties panic when they fail.

use std::path::PathBuf;

type Property = fn(&[u8]);

const TARGETS: [(&str, Property); 3] = [
    ("provider_spec", fuzz_properties::provider_spec),
    ("cloud_config", fuzz_properties::cloud_config),
    ("kubeconfig", fuzz_properties::kubeconfig),
];

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn every_seed_holds_every_property_of_its_target() {
    for (target, property) in TARGETS {
        let seeds = seeds(target);
        assert!(seeds.len() >= 2, "{target} has seeds");
        for (name, input) in seeds {
            let outcome = std::panic::catch_unwind(|| property(&input));
            assert!(outcome.is_ok(), "{target}/{name} fails its property");
        }
    }
}

#[test]
fn edge_inputs_hold_every_property() {
    let edges: [&[u8]; 6] = [
        b"",
        b"\0",
        b"\0\0\0",
        b"#cloud-config\0",
        b"{}\0#cloud-config\n",
        &[0xff, 0xfe, 0x00, 0xff],
    ];
    for (target, property) in TARGETS {
        for input in edges {
            let outcome = std::panic::catch_unwind(|| property(input));
            assert!(outcome.is_ok(), "{target} on {input:?}");
        }
    }
}

/// The seeds are not vacuous: the sample decodes and carries SSH keys, so the replay goes
/// through composition and the SSH-key merge.
#[test]
fn the_sample_seed_reaches_composition() {
    let (_, sample) = seeds("provider_spec")
        .into_iter()
        .find(|(name, _)| name == "sample.json")
        .expect("the sample seed");
    let spec_end = sample.iter().position(|b| *b == 0).unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&sample[..spec_end]).unwrap();
    let spec = mcm_provider_kubevirt::provider_spec::decode_provider_spec(&raw).unwrap();
    assert!(
        !spec.ssh_keys.is_empty(),
        "the seed exercises the SSH-key merge"
    );
    let merged = mcm_provider_kubevirt::kubevirt::userdata::merge_ssh_keys(
        &sample[spec_end + 1..],
        &spec.ssh_keys,
    )
    .unwrap();
    assert!(
        String::from_utf8(merged)
            .unwrap()
            .contains("ssh_authorized_keys")
    );
}
