//! A machine's effective timeouts and health rules: its own `spec` (MCM's inlined
//! MachineConfiguration) over the flags, and for creation the Gardener annotation first.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use mcm_provider_kubevirt::mcm::Machine;
use serde_json::Value;
use tracing::warn;

use crate::names::EFFECTIVE_CREATION_TIMEOUT_ANNOTATION;
use crate::runtime::options::{Options, split_conditions};
use crate::util::go_duration::parse_go_duration;

fn spec_duration(machine: &Machine, field: &str) -> Option<Duration> {
    let text = machine.spec.extra.get(field)?.as_str()?;
    match parse_go_duration(text) {
        Ok(duration) => Some(duration),
        Err(error) => {
            warn!(
                machine = machine.metadata.name.as_deref().unwrap_or_default(),
                "spec.{field}: {error}; using the flag"
            );
            None
        }
    }
}

pub fn creation_timeout(machine: &Machine, options: &Options) -> Duration {
    let annotated = machine
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EFFECTIVE_CREATION_TIMEOUT_ANNOTATION))
        .and_then(|text| parse_go_duration(text).ok());
    annotated
        .or_else(|| spec_duration(machine, "creationTimeout"))
        .unwrap_or(options.machines.machine_creation_timeout)
}

pub fn health_timeout(machine: &Machine, options: &Options) -> Duration {
    spec_duration(machine, "healthTimeout").unwrap_or(options.machines.machine_health_timeout)
}

/// MCM's getEffectiveInPlaceUpdateTimeout: `spec.inPlaceUpdateTimeout` over the flag.
pub fn in_place_update_timeout(machine: &Machine, options: &Options) -> Duration {
    spec_duration(machine, "inPlaceUpdateTimeout")
        .unwrap_or(options.machines.machine_inplace_update_timeout)
}

pub fn drain_timeout(machine: &Machine, options: &Options) -> Duration {
    spec_duration(machine, "drainTimeout").unwrap_or(options.machines.machine_drain_timeout)
}

/// How long a preservation lasts: `spec.machinePreserveTimeout` over the flag.
pub fn preserve_timeout(machine: &Machine, options: &Options) -> Duration {
    spec_duration(machine, "machinePreserveTimeout")
        .unwrap_or(options.machines.machine_preserve_timeout)
}

pub fn max_evict_retries(machine: &Machine, options: &Options) -> i64 {
    machine
        .spec
        .extra
        .get("maxEvictRetries")
        .and_then(Value::as_i64)
        .unwrap_or(i64::from(options.machines.machine_max_evict_retries))
}

pub fn health_timeout_disabled(machine: &Machine) -> bool {
    machine
        .spec
        .extra
        .get("disableHealthTimeout")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

pub fn node_conditions(machine: &Machine, options: &Options) -> Vec<String> {
    match machine
        .spec
        .extra
        .get("nodeConditions")
        .and_then(Value::as_str)
    {
        Some(list) => split_conditions(list),
        None => options.node_condition_types(),
    }
}

/// Time since a timestamp, zero for timestamps in the future or missing.
pub fn elapsed_since(time: Option<&Time>) -> Duration {
    elapsed_until(time, Timestamp::now())
}

/// Time from a timestamp to `now`, zero for timestamps after it or missing.
pub fn elapsed_until(time: Option<&Time>, now: Timestamp) -> Duration {
    time.and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn machine(extra: Value, annotations: &[(&str, &str)]) -> Machine {
        let mut machine = Machine::new("m", Default::default());
        machine.spec.extra = serde_json::from_value(extra).unwrap();
        if !annotations.is_empty() {
            machine.metadata.annotations = Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            );
        }
        machine
    }

    #[test]
    fn machine_fields_override_flags_and_annotation_overrides_both() {
        let options = Options::default();
        let m = machine(json!({}), &[]);
        assert_eq!(
            creation_timeout(&m, &options),
            options.machines.machine_creation_timeout
        );
        assert_eq!(
            in_place_update_timeout(&m, &options),
            Duration::from_secs(20 * 60)
        );
        let m = machine(
            json!({"creationTimeout": "5m", "healthTimeout": "1m", "drainTimeout": "30m", "inPlaceUpdateTimeout": "45m",
                   "maxEvictRetries": 3, "nodeConditions": "A,B", "disableHealthTimeout": true}),
            &[],
        );
        assert_eq!(creation_timeout(&m, &options), Duration::from_secs(300));
        assert_eq!(health_timeout(&m, &options), Duration::from_secs(60));
        assert_eq!(drain_timeout(&m, &options), Duration::from_secs(1800));
        assert_eq!(
            in_place_update_timeout(&m, &options),
            Duration::from_secs(2700)
        );
        assert_eq!(max_evict_retries(&m, &options), 3);
        assert_eq!(node_conditions(&m, &options), ["A", "B"]);
        assert!(health_timeout_disabled(&m));
        let m = machine(
            json!({"creationTimeout": "5m"}),
            &[(EFFECTIVE_CREATION_TIMEOUT_ANNOTATION, "7m")],
        );
        assert_eq!(creation_timeout(&m, &options), Duration::from_secs(420));
    }

    #[test]
    fn unparseable_machine_durations_fall_back_to_flags() {
        let options = Options::default();
        let m = machine(json!({"healthTimeout": "ten minutes"}), &[]);
        assert_eq!(
            health_timeout(&m, &options),
            options.machines.machine_health_timeout
        );
    }
}
