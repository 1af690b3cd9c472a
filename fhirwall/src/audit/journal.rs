//! The journal: the audit trail's commit point. Append-only segment files of chained frames.
//!
//! ```text
//! <state>/audit.journal/
//!   00000000000000000001.seg   frames seq 1 ..
//!   00000000000000081234.seg   frames seq 81234 .. (named by their first seq)
//!   spare.seg                  the next segment, already written with zeros
//!
//! frame: len u32 LE | crc32c u32 LE | seq u64 LE | prev_hash [32] | body [len]
//!        crc32c over len, seq, prev_hash and body
//! ```
//!
//! A frame's chain hash is [`chain::link`] of its predecessor's hash, its seq and its body: the
//! same chain the index stores, so an entry has one hash wherever it is read. Segments are
//! written full of zeros before they are used, so appending changes no file size and
//! `fdatasync` writes the data and no metadata; the end of the data is the first frame whose
//! length is zero. A crash can leave a torn last frame: opening the journal cuts it (its CRC or
//! its place in the chain does not match) and zeroes what follows, and the chain continues from
//! the last whole frame.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::{
        fd::AsRawFd as _,
        unix::fs::{FileExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use super::{
    chain::{self, GENESIS, Hash},
    store::Head,
};

/// Bytes before a frame's body.
pub const FRAME_HEADER: usize = 4 + 4 + 8 + 32;
/// The largest body a frame may hold; a larger length is a torn or damaged frame.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
const SPARE: &str = "spare.seg";
/// Zeros written per call while a segment is prepared.
const ZERO_CHUNK: usize = 1024 * 1024;

/// One entry as the journal holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub seq: u64,
    pub prev_hash: Hash,
    /// `chain::link(prev_hash, seq, body)`.
    pub hash: Hash,
    pub body: String,
    /// Where the frame starts in its segment (the segment is the last one whose first seq is at
    /// most `seq`): what the index keeps instead of the body.
    pub offset: u64,
}

/// Where the journal's writer stands: the last frame and the byte after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub head: Head,
    /// First seq of the segment being written.
    pub segment: u64,
    pub offset: u64,
}

/// Why a journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal segment {} is damaged at byte {offset}: {reason}", path.display())]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error("an audit entry of {0} bytes is larger than a journal frame may be")]
    TooLarge(usize),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The segment files of a journal directory, oldest first, by the first seq in their name.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("cannot list the audit journal", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("cannot list the audit journal", dir))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| (n.len() == 20).then_some(n))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((first, entry.path()));
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// Encodes one frame onto `out`.
pub fn encode(out: &mut Vec<u8>, seq: u64, prev: &Hash, body: &[u8]) -> Result<(), JournalError> {
    if body.len() > MAX_BODY {
        return Err(JournalError::TooLarge(body.len()));
    }
    // Bounded by MAX_BODY above.
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
    let seq_bytes = seq.to_le_bytes();
    let mut crc = crc32c::crc32c(&len);
    crc = crc32c::crc32c_append(crc, &seq_bytes);
    crc = crc32c::crc32c_append(crc, prev);
    crc = crc32c::crc32c_append(crc, body);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(prev);
    out.extend_from_slice(body);
    Ok(())
}

/// What [`decode`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame and its size in bytes.
    Frame {
        seq: u64,
        prev: Hash,
        body_at: usize,
        len: usize,
    },
    /// A zero length: the end of the written data.
    End,
    /// Not a frame: torn, or damaged.
    Bad(&'static str),
}

/// Reads the frame at the start of `buf`, checking its CRC.
pub fn decode(buf: &[u8]) -> Decoded {
    let Some(header) = buf.get(..FRAME_HEADER) else {
        return if buf.iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Bad("a frame header runs past the end of the segment")
        };
    };
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let len = word(0) as usize;
    if len == 0 {
        return if header.iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Bad("a frame with an empty body")
        };
    }
    if len > MAX_BODY {
        return Decoded::Bad("a frame length beyond the largest frame");
    }
    let Some(body) = buf.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return Decoded::Bad("a frame body runs past the end of the segment");
    };
    let mut crc = crc32c::crc32c(&header[..4]);
    crc = crc32c::crc32c_append(crc, &header[8..FRAME_HEADER]);
    crc = crc32c::crc32c_append(crc, body);
    if crc != word(4) {
        return Decoded::Bad("the frame's CRC does not match");
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[8..16]);
    let mut prev = GENESIS;
    prev.copy_from_slice(&header[16..FRAME_HEADER]);
    Decoded::Frame {
        seq: u64::from_le_bytes(seq),
        prev,
        body_at: FRAME_HEADER,
        len,
    }
}

