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
//! block: len | 1<<31 | crc32c | seq | prev_hash | raw_len u32 LE | LZ4 [len - 4]
//!        frames seq, seq + 1, ... (raw_len bytes) compressed together; seq and prev_hash are
//!        the first frame's; crc32c over len, seq, prev_hash, raw_len and the LZ4 bytes
//! ```
//!
//! A frame's chain hash is [`chain::link`] of its predecessor's hash, its seq and its body: the
//! same chain the index stores, so an entry has one hash wherever it is read. Segments are
//! written full of zeros before they are used, so appending changes no file size and
//! `fdatasync` writes the data and no metadata; the end of the data is the first frame whose
//! length is zero. A crash can leave a torn last frame: opening the journal cuts it (its CRC or
//! its place in the chain does not match) and zeroes what follows, and the chain continues from
//! the last whole frame.
//!
//! Each write compresses its frames into blocks (the records of one group commit repeat most
//! of their text: a tenth of the bytes to write and sync), and writes frames as they are where
//! that does not make them smaller. A block is read whole or not at all: its CRC, then each of
//! its frames' own. The index addresses a frame in a block by the block's offset and the
//! frame's place in the decompressed bytes (`IN_BLOCK`).

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
/// The spare while it is being written.
pub(crate) const SPARE_TMP: &str = "spare.seg.tmp";
/// Zeros written per call while a segment is prepared.
const ZERO_CHUNK: usize = 1024 * 1024;
/// The length word's flag for a block.
const BLOCK: u32 = 1 << 31;
/// Bytes of frames compressed into one block, at most.
const BLOCK_RAW: usize = 1024 * 1024;
/// An offset with this bit names a frame in a block: the block's offset in its segment shifted
/// left by [`INNER_BITS`], and the frame's offset in the block's decompressed bytes below.
const IN_BLOCK: u64 = 1 << 62;
const INNER_BITS: u32 = 24;
/// Segments this large or larger are written without blocks (their offsets would not fit).
const BLOCK_SEGMENT_LIMIT: u64 = 1 << (62 - INNER_BITS);

/// The offset of the frame `inner` bytes into the block at `block_at` (see [`in_block`]).
fn block_offset(block_at: u64, inner: usize) -> u64 {
    IN_BLOCK | block_at << INNER_BITS | inner as u64
}

/// Where frame offset `offset` points: the block's offset and the frame's place in it, or
/// `None` for a frame on its own.
fn in_block(offset: u64) -> Option<(u64, usize)> {
    (offset & IN_BLOCK != 0).then(|| {
        let inner = offset & ((1 << INNER_BITS) - 1);
        (
            (offset & !IN_BLOCK) >> INNER_BITS,
            usize::try_from(inner).unwrap_or(usize::MAX),
        )
    })
}

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
    let start = out.len();
    out.resize(start + FRAME_HEADER, 0);
    out.extend_from_slice(body);
    // Bounded by MAX_BODY above.
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    seal(&mut out[start..], len, seq, prev);
    Ok(())
}

/// Fills in the header of the frame or block in `out` (its header's room, then its body or
/// payload): the length word, seq, predecessor, and the CRC over all of them and the body.
fn seal(out: &mut [u8], len_word: u32, seq: u64, prev: &Hash) {
    out[..4].copy_from_slice(&len_word.to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..FRAME_HEADER].copy_from_slice(prev);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..4]), &out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
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
    /// A whole block: `len` bytes from `body_at` hold its raw length and its LZ4 bytes.
    Block {
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

/// Reads the frame (or block) at the start of `buf`, checking its CRC.
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
    let block = word(0) & BLOCK != 0;
    let len = (word(0) & !BLOCK) as usize;
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
    let seq = u64::from_le_bytes(seq);
    if block {
        Decoded::Block {
            seq,
            prev,
            body_at: FRAME_HEADER,
            len,
        }
    } else {
        Decoded::Frame {
            seq,
            prev,
            body_at: FRAME_HEADER,
            len,
        }
    }
}

