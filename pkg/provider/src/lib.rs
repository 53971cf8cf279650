//! KubeVirt provider for the Gardener machine-controller-manager.
//!
//! - [`driver`]: MCM's driver interface and the KubeVirt driver, answering with [`codes`].
//! - [`provider_spec`] and [`validation`]: the MachineClass `providerSpec`, decoded strictly.
//! - [`secret`]: the provider secret (kubeconfig of the KubeVirt cluster, userData).
//! - [`spi`]: the provider-cluster operations behind the driver, mockable.
//! - [`kubevirt`]: VM composition and the kube-backed SPI.
//! - [`mcm`]: the `machine.sapcloud.io/v1alpha1` objects.

pub(crate) mod client_stack;
pub mod codes;
pub mod driver;
pub mod field;
pub mod kubevirt;
pub mod mcm;
pub mod provider_spec;
pub mod secret;
pub mod spi;
pub mod validation;

#[cfg(test)]
pub(crate) mod testing;

pub use codes::{MachineCode, MachineError};
pub use driver::{Driver, MachinePlugin};
pub use kubevirt::kube_spi::{KubeVirtSpi, KubeconfigClientFactory};
pub use provider_spec::KubeVirtProviderSpec;

/// The driver as the sidecar runs it: KubeVirt SPI with clients from the provider secret.
pub fn kubevirt_driver() -> MachinePlugin<KubeVirtSpi<KubeconfigClientFactory>> {
    MachinePlugin::new(KubeVirtSpi::new(KubeconfigClientFactory::default()))
}

/// The same driver, every request to a provider cluster reported to `observer`.
pub fn observed_kubevirt_driver(
    observer: std::sync::Arc<dyn kubevirt::api_calls::ApiCallObserver>,
) -> MachinePlugin<KubeVirtSpi<KubeconfigClientFactory>> {
    MachinePlugin::new(KubeVirtSpi::new(KubeconfigClientFactory::observed(
        observer,
    )))
}
