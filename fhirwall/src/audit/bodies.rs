//! Entry bodies for readers of the index: the index keeps where each entry's frame starts in its
//! journal segment, and the body is read from there (rows moved from an index older than
//! schema version 4 carry their body instead).

use std::path::Path;

use rusqlite::Connection;

use super::{
    AuditError, indexer,
    journal::{FrameReader, JournalError},
};

/// Reads the bodies of index rows, in the order a reader meets them.
#[derive(Debug)]
pub struct Bodies {
    journal: Option<FrameReader>,
    dir: Option<std::path::PathBuf>,
}

impl Bodies {
    /// The bodies behind `conn`'s index (its journal sits beside the index file).
    pub fn of(conn: &Connection) -> Self {
        let dir = conn
            .path()
            .filter(|p| !p.is_empty())
            .map(|db| indexer::journal_dir(Path::new(db)));
        Self { journal: None, dir }
    }

    /// The body of entry `seq`, as the row carries it or from its frame; `None` when its
    /// segment is gone (retention removed the entry after the row was read).
    pub fn get(
        &mut self,
        seq: u64,
        body: Option<String>,
        frame_at: Option<i64>,
    ) -> Result<Option<String>, AuditError> {
        if let Some(body) = body {
            return Ok(Some(body));
        }
        let missing = |reason| AuditError::JournalRead {
            seq,
            source: JournalError::Damaged {
                path: self.dir.clone().unwrap_or_default(),
                offset: 0,
                reason,
            },
        };
        let Some(at) = frame_at.and_then(|at| u64::try_from(at).ok()) else {
            return Err(missing("an index row with neither a body nor a frame"));
        };
        let journal = if let Some(journal) = &mut self.journal {
            journal
        } else {
            let Some(dir) = &self.dir else {
                return Err(missing("an index without a journal beside it"));
            };
            let reader =
                FrameReader::new(dir).map_err(|source| AuditError::JournalRead { seq, source })?;
            self.journal.insert(reader)
        };
        journal
            .body(seq, at)
            .map_err(|source| AuditError::JournalRead { seq, source })
    }
}