/// The frames a block's payload (its raw length, then LZ4) decompresses to.
fn unpack(payload: &[u8], raw: &mut Vec<u8>) -> Result<(), &'static str> {
    let (Some(size), Some(lz4)) = (payload.get(..4), payload.get(4..)) else {
        return Err("a block too short to hold its size");
    };
    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if size == 0 || size > BLOCK_RAW {
        return Err("a block size beyond the largest block");
    }
    raw.clear();
    raw.resize(size, 0);
    match lz4_flex::block::decompress_into(lz4, raw) {
        Ok(n) if n == size => Ok(()),
        Ok(_) => Err("a block shorter than its size"),
        Err(_) => Err("a block that does not decompress"),
    }
}

/// The frame [`decode`] found in `buf` (`body_at`, `len`), checked to follow `expect`.
fn checked(
    buf: &[u8],
    (seq, prev, body_at, len): (u64, Hash, usize, usize),
    expect: Option<Head>,
    offset: u64,
) -> Result<Frame, &'static str> {
    if let Some(expect) = expect {
        if expect.seq.checked_add(1) != Some(seq) {
            return Err("a frame out of sequence");
        }
        if prev != expect.hash {
            return Err("a frame that does not follow its predecessor's hash");
        }
    }
    let body = std::str::from_utf8(&buf[body_at..body_at + len])
        .map_err(|_| "a frame body that is not UTF-8")?;
    Ok(Frame {
        seq,
        prev_hash: prev,
        hash: chain::link(&prev, seq, body.as_bytes()),
        body: body.to_owned(),
        offset,
    })
}

/// The frames of a decompressed block, the first one `first` (the block's own seq and
/// predecessor); all of them whole and chained, or an error.
fn block_frames(raw: &[u8], first: Head, block_at: u64) -> Result<Vec<Frame>, &'static str> {
    let mut frames = Vec::new();
    let mut expect = first;
    let mut inner = 0;
    while inner < raw.len() {
        let Decoded::Frame {
            seq,
            prev,
            body_at,
            len,
        } = decode(&raw[inner..])
        else {
            return Err("a block that does not hold whole frames");
        };
        let offset = block_offset(block_at, inner);
        let frame = checked(
            &raw[inner..],
            (seq, prev, body_at, len),
            Some(expect),
            offset,
        )?;
        expect = Head {
            seq: frame.seq,
            hash: frame.hash,
        };
        frames.push(frame);
        inner += body_at + len;
    }
    Ok(frames)
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
    /// Frames of the block read last, not yet returned (reversed: the next is last).
    pending: Vec<Frame>,
    raw: Vec<u8>,
}

impl SegmentReader {
    pub fn open(path: &Path, expect: Option<Head>) -> Result<Self, JournalError> {
        let data = fs::read(path).map_err(io_err("cannot read audit journal segment", path))?;
        Ok(Self {
            path: path.to_owned(),
            data,
            offset: 0,
            expect,
            pending: Vec::new(),
            raw: Vec::new(),
        })
    }

    /// The byte after the last frame read.
    pub fn offset(&self) -> u64 {
        self.offset as u64
    }

