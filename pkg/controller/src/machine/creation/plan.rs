//! The creation decisions, without I/O: what GetMachineStatus's answer means for the
//! flow, what the Machine must record, and the statuses MCM writes on the way.

use std::time::Duration;

use k8s_openapi::api::core::v1::NodeAddress;
use k8s_openapi::jiff::Timestamp;

use mcm_provider_kubevirt::driver::GetMachineStatusResponse;
use mcm_provider_kubevirt::mcm::{CurrentStatus, LastOperation, Machine};
use mcm_provider_kubevirt::{MachineCode, MachineError};

use crate::error::retry;
use crate::machine::settings::elapsed_until;
use crate::machine::status::{current_status_at, last_operation_at, node_name_of, phase_of};
use crate::names::{MACHINE_PRIORITY_ANNOTATION, NODE_LABEL, operation, phase, state, step};

/// Where a VM is: its node name, providerID and the addresses the driver reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmIdentity {
    pub node_name: String,
    pub provider_id: String,
    pub addresses: Vec<NodeAddress>,
}

/// MCM's `buildAddressStatus`: the addresses recorded before (CreateMachine and
/// InitializeMachine report some only once), those reported now, and the node name as
/// Hostname; deduplicated and sorted by type then address, as MCM compares them.
pub fn address_status(
    recorded: &[NodeAddress],
    reported: &[NodeAddress],
    node_name: &str,
) -> Vec<NodeAddress> {
    let hostname = (!node_name.is_empty()).then(|| NodeAddress {
        type_: "Hostname".to_owned(),
        address: node_name.to_owned(),
    });
    let mut addresses: Vec<NodeAddress> = Vec::new();
    for address in recorded.iter().chain(reported).cloned().chain(hostname) {
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    addresses.sort_by_key(|a| format!("{}{}", a.type_, a.address));
    addresses
}

/// What to do after GetMachineStatus.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    /// No VM and no providerID recorded: CreateMachine, then initialize.
    Create,
    /// The VM is known; record it, and initialize it first when `initialize`.
    Record { vm: VmIdentity, initialize: bool },
    /// The driver failed: record the error (MCM's `machineCreateErrorHandler`).
    Fail(MachineError),
}

/// MCM's reading of GetMachineStatus in `triggerCreationFlow`.
pub fn after_status(
    machine: &Machine,
    found: Result<GetMachineStatusResponse, MachineError>,
) -> NextStep {
    match found {
        Ok(found) => NextStep::Record {
            vm: VmIdentity {
                node_name: found.node_name,
                provider_id: found.provider_id,
                addresses: found.addresses,
            },
            initialize: false,
        },
        Err(error)
            if matches!(
                error.code,
                MachineCode::NotFound | MachineCode::Unimplemented
            ) =>
        {
            let known = machine.spec.provider_id.clone().unwrap_or_default();
            if known.is_empty() {
                NextStep::Create
            } else {
                NextStep::Record {
                    vm: VmIdentity {
                        node_name: node_name_of(machine),
                        provider_id: known,
                        addresses: Vec::new(),
                    },
                    initialize: false,
                }
            }
        }
        Err(error) if error.code == MachineCode::Uninitialized => {
            let found = error.uninitialized.clone().unwrap_or_default();
            NextStep::Record {
                vm: VmIdentity {
                    node_name: found.node_name,
                    provider_id: found.provider_id,
                    addresses: found.addresses,
                },
                initialize: true,
            }
        }
        Err(error) => NextStep::Fail(error),
    }
}

/// The Machine with its `node` label (with a target cluster), the default priority
/// annotation and `spec.providerID` set where missing; `None` when all are in place.
pub fn with_vm_recorded(machine: &Machine, vm: &VmIdentity, has_target: bool) -> Option<Machine> {
    let mut updated = machine.clone();
    let mut changed = false;
    let labels = updated.metadata.labels.get_or_insert_with(Default::default);
    if has_target && !labels.contains_key(NODE_LABEL) {
        labels.insert(NODE_LABEL.to_owned(), vm.node_name.clone());
        changed = true;
    }
    let annotations = updated
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    if annotations
        .get(MACHINE_PRIORITY_ANNOTATION)
        .is_none_or(String::is_empty)
    {
        annotations.insert(MACHINE_PRIORITY_ANNOTATION.to_owned(), "3".to_owned());
        changed = true;
    }
    if updated
        .spec
        .provider_id
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        updated.spec.provider_id = Some(vm.provider_id.clone());
        changed = true;
    }
    changed.then_some(updated)
}

/// A VM without node name (where a target cluster needs one) or providerID cannot be tracked.
pub fn is_incomplete(vm: &VmIdentity, has_target: bool) -> bool {
    (has_target && vm.node_name.is_empty()) || vm.provider_id.is_empty()
}

