//! Moving bodies: decoding the incoming framing, and streaming through fixed-size buffers to the
//! other side in the framing the proxy chose. Bodies are never held whole here; the only whole-body
//! buffer is the one a handler asks for with [`BodyMode::Buffer`](super::BodyMode::Buffer).

use std::{ops::Range, time::Duration};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::{ChunkedDecoder, ChunkedError, LAST_CHUNK, put_chunk_header};

/// Pieces smaller than this are copied into the write buffer and sent with what surrounds them
/// (one syscall instead of several); larger ones are written straight from the read buffer.
const GATHER_MAX: usize = 8 * 1024;

/// How a body arrives.
#[derive(Debug, Clone)]
pub(crate) enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// One step of [`Decoder::next`].
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) consumed: usize,
    pub(crate) data: Range<usize>,
}

impl Decoder {
    pub(crate) fn is_done(&self) -> bool {
        match self {
            Self::Length(n) => *n == 0,
            Self::Chunked(d) => d.is_done(),
            Self::UntilClose => false,
            Self::Done => true,
        }
    }

    /// Takes framing and data from the front of `input`.
    pub(crate) fn next(&mut self, input: &[u8]) -> Result<Step, ChunkedError> {
        match self {
            Self::Length(remaining) => {
                let take = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                *remaining -= take as u64;
                Ok(Step {
                    consumed: take,
                    data: 0..take,
                })
            }
            Self::Chunked(decoder) => {
                let d = decoder.decode(input)?;
                Ok(Step {
                    consumed: d.consumed,
                    data: d.data,
                })
            }
            Self::UntilClose => Ok(Step {
                consumed: input.len(),
                data: 0..input.len(),
            }),
            Self::Done => Ok(Step {
                consumed: 0,
                data: 0..0,
            }),
        }
    }

    /// End of input: fine only for a close-delimited body.
    pub(crate) fn finish_at_eof(&mut self) -> bool {
        if matches!(self, Self::UntilClose) {
            *self = Self::Done;
        }
        self.is_done()
    }
}

/// How the proxy frames a body it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// As is: the length is in `Content-Length`, or the connection closes at the end.
    Identity,
    /// Re-chunked, each data span one chunk.
    Chunked,
}

/// Why a transfer stopped.
#[derive(Debug)]
pub(crate) enum IoFail {
    Timeout,
    Closed,
    Io(std::io::Error),
}

/// A transfer failure, by side.
#[derive(Debug)]
pub(crate) enum RelayError {
    Read(IoFail),
    Framing(ChunkedError),
    Write(IoFail),
    TooLarge,
}

/// Reads more bytes into `buf`, growing it by at least `reserve` when full; `Ok(0)` is EOF.
pub(crate) async fn read_some<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    reserve: usize,
    timeout: Duration,
) -> Result<usize, IoFail> {
    buf.reserve(reserve);
    match tokio::time::timeout(timeout, src.read_buf(buf)).await {
        Err(_) => Err(IoFail::Timeout),
        Ok(Err(err)) => Err(IoFail::Io(err)),
        Ok(Ok(n)) => Ok(n),
    }
}

/// Writes all of `bytes` within `timeout`.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    dst: &mut W,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), IoFail> {
    match tokio::time::timeout(timeout, dst.write_all(bytes)).await {
        Err(_) => Err(IoFail::Timeout),
        Ok(Err(err)) => Err(IoFail::Io(err)),
        Ok(Ok(())) => Ok(()),
    }
}

/// A write buffer: heads and small pieces are gathered here and go out in one write.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub(crate) buf: BytesMut,
}

impl Staged {
    /// Stages one body piece in `encoding`, writing through for large pieces.
    pub(crate) async fn send<W: AsyncWrite + Unpin>(
        &mut self,
        dst: &mut W,
        data: &[u8],
        encoding: Encoding,
        timeout: Duration,
    ) -> Result<(), IoFail> {
        if data.is_empty() {
            return Ok(());
        }
        if encoding == Encoding::Chunked {
            put_chunk_header(&mut self.buf, data.len());
        }
        if data.len() < GATHER_MAX {
            self.buf.put_slice(data);
        } else {
            self.write_out(dst, timeout).await?;
            write_all(dst, data, timeout).await?;
        }
        if encoding == Encoding::Chunked {
            self.buf.put_slice(b"\r\n");
        }
        if self.buf.len() >= GATHER_MAX {
            self.write_out(dst, timeout).await?;
        }
        Ok(())
    }

    /// Stages one body piece without any I/O (used before the upstream is even connected).
    fn stage(&mut self, data: &[u8], encoding: Encoding) {
        if data.is_empty() {
            return;
        }
        if encoding == Encoding::Chunked {
            put_chunk_header(&mut self.buf, data.len());
        }
        self.buf.put_slice(data);
        if encoding == Encoding::Chunked {
            self.buf.put_slice(b"\r\n");
        }
    }