    /// The next frame, `Ok(None)` at the end of the data.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, JournalError> {
        if let Some(frame) = self.pending.pop() {
            return Ok(Some(frame));
        }
        let damaged = |reason| JournalError::Damaged {
            path: self.path.clone(),
            offset: self.offset as u64,
            reason,
        };
        let at = self.offset;
        match decode(&self.data[at..]) {
            Decoded::End => Ok(None),
            Decoded::Bad(reason) => Err(damaged(reason)),
            Decoded::Frame {
                seq,
                prev,
                body_at,
                len,
            } => {
                let frame = checked(
                    &self.data[at..],
                    (seq, prev, body_at, len),
                    self.expect,
                    at as u64,
                )
                .map_err(damaged)?;
                self.offset = at + body_at + len;
                self.expect = Some(Head {
                    seq,
                    hash: frame.hash,
                });
                Ok(Some(frame))
            }
            Decoded::Block {
                seq,
                prev,
                body_at,
                len,
            } => {
                if let Some(expect) = self.expect
                    && (expect.seq.checked_add(1) != Some(seq) || prev != expect.hash)
                {
                    return Err(damaged("a block that does not follow its predecessor"));
                }
                unpack(&self.data[at + body_at..at + body_at + len], &mut self.raw)
                    .map_err(damaged)?;
                let first = Head {
                    seq: seq.wrapping_sub(1),
                    hash: prev,
                };
                let mut frames = block_frames(&self.raw, first, at as u64).map_err(damaged)?;
                let Some(last) = frames.last() else {
                    return Err(damaged("an empty block"));
                };
                self.expect = Some(Head {
                    seq: last.seq,
                    hash: last.hash,
                });
                self.offset = at + body_at + len;
                frames.reverse();
                self.pending = frames;
                Ok(self.pending.pop())
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

/// Reads single frames where the index says they are, keeping the segment and the block last
/// read (readers ask in seq order).
#[derive(Debug)]
pub struct FrameReader {
    dir: PathBuf,
    segments: Vec<(u64, PathBuf)>,
    open: Option<(u64, File)>,
    /// The block last read: its segment, its offset, its frames' bytes.
    block: Option<(u64, u64, Vec<u8>)>,
}

impl FrameReader {
    pub fn new(dir: &Path) -> Result<Self, JournalError> {
        Ok(Self {
            dir: dir.to_owned(),
            segments: segments(dir)?,
            open: None,
            block: None,
        })
    }

    /// The body of frame `seq` at `offset` of its segment; `Ok(None)` when that segment is gone
    /// (retention removed it after the index row was read). A frame that is not there, or not
    /// whole, is an error that names its segment.
    pub fn body(&mut self, seq: u64, offset: u64) -> Result<Option<String>, JournalError> {
        match self.body_once(seq, offset) {
            // The journal may have gained a segment since the list was read.
            Err(JournalError::Damaged { .. }) => {
                self.segments = segments(&self.dir)?;
                self.open = None;
                self.block = None;
                self.body_once(seq, offset)
            }
            read => read,
        }
    }

    fn body_once(&mut self, seq: u64, offset: u64) -> Result<Option<String>, JournalError> {
        let Some(first) = self.segment_of(seq)? else {
            return Ok(None);
        };
        let path = segment_path(&self.dir, first);
        let damaged = |offset, reason| JournalError::Damaged {
            path: path.clone(),
            offset,
            reason,
        };
        let Some((block_at, inner)) = in_block(offset) else {
            let buf = self.read_at(offset).map_err(|r| damaged(offset, r))?;
            return body_in(&buf, seq).map(Some).map_err(|r| damaged(offset, r));
        };
        let cached = self
            .block
            .as_ref()
            .is_some_and(|(segment, at, _)| *segment == first && *at == block_at);
        if !cached {
            let buf = self.read_at(block_at).map_err(|r| damaged(block_at, r))?;
            let Decoded::Block { body_at, len, .. } = decode(&buf) else {
                return Err(damaged(
                    block_at,
                    "the index points at a block that is not there",
                ));
            };
            let mut raw = Vec::new();
            unpack(&buf[body_at..body_at + len], &mut raw).map_err(|r| damaged(block_at, r))?;
            self.block = Some((first, block_at, raw));
        }
        let raw = self.block.as_ref().map_or(&[][..], |(_, _, raw)| raw);
        let frame = raw
            .get(inner..)
            .ok_or("the index points past the end of a block")
            .and_then(|frame| body_in(frame, seq));
        frame.map(Some).map_err(|r| damaged(offset, r))
    }

    /// The frame or block at `offset` of the open segment, whole (its CRC is not checked here).
    fn read_at(&self, offset: u64) -> Result<Vec<u8>, &'static str> {
        let Some((_, file)) = &self.open else {
            return Err("a segment that is not open");
        };
        let mut header = [0u8; FRAME_HEADER];
        file.read_exact_at(&mut header, offset)
            .map_err(|_| "the index points past the end of a segment")?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) & !BLOCK;
        let mut buf = vec![0u8; FRAME_HEADER + (len as usize).min(MAX_BODY)];
        file.read_exact_at(&mut buf, offset)
            .map_err(|_| "a frame body runs past the end of the segment")?;
        Ok(buf)
    }

    /// Opens the segment that holds `seq` and returns its first seq; `None` when it is gone.
    fn segment_of(&mut self, seq: u64) -> Result<Option<u64>, JournalError> {
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
        Ok(Some(first))
    }
}

/// The body of frame `seq` at the start of `buf`.
fn body_in(buf: &[u8], seq: u64) -> Result<String, &'static str> {
    match decode(buf) {
        Decoded::Frame {
            seq: found,
            body_at,
            len,
            ..
        } if found == seq => std::str::from_utf8(&buf[body_at..body_at + len])
            .map(str::to_owned)
            .map_err(|_| "a frame body that is not UTF-8"),
        Decoded::Frame { .. } | Decoded::Block { .. } | Decoded::End => {
            Err("the index points at another frame than its own")
        }
        Decoded::Bad(reason) => Err(reason),
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
fn prepare(dir: &Path, to: &Path, bytes: u64, pace: Pace<'_>) -> Result<(), JournalError> {
    let tmp = dir.join(SPARE_TMP);
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
    pace: Pace<'_>,
) -> Result<(), JournalError> {
    // Direct I/O where the file system has it: 64 MiB of zeros through the page cache would be
    // dirty pages that the kernel throttles every writer on, the journal's appends included.
    let direct = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp)
        .ok();
    let direct = match direct.map(|file| fill(&file, bytes, pace).map(|()| file)) {
        Some(Ok(file)) => Some(file),
        Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
            return Err(io_err("stopped writing audit journal segment", tmp)(e));
        }
        Some(Err(_)) | None => None,
    };
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

/// Runs after each chunk of zeros while a segment is prepared, and says whether to go on.
pub type Pace<'a> = &'a dyn Fn() -> bool;

/// Writes `bytes` of zeros from a buffer aligned for direct I/O; `Interrupted` when `pace`
/// says to stop.
fn fill(file: &File, bytes: u64, pace: Pace<'_>) -> io::Result<()> {
    const ALIGN: usize = 4096;
    let raw = vec![0u8; ZERO_CHUNK + ALIGN];
    let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
    let zeros = &raw[start..start + ZERO_CHUNK];
    let mut at = 0;
    while at < bytes {
        let n = usize::try_from((bytes - at).min(ZERO_CHUNK as u64)).unwrap_or(ZERO_CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
        if !pace() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the audit writer is stopping",
            ));
        }
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
    /// What the next write puts into the segment, and a block being packed (kept between
    /// writes: no allocation per write once they have grown).
    out: Vec<u8>,
    packed: Vec<u8>,
}