/// Failed, once the creation timeout has passed since the Machine was created; until
/// then CrashLoopBackOff, which the creation flow retries.
pub fn failure_phase(
    machine: &Machine,
    creation_timeout: Duration,
    now: Timestamp,
) -> &'static str {
    let age = elapsed_until(machine.metadata.creation_timestamp.as_ref(), now);
    if age > creation_timeout {
        phase::FAILED
    } else {
        phase::CRASH_LOOP_BACK_OFF
    }
}

/// The status MCM writes for a failed create or status call.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureStatus {
    pub operation: LastOperation,
    pub current: CurrentStatus,
    pub last_known_state: Option<String>,
}

/// MCM's `machineCreateErrorHandler`: the error with its code, the failure phase, and the
/// last known state kept only for errors MCM retries soon.
pub fn create_failure(
    machine: &Machine,
    error: &MachineError,
    failure_phase: &str,
    now: Timestamp,
) -> FailureStatus {
    let keep_state =
        error.code == MachineCode::ResourceExhausted || retry::is_transient(error.code);
    let last_known_state = machine
        .status
        .as_ref()
        .and_then(|s| s.last_known_state.clone())
        .filter(|_| keep_state);
    let mut operation = last_operation_at(
        now,
        format!("Cloud provider message - {error}"),
        state::FAILED,
        operation::CREATE,
    );
    operation.error_code = Some(error.code.name().to_owned());
    FailureStatus {
        operation,
        current: current_status_at(now, failure_phase, false),
        last_known_state,
    }
}

/// A failed InitializeMachine: the instance-initialization step with the error's code.
pub fn initialize_failure(
    error: &MachineError,
    failure_phase: &str,
    now: Timestamp,
) -> (LastOperation, CurrentStatus) {
    let mut operation = last_operation_at(
        now,
        format!("Provider error: {error}. {}", step::INSTANCE_INITIALIZATION),
        state::FAILED,
        operation::CREATE,
    );
    operation.error_code = Some(error.code.name().to_owned());
    (operation, current_status_at(now, failure_phase, false))
}

