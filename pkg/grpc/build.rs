//! Compiles proto/cmi.proto with the protoc of the protoc-bin-vendored crate, so building
//! needs no protoc on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // Handed to prost directly: setting PROTOC for it would take `unsafe` (set_var).
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    println!("cargo:rerun-if-changed=proto/cmi.proto");
    tonic_prost_build::configure()
        // Requests carry kubeconfigs and userData: their Debug is written by hand, redacted.
        .skip_debug([
            "cmi.v1.CreateMachineRequest",
            "cmi.v1.DeleteMachineRequest",
            "cmi.v1.GetMachineStatusRequest",
            "cmi.v1.ListMachinesRequest",
            "cmi.v1.ShutDownMachineRequest",
            "cmi.v1.InitializeMachineRequest",
        ])
        .compile_with_config(
            config,
            &["proto/cmi.proto".into()],
            &[std::path::PathBuf::from("proto"), include],
        )?;
    Ok(())
}