/// Reads a segment's frames in order, checking each against its predecessor. Stops at the end
/// of the data; `Err` names the first frame that is not a valid successor.
pub struct SegmentReader {
    path: PathBuf,
    data: Vec<u8>,
    offset: usize,
    /// The seq and hash the next frame must follow (`None`: the segment's first frame, taken as
    /// it is).
    expect: Option<Head>,
}

impl SegmentReader {
    pub fn open(path: &Path, expect: Option<Head>) -> Result<Self, JournalError> {
        let data = fs::read(path).map_err(io_err("cannot read audit journal segment", path))?;
        Ok(Self {
            path: path.to_owned(),
            data,
            offset: 0,
            expect,
        })
    }

    /// The byte after the last frame read.
    pub fn offset(&self) -> u64 {
        self.offset as u64
    }

    /// The next frame, `Ok(None)` at the end of the data.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, JournalError> {
        let damaged = |reason| JournalError::Damaged {
            path: self.path.clone(),
            offset: self.offset as u64,
            reason,
        };
        match decode(&self.data[self.offset..]) {
            Decoded::End => Ok(None),
            Decoded::Bad(reason) => Err(damaged(reason)),
            Decoded::Frame {
                seq,
                prev,
                body_at,
                len,
            } => {
                if let Some(expect) = self.expect {
                    if seq != expect.seq + 1 {
                        return Err(damaged("a frame out of sequence"));
                    }
                    if prev != expect.hash {
                        return Err(damaged(
                            "a frame that does not follow its predecessor's hash",
                        ));
                    }
                }
                let at = self.offset + body_at;
                let Ok(body) = std::str::from_utf8(&self.data[at..at + len]) else {
                    return Err(damaged("a frame body that is not UTF-8"));
                };
                let hash = chain::link(&prev, seq, body.as_bytes());
                let offset = self.offset as u64;
                self.offset = at + len;
                self.expect = Some(Head { seq, hash });
                Ok(Some(Frame {
                    seq,
                    prev_hash: prev,
                    hash,
                    body: body.to_owned(),
                    offset,
                }))
            }
        }
    }
}

