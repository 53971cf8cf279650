//! Messages and services generated from `proto/cmi.proto`.
//!
//! The requests carry the provider Secret's kubeconfig and userData, so their `Debug`
//! shows only the machine, the sizes and the secret keys.

use std::fmt;

tonic::include_proto!("cmi.v1");

/// The secret keys, never their values.
fn keys(secrets: &std::collections::HashMap<String, Vec<u8>>) -> Vec<&String> {
    let mut keys: Vec<&String> = secrets.keys().collect();
    keys.sort();
    keys
}

macro_rules! redacted_debug {
    ($message:ident { $($field:ident),* }) => {
        impl fmt::Debug for $message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($message))
                    $(.field(stringify!($field), &self.$field))*
                    .field("provider_spec_bytes", &self.provider_spec.len())
                    .field("secret_keys", &keys(&self.secrets))
                    .finish()
            }
        }
    };
}

redacted_debug!(CreateMachineRequest { machine_name });
redacted_debug!(DeleteMachineRequest {
    machine_name,
    provider_id
});
redacted_debug!(GetMachineStatusRequest {
    machine_name,
    provider_id
});
redacted_debug!(ListMachinesRequest {});
redacted_debug!(ShutDownMachineRequest {
    machine_name,
    provider_id
});
redacted_debug!(InitializeMachineRequest { machine_name });
