//! Which watch events concern objects of another controller: Machines concern their class
//! (its finalizer follows whether Machines refer to it), a class concerns its Machines
//! (they wait for its finalizer) and its Secrets (their finalizer follows the classes);
//! a Node concerns its Machines (health, node sync, a deleted Node).

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{Error, Event};

use mcm_provider_kubevirt::mcm::{Machine, MachineClass, MachineSpec};

use crate::machine::status::node_name_of;
use crate::names::MACHINE_NAME_LABEL;
use crate::secrets::referenced_secrets;

/// Names of the Machines in `store` that `concerns` accepts.
fn machines_where(store: &Store<Machine>, concerns: impl Fn(&Machine) -> bool) -> Vec<String> {
    store
        .state()
        .iter()
        .filter(|machine| concerns(machine))
        .map(|machine| machine.name_any())
        .collect()
}

/// The Machines in `store` that refer to `class`.
pub fn machines_of_class(
    store: &Store<Machine>,
    class: &MachineClass,
    namespace: &str,
) -> Vec<ObjectRef<Machine>> {
    let name = class.name_any();
    machines_where(store, |machine| machine.spec.class.name == name)
        .iter()
        .map(|machine| ObjectRef::new(machine).within(namespace))
        .collect()
}

/// The Machines in `store` that a change of `node` concerns: those whose `node` label
/// names it, and the one its machine-name label names. A Node kubelet has just registered
/// has no machine-name label yet (node sync adds it), so MCM finds its Machine by the
/// `node` label; without that the new Node's Ready condition would wait for the Machine's
/// next periodic reconcile (a minute for a Pending one).
pub fn machines_of_node(
    store: &Store<Machine>,
    node: &Node,
    namespace: &str,
) -> Vec<ObjectRef<Machine>> {
    let node_name = node.name_any();
    let mut names = machines_where(store, |machine| node_name_of(machine) == node_name);
    names.extend(node.labels().get(MACHINE_NAME_LABEL).cloned());
    names.sort();
    names.dedup();
    names
        .iter()
        .map(|name| ObjectRef::new(name).within(namespace))
        .collect()
}

/// The Secrets in `namespace` (the one the secret controller watches) that `class` refers to.
pub fn secrets_of_class(class: &MachineClass, namespace: &str) -> Vec<ObjectRef<Secret>> {
    referenced_secrets(class)
        .into_iter()
        .filter(|(secret_namespace, _)| secret_namespace == namespace)
        .map(|(_, name)| ObjectRef::new(&name).within(namespace))
        .collect()
}

/// Filters the Machine watch down to the events that can change a class's finalizer: a
/// Machine seen for the first time, one whose class changed (the old class too), and one
/// deleted, including those deleted while the watch was down (found when it relists).
///
/// MCM reconciles the class on Machine add and delete only; every Machine event would also
/// reconcile it, listing all Machines, on each of the several status writes of every Machine.
/// It works on watch events because a Machine's object alone cannot tell its deletion: the
/// API server's DELETED event carries the last stored state, finalizer and all.
#[derive(Debug, Default)]
pub struct ClassTriggers {
    /// Machine name -> the class it refers to, as last seen.
    known: HashMap<String, String>,
    /// Names listed since the watch restarted, until the listing is done.
    relisted: Option<HashSet<String>>,
}

