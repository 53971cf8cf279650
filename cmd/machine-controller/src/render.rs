//! `machine-controller render`: the VirtualMachine and userdata Secret CreateMachine would
//! write for a MachineClass and Secret, without any cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use mcm_provider_kubevirt::driver::create_request;
use mcm_provider_kubevirt::kubevirt::vm::compose_machine;
use mcm_provider_kubevirt::mcm::MachineClass;
use mcm_provider_kubevirt::secret::withheld_yaml_error;

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// YAML file with a machine.sapcloud.io/v1alpha1 MachineClass.
    #[arg(long, value_name = "FILE")]
    pub machine_class: PathBuf,
    /// YAML file with the provider Secret (`data` or `stringData`: kubeconfig, userData).
    #[arg(long, value_name = "FILE")]
    pub secret: PathBuf,
    /// Name of the Machine, which the VM and its node are named after.
    #[arg(long, value_name = "NAME")]
    pub machine_name: String,
    /// Print the userdata Secret's data; by default it is redacted, as it holds credentials.
    #[arg(long)]
    pub include_secret_data: bool,
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))
}

/// `stringData` is what people write by hand; the API server folds it into `data`.
fn merged_secret_data(mut secret: Secret) -> Secret {
    let mut data: BTreeMap<String, ByteString> = secret.data.take().unwrap_or_default();
    for (key, value) in secret.string_data.take().unwrap_or_default() {
        data.insert(key, ByteString(value.into_bytes()));
    }
    secret.data = Some(data);
    secret
}

pub fn render(args: &RenderArgs) -> Result<String> {
    let class: MachineClass =
        serde_saphyr::from_str(&read_text(&args.machine_class, "MachineClass")?)
            .with_context(|| format!("{} is not a MachineClass", args.machine_class.display()))?;
    let secret: Secret =
        serde_saphyr::from_str(&read_text(&args.secret, "Secret")?).map_err(|error| {
            anyhow::anyhow!(
                "{} is not a Secret ({})",
                args.secret.display(),
                withheld_yaml_error(&error)
            )
        })?;
    let secret = merged_secret_data(secret);

    let request = create_request(&args.machine_name, &class, &secret)
        .map_err(|errors| anyhow::anyhow!("invalid input: {errors}"))?;
    let mut composed =
        compose_machine(&request).map_err(|e| anyhow::anyhow!("invalid input: {e}"))?;
    if !args.include_secret_data {
        // Shown as stringData so the placeholder reads as text, not as base64.
        let data = composed.user_data_secret.data.take().unwrap_or_default();
        let redacted = data
            .into_iter()
            .map(|(key, value)| (key, format!("<redacted: {} bytes>", value.0.len())))
            .collect();
        composed.user_data_secret.string_data = Some(redacted);
    }
    let vm = serde_saphyr::to_string(&composed.vm).context("cannot print the VirtualMachine")?;
    let secret =
        serde_saphyr::to_string(&composed.user_data_secret).context("cannot print the Secret")?;
    Ok(format!("---\n{vm}---\n{secret}"))
}