    /// Writes what is staged, without flushing the stream.
    async fn write_out<W: AsyncWrite + Unpin>(
        &mut self,
        dst: &mut W,
        timeout: Duration,
    ) -> Result<(), IoFail> {
        if !self.buf.is_empty() {
            write_all(dst, &self.buf, timeout).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes what is staged and flushes the stream (TLS streams hold records until flushed).
    pub(crate) async fn flush<W: AsyncWrite + Unpin>(
        &mut self,
        dst: &mut W,
        timeout: Duration,
    ) -> Result<(), IoFail> {
        self.write_out(dst, timeout).await?;
        match tokio::time::timeout(timeout, dst.flush()).await {
            Err(_) => Err(IoFail::Timeout),
            Ok(Err(err)) => Err(IoFail::Io(err)),
            Ok(Ok(())) => Ok(()),
        }
    }
}

/// Settings of one transfer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer {
    pub(crate) io_buffer: usize,
    pub(crate) timeout: Duration,
    pub(crate) encoding: Encoding,
    /// Capacity of the connection's other buffers, for the peak accounting.
    pub(crate) others: usize,
}

/// Body bytes moved and the peak of buffer capacity seen.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Moved {
    pub(crate) bytes: u64,
    pub(crate) peak: usize,
}

/// Stages the body bytes already in `buf` (no I/O). Returns the data bytes staged.
pub(crate) fn stage_buffered(
    buf: &mut BytesMut,
    decoder: &mut Decoder,
    out: &mut Staged,
    encoding: Encoding,
) -> Result<u64, ChunkedError> {
    let mut staged = 0;
    while !buf.is_empty() && !decoder.is_done() {
        let step = decoder.next(buf)?;
        out.stage(&buf[step.data.clone()], encoding);
        staged += step.data.len() as u64;
        buf.advance(step.consumed);
        if step.consumed == 0 {
            break;
        }
    }
    if decoder.is_done() && encoding == Encoding::Chunked {
        out.buf.put_slice(LAST_CHUNK);
    }
    Ok(staged)
}

/// Streams the rest of a body from `src` (bytes in `buf` first) to `dst` through `out`, then
/// flushes `dst`. The terminating chunk is written when `encoding` is chunked. `observe` sees
/// every decoded piece on its way.
pub(crate) async fn relay<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
    dst: &mut W,
    out: &mut Staged,
    t: Transfer,
    observe: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<Moved, RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut moved = Moved {
        bytes: 0,
        peak: t.others + buf.capacity() + out.buf.capacity(),
    };
    let was_done = decoder.is_done();
    loop {
        while !buf.is_empty() && !decoder.is_done() {
            let step = decoder.next(buf).map_err(RelayError::Framing)?;
            let data = &buf[step.data.clone()];
            observe(data);
            out.send(dst, data, t.encoding, t.timeout)
                .await
                .map_err(RelayError::Write)?;
            moved.bytes += data.len() as u64;
            buf.advance(step.consumed);
            if step.consumed == 0 {
                break;
            }
        }
        if decoder.is_done() {
            break;
        }
        // Nothing decodable is buffered: send what is staged before waiting, so a slow source
        // never holds back bytes the other side could already use.
        out.flush(dst, t.timeout).await.map_err(RelayError::Write)?;
        let n = read_some(src, buf, t.io_buffer, t.timeout)
            .await
            .map_err(RelayError::Read)?;
        moved.peak = moved
            .peak
            .max(t.others + buf.capacity() + out.buf.capacity());
        if n == 0 {
            if decoder.finish_at_eof() {
                break;
            }
            return Err(RelayError::Read(IoFail::Closed));
        }
    }
    if t.encoding == Encoding::Chunked && !was_done {
        out.buf.put_slice(LAST_CHUNK);
    }
    out.flush(dst, t.timeout).await.map_err(RelayError::Write)?;
    Ok(moved)
}

/// Reads a whole body into `body` (decoded), refusing more than `cap` bytes.
pub(crate) async fn collect<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
    body: &mut BytesMut,
    cap: usize,
    t: Transfer,
) -> Result<Moved, RelayError> {
    let mut moved = Moved::default();
    loop {
        while !buf.is_empty() && !decoder.is_done() {
            let step = decoder.next(buf).map_err(RelayError::Framing)?;
            if body.len() + step.data.len() > cap {
                return Err(RelayError::TooLarge);
            }
            body.put_slice(&buf[step.data.clone()]);
            buf.advance(step.consumed);
            if step.consumed == 0 {
                break;
            }
        }
        moved.bytes = body.len() as u64;
        moved.peak = moved.peak.max(t.others + buf.capacity() + body.capacity());
        if decoder.is_done() {
            return Ok(moved);
        }
        if let Decoder::Length(n) = decoder {
            // Refuse early: no point reading what cannot fit.
            if body.len() as u64 + *n > cap as u64 {
                return Err(RelayError::TooLarge);
            }
        }
        if read_some(src, buf, t.io_buffer, t.timeout)
            .await
            .map_err(RelayError::Read)?
            == 0
        {
            return Err(RelayError::Read(IoFail::Closed));
        }
    }
}

/// Reads and drops a body of at most `cap` bytes; `false` if it is larger or broken.
pub(crate) async fn discard<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
    cap: u64,
    t: Transfer,
) -> bool {
    let mut dropped = 0u64;
    loop {
        while !buf.is_empty() && !decoder.is_done() {
            let Ok(step) = decoder.next(buf) else {
                return false;
            };
            dropped += step.data.len() as u64;
            buf.advance(step.consumed);
            if step.consumed == 0 {
                break;
            }
        }
        if decoder.is_done() {
            return true;
        }
        if dropped > cap || matches!(decoder, Decoder::Length(n) if dropped + *n > cap) {
            return false;
        }
        if !matches!(read_some(src, buf, t.io_buffer, t.timeout).await, Ok(n) if n > 0) {
            return false;
        }
    }
}
