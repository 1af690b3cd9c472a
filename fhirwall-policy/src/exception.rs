//! Temporary widening of access: approved `Exception`s (extra scopes for one integration until
//! they expire) and `BreakGlass` policies (emergency sessions someone opens with a
//! justification; every use is alerted and audited by the caller).

use serde::{Deserialize, Serialize};

use super::grants::Scopes;

/// Extra scopes for one integration, approved by a named person, until `expires`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    pub name: String,
    /// The integration it widens.
    pub integration: String,
    /// Scopes added to the integration's own while the exception lasts.
    pub scopes: Scopes,
    /// Why, in words.
    pub reason: String,
    /// Who approved it.
    pub approver: String,
    #[serde(default)]
    pub ticket: Option<String>,
    /// Required, and in the future when the policy is loaded: no open-ended exceptions.
    pub expires: jiff::Timestamp,
}

impl Exception {
    /// Whether the exception is in force at `now` (it ends at `expires`, exclusive).
    #[must_use]
    pub fn is_live(&self, now: jiff::Timestamp) -> bool {
        now < self.expires
    }
}

/// Who may be covered by a break-glass session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invokers {
    /// Integrations whose workloads a session may cover.
    #[serde(default)]
    pub integrations: Vec<String>,
    /// Workload users (the process's user name) a session may cover, registered or not.
    #[serde(default)]
    pub users: Vec<String>,
}

/// An emergency-access policy: who may be covered, for how long at most, with how much
/// justification, and what a session grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlass {
    pub name: String,
    /// Accountable team, alerted on every use.
    pub owner: String,
    #[serde(default)]
    pub description: Option<String>,
    pub invokers: Invokers,
    /// Longest session (e.g. `4h`).
    pub max_duration: jiff::SignedDuration,
    /// Fewest characters a justification must have.
    pub min_justification: usize,
    /// Scopes a session adds. Purpose of use and the patient constraint are not checked during
    /// a session (the emergency is the purpose; its code is BTG).
    pub scopes: Scopes,
}

/// What a session covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionTarget {
    Integration(String),
    User(String),
}

/// An open break-glass session, as the admin API keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassSession {
    /// The `BreakGlass` policy it was opened under.
    pub policy: String,
    pub target: SessionTarget,
    /// Who opened it (operator identity from the admin API).
    pub opened_by: String,
    pub justification: String,
    pub started: jiff::Timestamp,
    pub until: jiff::Timestamp,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BreakGlassError {
    #[error("break-glass policy `{policy}` does not cover {target:?}")]
    NotAnInvoker {
        policy: String,
        target: SessionTarget,
    },
    #[error("a session may last at most {max} (asked for {asked})")]
    TooLong {
        max: jiff::SignedDuration,
        asked: jiff::SignedDuration,
    },
    #[error("a session must last a positive time")]
    NotPositive {},
    #[error("the justification needs at least {min} characters (has {has})")]
    Justification { min: usize, has: usize },
}

impl BreakGlass {
    /// Whether `target` is one this policy may cover.
    #[must_use]
    pub fn covers(&self, target: &SessionTarget) -> bool {
        match target {
            SessionTarget::Integration(name) => self.invokers.integrations.contains(name),
            SessionTarget::User(user) => self.invokers.users.contains(user),
        }
    }

    /// Opens a session, checking invoker, duration and justification.
    pub fn open(
        &self,
        target: SessionTarget,
        opened_by: String,
        justification: String,
        duration: jiff::SignedDuration,
        now: jiff::Timestamp,
    ) -> Result<BreakGlassSession, BreakGlassError> {
        if !self.covers(&target) {
            return Err(BreakGlassError::NotAnInvoker {
                policy: self.name.clone(),
                target,
            });
        }
        if !duration.is_positive() {
            return Err(BreakGlassError::NotPositive {});
        }
        if duration > self.max_duration {
            return Err(BreakGlassError::TooLong {
                max: self.max_duration,
                asked: duration,
            });
        }
        let has = justification.trim().chars().count();
        if has < self.min_justification {
            return Err(BreakGlassError::Justification {
                min: self.min_justification,
                has,
            });
        }
        let until = now
            .checked_add(duration)
            .map_err(|_| BreakGlassError::NotPositive {})?;
        Ok(BreakGlassSession {
            policy: self.name.clone(),
            target,
            opened_by,
            justification,
            started: now,
            until,
        })
    }

    /// Whether `session` is valid under this policy at `now`, checked again on every request:
    /// a reloaded policy may have shortened the duration or removed the invoker.
    #[must_use]
    pub fn admits(&self, session: &BreakGlassSession, now: jiff::Timestamp) -> bool {
        let within = session.started <= now && now < session.until;
        let short_enough = session.until.duration_since(session.started) <= self.max_duration;
        let justified = session.justification.trim().chars().count() >= self.min_justification;
        session.policy == self.name
            && self.covers(&session.target)
            && within
            && short_enough
            && justified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakGlass {
        serde_saphyr::from_str(
            "name: ed\nowner: Safety\ninvokers:\n  integrations: [hie]\n  users: [oncall]\n\
             max_duration: 4h\nmin_justification: 20\nscopes: [system/*.rs]\n",
        )
        .expect("valid break-glass policy")
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn sessions_are_checked_when_opened_and_on_every_use() {
        let bg = policy();
        let now = ts("2026-11-28T10:00:00Z");
        let hour = jiff::SignedDuration::from_hours(1);
        let why = "ED patient unconscious, record needed".to_owned();
        let open = |target, justification: &str, d| {
            bg.open(target, "alice".into(), justification.to_owned(), d, now)
        };
        let session = open(SessionTarget::Integration("hie".into()), &why, hour).expect("opens");
        assert!(bg.admits(&session, now));
        assert!(bg.admits(&session, ts("2026-11-28T10:59:59Z")));
        assert!(
            !bg.admits(&session, ts("2026-11-28T11:00:00Z")),
            "ends at until"
        );
        assert!(
            !bg.admits(&session, ts("2026-11-28T09:59:59Z")),
            "not before start"
        );
        assert!(matches!(
            open(SessionTarget::Integration("lab".into()), &why, hour),
            Err(BreakGlassError::NotAnInvoker { .. })
        ));
        assert!(open(SessionTarget::User("oncall".into()), &why, hour).is_ok());
        assert!(matches!(
            open(SessionTarget::User("oncall".into()), "because", hour),
            Err(BreakGlassError::Justification { min: 20, has: 7 })
        ));
        assert!(matches!(
            open(SessionTarget::User("oncall".into()), &why, hour * 5),
            Err(BreakGlassError::TooLong { .. })
        ));
        let mut forged = session.clone();
        forged.until = ts("2026-11-29T10:00:00Z");
        assert!(!bg.admits(&forged, now), "longer than max_duration");
        let mut other = session;
        other.policy = "other".into();
        assert!(!bg.admits(&other, now));
    }
}