/// Reads frames from `from` on, across segments, to the end of the written data. Used by the
/// indexer and by readers catching the index up; stops quietly at a torn tail (the writer may
/// be in the middle of a frame).
pub fn read_from(dir: &Path, from: u64, limit: usize) -> Result<Vec<Frame>, JournalError> {
    let segs = segments(dir)?;
    // The last segment that starts at or before `from`.
    let start = segs
        .iter()
        .rposition(|(first, _)| *first <= from)
        .unwrap_or(0);
    let mut out = Vec::new();
    for (_, path) in &segs[start..] {
        let mut reader = SegmentReader::open(path, None)?;
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) if frame.seq < from => {}
                Ok(Some(frame)) => {
                    out.push(frame);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
                Ok(None) | Err(JournalError::Damaged { .. }) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Reads single frames where the index says they are, keeping the segment last read open
/// (readers ask in seq order).
#[derive(Debug)]
pub struct FrameReader {
    dir: PathBuf,
    segments: Vec<(u64, PathBuf)>,
    open: Option<(u64, File)>,
}

impl FrameReader {
    pub fn new(dir: &Path) -> Result<Self, JournalError> {
        Ok(Self {
            dir: dir.to_owned(),
            segments: segments(dir)?,
            open: None,
        })
    }

    /// The body of frame `seq` at `offset` of its segment; `Ok(None)` when that segment is gone
    /// (retention removed it after the index row was read). A frame that is not there, or not
    /// whole, is an error that names it.
    pub fn body(&mut self, seq: u64, offset: u64) -> Result<Option<String>, JournalError> {
        match self.body_once(seq, offset) {
            // The journal may have gained a segment since the list was read.
            Err(JournalError::Damaged { .. }) => {
                self.segments = segments(&self.dir)?;
                self.open = None;
                self.body_once(seq, offset)
            }
            read => read,
        }
    }

    fn body_once(&mut self, seq: u64, offset: u64) -> Result<Option<String>, JournalError> {
        let path = self.dir.clone();
        let damaged = |reason| JournalError::Damaged {
            path: path.clone(),
            offset,
            reason,
        };
        let Some(file) = self.segment_of(seq)? else {
            return Ok(None);
        };
        let mut header = [0u8; FRAME_HEADER];
        file.read_exact_at(&mut header, offset)
            .map_err(|_| damaged("the index points past the end of a segment"))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut buf = vec![0u8; FRAME_HEADER + len.min(MAX_BODY)];
        file.read_exact_at(&mut buf, offset)
            .map_err(|_| damaged("a frame body runs past the end of the segment"))?;
        match decode(&buf) {
            Decoded::Frame {
                seq: found,
                body_at,
                len,
                ..
            } if found == seq => {
                buf.truncate(body_at + len);
                buf.drain(..body_at);
                String::from_utf8(buf)
                    .map(Some)
                    .map_err(|_| damaged("a frame body that is not UTF-8"))
            }
            Decoded::Frame { .. } | Decoded::End => {
                Err(damaged("the index points at another frame than its own"))
            }
            Decoded::Bad(reason) => Err(damaged(reason)),
        }
    }

    fn segment_of(&mut self, seq: u64) -> Result<Option<&File>, JournalError> {
        let Some(first) = self
            .segments
            .iter()
            .rev()
            .map(|(first, _)| *first)
            .find(|first| *first <= seq)
        else {
            return Ok(None);
        };
        if self.open.as_ref().is_none_or(|(at, _)| *at != first) {
            let path = segment_path(&self.dir, first);
            match File::open(&path) {
                Ok(file) => self.open = Some((first, file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("cannot read audit journal segment", &path)(e)),
            }
        }
        Ok(self.open.as_ref().map(|(_, file)| file))
    }
}

/// Removes the segments that hold nothing after `last` (retention), never the one being
/// written. Returns how many were removed.
pub fn remove_through(dir: &Path, last: u64) -> Result<usize, JournalError> {
    let segs = segments(dir)?;
    let mut removed = 0;
    for pair in segs.windows(2) {
        let (next_first, path) = (pair[1].0, &pair[0].1);
        if next_first.saturating_sub(1) > last {
            break;
        }
        fs::remove_file(path).map_err(io_err("cannot remove an audit journal segment", path))?;
        removed += 1;
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Writes a segment full of zeros under a temporary name and makes it durable, then renames it
/// to `to`.
fn prepare(dir: &Path, to: &Path, bytes: u64, pace: &dyn Fn()) -> Result<(), JournalError> {
    let tmp = dir.join("spare.seg.tmp");
    let result = write_zeros(dir, &tmp, to, bytes, pace);
    if result.is_err() {
        // A partial segment would hold space the index and the next attempt need.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_zeros(
    dir: &Path,
    tmp: &Path,
    to: &Path,
    bytes: u64,
    pace: &dyn Fn(),
) -> Result<(), JournalError> {
    // Direct I/O where the file system has it: 64 MiB of zeros through the page cache would be
    // dirty pages that the kernel throttles every writer on, the journal's appends included.
    let direct = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp)
        .ok()
        .filter(|file| fill(file, bytes, pace).is_ok());
    let file = if let Some(file) = direct {
        file
    } else {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(tmp)
            .map_err(io_err("cannot create audit journal segment", tmp))?;
        fill(&file, bytes, pace).map_err(io_err("cannot write audit journal segment", tmp))?;
        file
    };
    file.sync_all()
        .map_err(io_err("cannot sync audit journal segment", tmp))?;
    fs::rename(tmp, to).map_err(io_err("cannot place audit journal segment", to))?;
    sync_dir(dir)
}

/// Writes `bytes` of zeros from a buffer aligned for direct I/O.
fn fill(file: &File, bytes: u64, pace: &dyn Fn()) -> io::Result<()> {
    const ALIGN: usize = 4096;
    let raw = vec![0u8; ZERO_CHUNK + ALIGN];
    let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
    let zeros = &raw[start..start + ZERO_CHUNK];
    let mut at = 0;
    while at < bytes {
        let n = usize::try_from((bytes - at).min(ZERO_CHUNK as u64)).unwrap_or(ZERO_CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
        pace();
    }
    Ok(())
}

/// The page size the journal pads its writes to.
const PAGE: usize = 4096;
static ZERO_PAGE: [u8; PAGE] = [0; PAGE];

/// Writes `bytes` and then `pad` (< [`PAGE`]) zeros at `offset`, in one system call where the
/// kernel takes it all.
fn write_padded(file: &File, bytes: &[u8], pad: usize, offset: u64) -> io::Result<()> {
    let zeros = &ZERO_PAGE[..pad.min(PAGE)];
    let iov = [
        libc::iovec {
            iov_base: bytes.as_ptr().cast_mut().cast(),
            iov_len: bytes.len(),
        },
        libc::iovec {
            iov_base: zeros.as_ptr().cast_mut().cast(),
            iov_len: zeros.len(),
        },
    ];
    let at =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let written = loop {
        // SAFETY: both iovecs point into slices that outlive the call; the kernel only reads
        // them.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), 2, at) };
        if let Ok(n) = usize::try_from(n) {
            break n;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // A short write (a signal, a full disk on the way): the rest goes the simple way.
    if let Some(rest) = bytes.get(written..) {
        file.write_all_at(rest, offset + written as u64)?;
        file.write_all_at(zeros, offset + bytes.len() as u64)?;
    } else {
        let done = written - bytes.len();
        file.write_all_at(&zeros[done..], offset + written as u64)?;
    }
    Ok(())
}

/// `fdatasync` of the segment being written; the error names the journal.
pub fn sync_data(file: &File, dir: &Path) -> Result<(), JournalError> {
    file.sync_data()
        .map_err(io_err("cannot sync the audit journal", dir))
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync the audit journal directory", dir))
}

/// Options for [`Journal::open`].
#[derive(Clone, Copy, Debug)]
pub struct JournalOptions {
    /// Size of each segment file.
    pub segment_bytes: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Frames encoded for one write: their bytes, and where each ends with the chain's head after
/// it. Encoding (CRC and chain hash) happens where the entry is appended, writing elsewhere.
#[derive(Debug, Default)]
pub struct Frames {
    pub bytes: Vec<u8>,
    pub marks: Vec<Mark>,
}

/// The end of one frame in [`Frames::bytes`], and the chain's head once it is written.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    pub end: usize,
    pub head: Head,
}

impl Frames {
    /// Encodes `body` as the frame after `head` and returns the new head. A body that would
    /// not fit in an empty segment is refused before anything is encoded.
    pub fn push(
        &mut self,
        head: Head,
        body: &[u8],
        opts: JournalOptions,
    ) -> Result<Head, JournalError> {
        if (FRAME_HEADER + body.len()) as u64 > opts.segment_bytes {
            return Err(JournalError::TooLarge(body.len()));
        }
        let seq = head.seq + 1;
        encode(&mut self.bytes, seq, &head.hash, body)?;
        let next = Head {
            seq,
            hash: chain::link(&head.hash, seq, body),
        };
        self.marks.push(Mark {
            end: self.bytes.len(),
            head: next,
        });
        Ok(next)
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.marks.clear();
    }

    pub fn len(&self) -> usize {
        self.marks.len()
    }
}

/// The writer's side of the journal: appends frames and rotates segments. Durability is the
/// caller's: [`Journal::file`] is what to `fdatasync`.
pub struct Journal {
    dir: PathBuf,
    opts: JournalOptions,
    file: std::sync::Arc<File>,
    position: Position,
    /// The head the current segment follows.
    segment_start: Head,
}

impl Journal {
    /// Opens the journal in `dir` (creating it), cutting a torn tail. An empty journal starts
    /// after `anchor` (the last entry of a store written before the journal existed, or
    /// genesis).
    pub fn open(dir: &Path, opts: JournalOptions, anchor: Head) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(io_err("cannot create the audit journal", dir))?;
        let _ = fs::remove_file(dir.join("spare.seg.tmp"));
        let mut segs = segments(dir)?;
        // A last segment without a single whole frame (a crash right after rotation) is removed:
        // the chain ends in the segment before it.
        while let Some((_, path)) = segs.last().cloned() {
            let mut reader = SegmentReader::open(&path, None)?;
            if matches!(reader.next_frame(), Ok(Some(_))) || segs.len() == 1 {
                break;
            }
            fs::remove_file(&path).map_err(io_err(
                "cannot remove an empty audit journal segment",
                &path,
            ))?;
            segs.pop();
        }
        let position = match segs.last() {
            None => {
                let first = anchor.seq + 1;
                let path = segment_path(dir, first);
                prepare(dir, &path, opts.segment_bytes, &|| {})?;
                let position = Position {
                    head: anchor,
                    segment: first,
                    offset: 0,
                };
                (position, anchor)
            }
            Some((first, path)) => Self::recover_tail(*first, path, anchor)?,
        };
        let (position, segment_start) = position;
        let path = segment_path(dir, position.segment);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open audit journal segment", &path))?;
        Ok(Self {
            dir: dir.to_owned(),
            opts,
            file: std::sync::Arc::new(file),
            position,
            segment_start,
        })
    }

    /// Scans the last segment to its end; a torn or damaged tail is zeroed so the chain
    /// continues from the last whole frame.
    fn recover_tail(
        first: u64,
        path: &Path,
        anchor: Head,
    ) -> Result<(Position, Head), JournalError> {
        let mut reader = SegmentReader::open(path, None)?;
        let mut head = Head {
            seq: first.saturating_sub(1),
            hash: if first == anchor.seq + 1 {
                anchor.hash
            } else {
                GENESIS
            },
        };
        let mut segment_start = head;
        let cut = loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    if frame.seq == first {
                        segment_start = Head {
                            seq: first - 1,
                            hash: frame.prev_hash,
                        };
                    }
                    head = Head {
                        seq: frame.seq,
                        hash: frame.hash,
                    };
                }
                Ok(None) => break None,
                Err(JournalError::Damaged { offset, reason, .. }) => break Some((offset, reason)),
                Err(e) => return Err(e),
            }
        };
        let offset = reader.offset();
        if let Some((at, reason)) = cut {
            tracing::warn!(
                segment = %path.display(),
                offset = at,
                reason,
                last_seq = head.seq,
                "audit journal: cutting a torn tail"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err("cannot open audit journal segment", path))?;
            let len = file
                .metadata()
                .map_err(io_err("cannot read audit journal segment", path))?
                .len();
            let zeros = vec![0u8; ZERO_CHUNK];
            let mut pos = at;
            while pos < len {
                let n = usize::try_from((len - pos).min(ZERO_CHUNK as u64)).unwrap_or(ZERO_CHUNK);
                file.write_all_at(&zeros[..n], pos)
                    .map_err(io_err("cannot cut the audit journal's torn tail", path))?;
                pos += n as u64;
            }
            file.sync_data()
                .map_err(io_err("cannot cut the audit journal's torn tail", path))?;
        }
        let position = Position {
            head,
            segment: first,
            offset,
        };
        Ok((position, segment_start))
    }

    pub fn position(&self) -> Position {
        self.position
    }

    /// The segment being written, for the syncer.
    pub fn file(&self) -> std::sync::Arc<File> {
        std::sync::Arc::clone(&self.file)
    }

    /// Appends `bodies` as consecutive frames and returns the new position (see
    /// [`Journal::write_frames`]). `hashes` gets each appended frame's chain hash, in order.
    #[cfg(test)]
    pub fn append<'a>(
        &mut self,
        bodies: impl IntoIterator<Item = &'a [u8]>,
        hashes: &mut Vec<Hash>,
    ) -> Result<Position, JournalError> {
        let mut frames = Frames::default();
        let mut head = self.position.head;
        for body in bodies {
            head = frames.push(head, body, self.opts)?;
        }
        hashes.clear();
        hashes.extend(frames.marks.iter().map(|m| m.head.hash));
        self.write_frames(&frames, &mut Vec::new())
    }

    /// Writes frames encoded by [`Frames::push`] after the current position, rotating to a new
    /// segment where the next frame does not fit, and returns the new position. They are in
    /// the operating system's hands, not yet durable. When it fails, nothing is appended to
    /// the segment being written; frames that filled a segment may have been left in the
    /// (synced) segment before, and [`Journal::position`] says where the chain stands.
    /// `offsets` gets where each frame starts in its segment, in order.
    pub fn write_frames(
        &mut self,
        frames: &Frames,
        offsets: &mut Vec<u64>,
    ) -> Result<Position, JournalError> {
        offsets.clear();
        let mut start = self.position;
        // Bytes of `frames` before the part not yet written.
        let mut written = 0;
        let mut frame_start = 0;
        let mut head = start.head;
        for mark in &frames.marks {
            let pending = (mark.end - written) as u64;
            if start.offset + pending > self.opts.segment_bytes && frame_start > written {
                // Out of room: the frames before this one go into this segment, the rest into
                // the next.
                self.flush(&frames.bytes[written..frame_start], start)?;
                self.position = Position {
                    head,
                    segment: start.segment,
                    offset: start.offset + (frame_start - written) as u64,
                };
                self.rotate(head)?;
                written = frame_start;
                start = self.position;
            } else if start.offset + pending > self.opts.segment_bytes && start.offset > 0 {
                // The first frame of this write does not fit behind what the segment holds.
                self.rotate(head)?;
                start = self.position;
            }
            offsets.push(start.offset + (frame_start - written) as u64);
            frame_start = mark.end;
            head = mark.head;
        }
        self.flush(&frames.bytes[written..], start)?;
        self.position = Position {
            head,
            segment: start.segment,
            offset: start.offset + (frames.bytes.len() - written) as u64,
        };
        Ok(self.position)
    }

    /// Writes `bytes` at `at`, and zeros after them to the end of their last page: a write
    /// that covers a page only in part makes the kernel read the rest of it from the disk first
    /// (the segment was zeroed around the page cache), a read that every commit behind it would
    /// wait for. Past the frames the segment holds zeros anyway.
    fn flush(&self, bytes: &[u8], at: Position) -> Result<(), JournalError> {
        let path = segment_path(&self.dir, at.segment);
        let end = at.offset + bytes.len() as u64;
        let page_end = end
            .next_multiple_of(PAGE as u64)
            .min(self.opts.segment_bytes);
        let pad = usize::try_from(page_end.saturating_sub(end)).unwrap_or(0);
        write_padded(&self.file, bytes, pad, at.offset)
            .map_err(io_err("cannot write audit journal segment", &path))
    }

    /// Makes the segment just filled durable and moves on to a new one starting after `head`.
    fn rotate(&mut self, head: Head) -> Result<(), JournalError> {
        let old = segment_path(&self.dir, self.position.segment);
        self.file
            .sync_data()
            .map_err(io_err("cannot sync audit journal segment", &old))?;
        let first = head.seq + 1;
        let path = segment_path(&self.dir, first);
        let spare = self.dir.join(SPARE);
        if fs::rename(&spare, &path).is_ok() {
            sync_dir(&self.dir)?;
        } else {
            prepare(&self.dir, &path, self.opts.segment_bytes, &|| {})?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open audit journal segment", &path))?;
        self.file = std::sync::Arc::new(file);
        self.segment_start = head;
        self.position = Position {
            head,
            segment: first,
            offset: 0,
        };
        Ok(())
    }

    /// Goes back to `to` (the last durable position) after a failed sync: what follows it is
    /// overwritten by the next append. A rotation synced the whole segment before it, so a
    /// position in an earlier segment rewinds to the start of the current one.
    pub fn rewind(&mut self, to: Position) {
        self.position = if to.segment == self.position.segment {
            to
        } else {
            Position {
                head: self.segment_start,
                segment: self.position.segment,
                offset: 0,
            }
        };
    }

    /// Bytes left in the segment being written.
    pub fn room(&self) -> u64 {
        self.opts.segment_bytes.saturating_sub(self.position.offset)
    }

    /// Whether the next segment is already prepared.
    pub fn spare_ready(dir: &Path) -> bool {
        dir.join(SPARE).is_file()
    }

    /// Writes the next spare segment if there is none (run off the writer's thread).
    /// `pace` runs after each chunk of zeros: the caller spreads the writing out, so that no
    /// journal sync has to carry a whole segment of zeros to the disk at once.
    pub fn prepare_spare(
        dir: &Path,
        opts: JournalOptions,
        pace: &dyn Fn(),
    ) -> Result<(), JournalError> {
        let spare = dir.join(SPARE);
        if spare.exists() {
            return Ok(());
        }
        prepare(dir, &spare, opts.segment_bytes, pace)
    }
}