/// Bytes of the write buffers kept between writes, at most.
const KEEP_BUFFER: usize = 4 * 1024 * 1024;

impl Journal {
    /// Opens the journal in `dir` (creating it), cutting a torn tail. An empty journal starts
    /// after `anchor` (the last entry of a store written before the journal existed, or
    /// genesis).
    pub fn open(dir: &Path, opts: JournalOptions, anchor: Head) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(io_err("cannot create the audit journal", dir))?;
        let _ = fs::remove_file(dir.join(SPARE_TMP));
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
                prepare(dir, &path, opts.segment_bytes, &|| true)?;
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
            out: Vec::new(),
            packed: Vec::new(),
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

    /// Writes frames encoded by [`Frames::push`] after the current position, compressed into
    /// blocks where that makes them smaller, rotating to a new segment where the next frame
    /// or block does not fit, and returns the new position. They are in the operating system's
    /// hands, not yet durable. When it fails, nothing is appended to the segment being written;
    /// frames that filled a segment may have been left in the (synced) segment before, and
    /// [`Journal::position`] says where the chain stands. `offsets` gets where each frame is
    /// (its offset in its segment, or its place in a block), in order.
    pub fn write_frames(
        &mut self,
        frames: &Frames,
        offsets: &mut Vec<u64>,
    ) -> Result<Position, JournalError> {
        offsets.clear();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let written = self.write_blocks(frames, offsets, &mut out);
        if out.capacity() <= KEEP_BUFFER {
            self.out = out;
        }
        if self.packed.capacity() > KEEP_BUFFER {
            self.packed = Vec::new();
        }
        written
    }

