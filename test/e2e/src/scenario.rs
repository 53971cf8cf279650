//! Running a scenario so that its namespace is removed however it ends.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt;

use crate::bed::Bed;

/// Runs `scenario` in a fresh namespace (see [`Bed::new`]; skipped without
/// `E2E_KUBECONFIG`), prints how long it took, and tears the namespace down even when
/// the scenario panics, before passing the panic on.
pub async fn with_bed(name: &str, scenario: impl AsyncFnOnce(&Bed)) {
    let Some(bed) = Bed::new(name).await else {
        return;
    };
    let started = Instant::now();
    let outcome = AssertUnwindSafe(scenario(&bed)).catch_unwind().await;
    eprintln!("{name}: scenario took {:?}", started.elapsed());
    bed.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
