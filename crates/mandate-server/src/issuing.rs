//! Leases whose engine has not answered yet. The revoker leaves them
//! alone: a task that ends meanwhile has its login destroyed after the
//! engine made it, never before (which would find nothing, call it gone,
//! and leave the login the engine then makes behind).

use mandate_core::LeaseId;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// Each lease in flight, and whether the revoker skipped it meanwhile.
#[derive(Default)]
pub(crate) struct Issuing(Mutex<HashMap<LeaseId, bool>>);

/// One lease in flight; `due` is raised when it lands if the revoker
/// skipped it meanwhile (and only then: an issue costs no revoker pass).
pub(crate) struct InFlight<'a> {
    issuing: &'a Issuing,
    due: &'a Notify,
    id: LeaseId,
}

impl Issuing {
    pub(crate) fn hold<'a>(&'a self, id: &LeaseId, due: &'a Notify) -> InFlight<'a> {
        self.lock().insert(id.clone(), false);
        InFlight {
            issuing: self,
            due,
            id: id.clone(),
        }
    }

    /// Whether the revoker must skip `id` now (noting that it did).
    pub(crate) fn skip(&self, id: &LeaseId) -> bool {
        match self.lock().get_mut(id) {
            Some(skipped) => {
                *skipped = true;
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<LeaseId, bool>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.issuing.lock().remove(&self.id) == Some(true) {
            self.due.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_core::RandomId;

    #[tokio::test]
    async fn a_skipped_lease_wakes_the_revoker_when_it_lands_and_only_then() {
        let (issuing, due) = (Issuing::default(), Notify::new());
        let (a, b) = (LeaseId::from_random([1; 16]), LeaseId::from_random([2; 16]));
        let held = issuing.hold(&a, &due);
        assert!(issuing.skip(&a));
        assert!(!issuing.skip(&b), "not in flight");
        drop(held);
        assert!(!issuing.skip(&a), "landed");
        tokio::time::timeout(std::time::Duration::from_millis(100), due.notified())
            .await
            .expect("woken: it was skipped");
        drop(issuing.hold(&b, &due));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), due.notified())
                .await
                .is_err(),
            "not skipped: no wake-up"
        );
    }
}