/// The status of a machine whose VM exists: Pending until its Node joins, or Available
/// at once when there is no target cluster to join; `None` when it is past that.
pub fn created_status(
    machine: &Machine,
    has_target: bool,
    now: Timestamp,
) -> Option<(LastOperation, CurrentStatus)> {
    let current = phase_of(machine);
    if !current.is_empty() && current != phase::CRASH_LOOP_BACK_OFF {
        return None;
    }
    Some(if has_target {
        (
            last_operation_at(
                now,
                "Creating machine on cloud provider",
                state::PROCESSING,
                operation::CREATE,
            ),
            current_status_at(now, phase::PENDING, true),
        )
    } else {
        (
            last_operation_at(
                now,
                "Created machine on cloud provider",
                state::SUCCESSFUL,
                operation::CREATE,
            ),
            current_status_at(now, phase::AVAILABLE, false),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::SignedDuration;
    use mcm_provider_kubevirt::mcm::MachineStatus;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn machine(provider_id: Option<&str>) -> Machine {
        let mut machine = Machine::new("m1", Default::default());
        machine.spec.provider_id = provider_id.map(str::to_owned);
        machine
    }

    fn status_answer(node: &str, id: &str) -> GetMachineStatusResponse {
        GetMachineStatusResponse {
            node_name: node.into(),
            provider_id: id.into(),
            addresses: vec![],
        }
    }

    #[test]
    fn a_missing_vm_is_created_unless_a_provider_id_is_recorded() {
        let missing = || Err(MachineError::new(MachineCode::NotFound, "no VM"));
        assert_eq!(after_status(&machine(None), missing()), NextStep::Create);
        let recorded = after_status(&machine(Some("kubevirt://m1")), missing());
        assert_eq!(
            recorded,
            NextStep::Record {
                vm: VmIdentity {
                    node_name: String::new(),
                    provider_id: "kubevirt://m1".into(),
                    addresses: vec![],
                },
                initialize: false
            }
        );
    }

    #[test]
    fn an_uninitialized_vm_is_recorded_and_initialized() {
        let mut error = MachineError::new(MachineCode::Uninitialized, "not yet");
        error.uninitialized = Some(Box::new(status_answer("n1", "kubevirt://m1")));
        match after_status(&machine(None), Err(error)) {
            NextStep::Record { vm, initialize } => {
                assert_eq!(vm.node_name, "n1");
                assert!(initialize);
            }
            other => panic!("{other:?}"),
        }
        let found = after_status(&machine(None), Ok(status_answer("n1", "kubevirt://m1")));
        assert!(matches!(
            found,
            NextStep::Record {
                initialize: false,
                ..
            }
        ));
        let failed = after_status(
            &machine(None),
            Err(MachineError::new(MachineCode::Internal, "x")),
        );
        assert!(matches!(failed, NextStep::Fail(e) if e.code == MachineCode::Internal));
    }

    #[test]
    fn recording_the_vm_touches_only_what_is_missing() {
        let vm = VmIdentity {
            node_name: "n1".into(),
            provider_id: "kubevirt://m1".into(),
            addresses: vec![],
        };
        let updated = with_vm_recorded(&machine(None), &vm, true).unwrap();
        assert_eq!(updated.metadata.labels.as_ref().unwrap()[NODE_LABEL], "n1");
        assert_eq!(
            updated.metadata.annotations.as_ref().unwrap()[MACHINE_PRIORITY_ANNOTATION],
            "3"
        );
        assert_eq!(updated.spec.provider_id.as_deref(), Some("kubevirt://m1"));
        assert_eq!(with_vm_recorded(&updated, &vm, true), None);
        let without_target = with_vm_recorded(&machine(None), &vm, false).unwrap();
        assert!(
            !without_target
                .metadata
                .labels
                .unwrap()
                .contains_key(NODE_LABEL)
        );
        assert!(is_incomplete(&VmIdentity::default(), false));
        assert!(is_incomplete(
            &VmIdentity {
                node_name: String::new(),
                provider_id: "p".into(),
                addresses: vec![],
            },
            true
        ));
        assert!(!is_incomplete(
            &VmIdentity {
                node_name: String::new(),
                provider_id: "p".into(),
                addresses: vec![],
            },
            false
        ));
    }

    #[test]
    fn addresses_keep_what_was_recorded_add_the_hostname_and_sort_as_mcm() {
        let address = |t: &str, a: &str| NodeAddress {
            type_: t.into(),
            address: a.into(),
        };
        let recorded = [address("InternalIP", "10.0.0.9")];
        let reported = [
            address("InternalIP", "10.0.0.7"),
            address("InternalIP", "10.0.0.9"),
            address("ExternalIP", "192.0.2.1"),
        ];
        assert_eq!(
            address_status(&recorded, &reported, "m1"),
            [
                address("ExternalIP", "192.0.2.1"),
                address("Hostname", "m1"),
                address("InternalIP", "10.0.0.7"),
                address("InternalIP", "10.0.0.9"),
            ]
        );
        assert_eq!(address_status(&[], &[], ""), []);
    }

    #[test]
    fn create_failures_crash_loop_until_the_creation_timeout() {
        let mut m = machine(None);
        m.metadata.creation_timestamp = Some(Time(now() - SignedDuration::from_mins(5)));
        let timeout = Duration::from_secs(20 * 60);
        assert_eq!(
            failure_phase(&m, timeout, now()),
            phase::CRASH_LOOP_BACK_OFF
        );
        m.metadata.creation_timestamp = Some(Time(now() - SignedDuration::from_mins(21)));
        assert_eq!(failure_phase(&m, timeout, now()), phase::FAILED);
    }

    #[test]
    fn create_failures_keep_the_last_known_state_only_when_retried_soon() {
        let mut m = machine(None);
        m.status = Some(MachineStatus {
            last_known_state: Some("vm-state".into()),
            ..Default::default()
        });
        let transient = MachineError::new(MachineCode::Unavailable, "busy");
        let failure = create_failure(&m, &transient, phase::CRASH_LOOP_BACK_OFF, now());
        assert_eq!(failure.last_known_state.as_deref(), Some("vm-state"));
        assert_eq!(failure.operation.error_code.as_deref(), Some("Unavailable"));
        assert_eq!(failure.operation.state.as_deref(), Some(state::FAILED));
        let invalid = MachineError::new(MachineCode::InvalidArgument, "bad spec");
        assert_eq!(
            create_failure(&m, &invalid, phase::FAILED, now()).last_known_state,
            None
        );
    }

    #[test]
    fn a_created_machine_is_pending_with_a_target_and_available_without() {
        let m = machine(Some("kubevirt://m1"));
        let (_, pending) = created_status(&m, true, now()).unwrap();
        assert_eq!(pending.phase.as_deref(), Some(phase::PENDING));
        assert_eq!(pending.timeout_active, Some(true));
        let (operation, available) = created_status(&m, false, now()).unwrap();
        assert_eq!(available.phase.as_deref(), Some(phase::AVAILABLE));
        assert_eq!(operation.state.as_deref(), Some(state::SUCCESSFUL));
        let mut running = m.clone();
        running.status = Some(MachineStatus {
            current_status: Some(current_status_at(now(), phase::RUNNING, false)),
            ..Default::default()
        });
        assert_eq!(created_status(&running, true, now()), None);
    }
}