impl ClassTriggers {
    /// The Machines (or stand-ins naming their class) whose class must be reconciled.
    pub fn on(&mut self, event: Result<Event<Machine>, Error>) -> Vec<Result<Machine, Error>> {
        let event = match event {
            Ok(event) => event,
            Err(error) => return vec![Err(error)],
        };
        match event {
            Event::Init => {
                self.relisted = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(machine) | Event::Apply(machine) => {
                let name = machine.name_any();
                if let Some(relisted) = self.relisted.as_mut() {
                    relisted.insert(name.clone());
                }
                let class = machine.spec.class.name.clone();
                match self.known.insert(name.clone(), class.clone()) {
                    Some(previous) if previous == class => Vec::new(),
                    Some(previous) => vec![Ok(stand_in(&name, &previous)), Ok(machine)],
                    None => vec![Ok(machine)],
                }
            }
            Event::Delete(machine) => {
                self.known.remove(&machine.name_any());
                vec![Ok(machine)]
            }
            Event::InitDone => {
                let relisted = self.relisted.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .known
                    .keys()
                    .filter(|name| !relisted.contains(*name))
                    .cloned()
                    .collect();
                gone.into_iter()
                    .filter_map(|name| {
                        let class = self.known.remove(&name)?;
                        Some(Ok(stand_in(&name, &class)))
                    })
                    .collect()
            }
        }
    }
}

/// The MachineClass a Machine refers to, in the controller's namespace.
pub fn class_of_machine(machine: &Machine, namespace: &str) -> Option<ObjectRef<MachineClass>> {
    let name = &machine.spec.class.name;
    (!name.is_empty()).then(|| ObjectRef::new(name).within(namespace))
}

/// A Machine that carries only what [`class_of_machine`] reads.
fn stand_in(name: &str, class: &str) -> Machine {
    let mut spec = MachineSpec::default();
    spec.class.name = class.to_owned();
    Machine::new(name, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::NODE_LABEL;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn machine(name: &str, class: &str) -> Machine {
        stand_in(name, class)
    }

    fn classes(out: Vec<Result<Machine, Error>>) -> Vec<(String, String)> {
        out.into_iter()
            .map(|m| {
                let m = m.expect("no error");
                (m.name_any(), m.spec.class.name)
            })
            .collect()
    }

    fn pair(name: &str, class: &str) -> (String, String) {
        (name.to_owned(), class.to_owned())
    }

    #[test]
    fn a_machine_concerns_the_class_it_names_in_the_controller_namespace() {
        assert_eq!(class_of_machine(&machine("m1", ""), "shoot--a"), None);
        let class = class_of_machine(&machine("m1", "small"), "shoot--a").expect("a class");
        assert_eq!(class.name, "small");
        assert_eq!(class.namespace.as_deref(), Some("shoot--a"));
    }

    #[test]
    fn first_sight_and_deletion_trigger_but_other_writes_do_not() {
        let mut triggers = ClassTriggers::default();
        assert_eq!(
            classes(triggers.on(Ok(Event::Apply(machine("m1", "small"))))),
            [pair("m1", "small")]
        );
        // Status, label and finalizer writes, the deletionTimestamp among them, keep the
        // class and the Machine: nothing to reconcile.
        let mut terminating = machine("m1", "small");
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        terminating.metadata.finalizers = Some(vec![
            "machine.sapcloud.io/machine-controller-manager".into(),
        ]);
        assert!(
            triggers
                .on(Ok(Event::Apply(terminating.clone())))
                .is_empty()
        );
        // The DELETED event carries that same last state, finalizer and all.
        assert_eq!(
            classes(triggers.on(Ok(Event::Delete(terminating)))),
            [pair("m1", "small")]
        );
        // A new Machine of the same name is new again.
        assert_eq!(
            classes(triggers.on(Ok(Event::Apply(machine("m1", "small"))))),
            [pair("m1", "small")]
        );
    }

    #[test]
    fn a_class_change_concerns_the_old_class_and_the_new() {
        let mut triggers = ClassTriggers::default();
        triggers.on(Ok(Event::Apply(machine("m1", "small"))));
        assert_eq!(
            classes(triggers.on(Ok(Event::Apply(machine("m1", "large"))))),
            [pair("m1", "small"), pair("m1", "large")]
        );
    }

    #[test]
    fn machines_gone_while_the_watch_was_down_are_found_at_the_relist() {
        let mut triggers = ClassTriggers::default();
        triggers.on(Ok(Event::Init));
        assert_eq!(
            classes(triggers.on(Ok(Event::InitApply(machine("m1", "small"))))),
            [pair("m1", "small")]
        );
        triggers.on(Ok(Event::InitApply(machine("m2", "large"))));
        assert!(triggers.on(Ok(Event::InitDone)).is_empty());

        // The watch restarts; m2 was deleted meanwhile and its DELETED event lost.
        triggers.on(Ok(Event::Init));
        assert!(
            triggers
                .on(Ok(Event::InitApply(machine("m1", "small"))))
                .is_empty()
        );
        assert_eq!(
            classes(triggers.on(Ok(Event::InitDone))),
            [pair("m2", "large")]
        );
        // Gone once, reported once.
        triggers.on(Ok(Event::Init));
        triggers.on(Ok(Event::InitApply(machine("m1", "small"))));
        assert!(triggers.on(Ok(Event::InitDone)).is_empty());
    }

    #[test]
    fn a_class_concerns_the_machines_that_refer_to_it() {
        let (store, mut writer) = kube::runtime::reflector::store::<Machine>();
        for (name, class) in [("m1", "small"), ("m2", "large"), ("m3", "small")] {
            writer.apply_watcher_event(&Event::Apply(machine(name, class)));
        }
        let class: MachineClass = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "small", "namespace": "shoot--a"},
        }))
        .expect("a class");
        let mut names: Vec<String> = machines_of_class(&store, &class, "shoot--a")
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(names, ["m1", "m3"]);
    }

    #[test]
    fn a_node_concerns_the_machines_that_name_it_and_the_one_it_names() {
        let (store, mut writer) = kube::runtime::reflector::store::<Machine>();
        for (name, node) in [("m1", Some("n1")), ("m2", None), ("m3", Some("n3"))] {
            let mut machine = machine(name, "small");
            if let Some(node) = node {
                machine.metadata.labels = Some([(NODE_LABEL.to_owned(), node.to_owned())].into());
            }
            writer.apply_watcher_event(&Event::Apply(machine));
        }
        let names = |node: &Node| -> Vec<String> {
            machines_of_node(&store, node, "shoot--a")
                .into_iter()
                .inspect(|r| assert_eq!(r.namespace.as_deref(), Some("shoot--a")))
                .map(|r| r.name)
                .collect()
        };
        // Just registered: found by the Machine's `node` label.
        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        assert_eq!(names(&node), ["m1"]);
        // Synced: its machine-name label counts too, once.
        node.metadata.labels = Some([(MACHINE_NAME_LABEL.to_owned(), "m1".to_owned())].into());
        assert_eq!(names(&node), ["m1"]);
        node.metadata.labels = Some([(MACHINE_NAME_LABEL.to_owned(), "m2".to_owned())].into());
        assert_eq!(names(&node), ["m1", "m2"]);
        node.metadata.name = Some("unknown".into());
        node.metadata.labels = None;
        assert!(names(&node).is_empty());
    }

    #[test]
    fn secrets_of_a_class_are_those_in_the_watched_namespace() {
        let class: MachineClass = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "small", "namespace": "shoot--a"},
            "secretRef": {"name": "cloud", "namespace": "shoot--a"},
            "credentialsSecretRef": {"name": "elsewhere", "namespace": "garden"},
        }))
        .expect("a class");
        let secrets = secrets_of_class(&class, "shoot--a");
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].name, "cloud");
        assert_eq!(secrets[0].namespace.as_deref(), Some("shoot--a"));
    }
}