    fn write_blocks(
        &mut self,
        frames: &Frames,
        offsets: &mut Vec<u64>,
        out: &mut Vec<u8>,
    ) -> Result<Position, JournalError> {
        // Where `out` goes, and the head after what it holds.
        let mut start = self.position;
        let mut head = start.head;
        let (mut from, mut raw_from) = (0, 0);
        while from < frames.marks.len() {
            // The next run: the frames from `from` whose bytes stay within a block.
            let to = from
                + 1
                + frames.marks[from + 1..]
                    .iter()
                    .take_while(|m| m.end - raw_from <= BLOCK_RAW)
                    .count();
            let raw_to = frames.marks[to - 1].end;
            if self.pack(&frames.bytes[raw_from..raw_to], head) {
                self.make_room(out, &mut start, head, self.packed.len())?;
                let block_at = start.offset + out.len() as u64;
                let mut inner = 0;
                for mark in &frames.marks[from..to] {
                    offsets.push(block_offset(block_at, inner));
                    inner = mark.end - raw_from;
                }
                out.extend_from_slice(&self.packed);
            } else {
                let mut frame_start = raw_from;
                for mark in &frames.marks[from..to] {
                    self.make_room(out, &mut start, head, mark.end - frame_start)?;
                    offsets.push(start.offset + out.len() as u64);
                    out.extend_from_slice(&frames.bytes[frame_start..mark.end]);
                    frame_start = mark.end;
                    head = mark.head;
                }
            }
            head = frames.marks[to - 1].head;
            (from, raw_from) = (to, raw_to);
        }
        self.flush(out, start)?;
        self.position = Position {
            head,
            segment: start.segment,
            offset: start.offset + out.len() as u64,
        };
        Ok(self.position)
    }

    /// Compresses `raw` (whole frames, the first one after `head`) into a block in
    /// `self.packed`; `false` when the block would not be smaller, would not fit in a segment,
    /// or `raw` is larger than a block may hold (one frame alone can be).
    fn pack(&mut self, raw: &[u8], head: Head) -> bool {
        const AT: usize = FRAME_HEADER + 4;
        if self.opts.segment_bytes >= BLOCK_SEGMENT_LIMIT || raw.len() > BLOCK_RAW {
            return false;
        }
        let packed = &mut self.packed;
        packed.clear();
        packed.resize(AT + lz4_flex::block::get_maximum_output_size(raw.len()), 0);
        let Ok(n) = lz4_flex::block::compress_into(raw, &mut packed[AT..]) else {
            return false;
        };
        packed.truncate(AT + n);
        if packed.len() >= raw.len() || packed.len() as u64 > self.opts.segment_bytes {
            return false;
        }
        // Both below `BLOCK_RAW`.
        let len = u32::try_from(packed.len() - FRAME_HEADER).unwrap_or(0) | BLOCK;
        let raw_len = u32::try_from(raw.len()).unwrap_or(0);
        packed[FRAME_HEADER..AT].copy_from_slice(&raw_len.to_le_bytes());
        seal(packed, len, head.seq + 1, &head.hash);
        true
    }

    /// Makes room for `len` more bytes behind `out`: where they do not fit in the segment (and
    /// it holds something), writes `out` into it and moves on to a new one after `head`.
    fn make_room(
        &mut self,
        out: &mut Vec<u8>,
        start: &mut Position,
        head: Head,
        len: usize,
    ) -> Result<(), JournalError> {
        let end = start.offset + out.len() as u64;
        if end + len as u64 <= self.opts.segment_bytes || end == 0 {
            return Ok(());
        }
        if !out.is_empty() {
            self.flush(out, *start)?;
            self.position = Position {
                head,
                segment: start.segment,
                offset: end,
            };
            out.clear();
        }
        self.rotate(head)?;
        *start = self.position;
        Ok(())
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
            prepare(&self.dir, &path, self.opts.segment_bytes, &|| true)?;
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
    /// journal sync has to carry a whole segment of zeros to the disk at once, and stops it
    /// (the partial segment is removed) by returning `false`.
    pub fn prepare_spare(
        dir: &Path,
        opts: JournalOptions,
        pace: Pace<'_>,
    ) -> Result<(), JournalError> {
        let spare = dir.join(SPARE);
        if spare.exists() {
            return Ok(());
        }
        prepare(dir, &spare, opts.segment_bytes, pace)
    }
}
