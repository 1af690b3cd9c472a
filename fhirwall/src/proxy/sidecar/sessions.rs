//! Open break-glass sessions, opened and closed through the admin API. Every request checks its
//! session against the policy in force (`BreakGlass::admits`), so a reload that shortens the
//! maximum duration or removes an invoker ends sessions at once.

use std::sync::Mutex;

use fhirwall_policy::{BreakGlassSession, Policy, SessionTarget};

#[derive(Default)]
pub struct BreakGlassSessions {
    open: Mutex<Vec<BreakGlassSession>>,
}

impl BreakGlassSessions {
    pub fn open(&self, session: BreakGlassSession) {
        self.lock().push(session);
    }

    /// Ends every session for `target`; returns how many.
    pub fn close(&self, target: &SessionTarget) -> usize {
        let mut open = self.lock();
        let before = open.len();
        open.retain(|s| &s.target != target);
        before - open.len()
    }

    #[must_use]
    pub fn list(&self) -> Vec<BreakGlassSession> {
        self.lock().clone()
    }

    /// The session that covers this integration or user now, if the policy admits it.
    #[must_use]
    pub fn find(
        &self,
        policy: &Policy,
        integration: Option<&str>,
        user: Option<&str>,
        now: jiff::Timestamp,
    ) -> Option<BreakGlassSession> {
        let mut open = self.lock();
        open.retain(|s| s.until > now);
        open.iter()
            .filter(|s| match &s.target {
                SessionTarget::Integration(name) => Some(name.as_str()) == integration,
                SessionTarget::User(name) => Some(name.as_str()) == user,
            })
            .find(|s| policy.break_glass.iter().any(|b| b.admits(s, now)))
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<BreakGlassSession>> {
        // Single pushes and retains cannot leave the list inconsistent: a poisoned lock is usable.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
