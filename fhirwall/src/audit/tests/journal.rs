//! The journal on its own: frames, rotation, a torn tail, rewinding after a failed sync.

use std::{fs::OpenOptions, os::unix::fs::FileExt as _, path::Path};

use super::super::{
    chain::{self, GENESIS},
    journal::{self, Journal, JournalOptions},
    store::Head,
};

const SMALL: JournalOptions = JournalOptions {
    segment_bytes: 4096,
};

fn bodies(range: std::ops::Range<u32>) -> Vec<String> {
    range
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100)))
        .collect()
}

/// Bodies that do not compress: written as frames on their own.
fn random_bodies(n: usize) -> Vec<String> {
    use std::fmt::Write as _;
    let mut noise = 0x9E37_79B9_7F4A_7C15_u64;
    (0..n)
        .map(|_| {
            let mut body = String::from("{\"n\":\"");
            for _ in 0..8 {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                write!(body, "{noise:016x}").unwrap();
            }
            body.push_str("\"}");
            body
        })
        .collect()
}

fn append(j: &mut Journal, bodies: &[String]) {
    let mut hashes = Vec::new();
    j.append(bodies.iter().map(String::as_bytes), &mut hashes)
        .unwrap();
    assert_eq!(hashes.len(), bodies.len());
}

fn all(dir: &Path) -> Vec<journal::Frame> {
    journal::read_from(dir, 1, usize::MAX).unwrap()
}

/// The frames form the same chain `chain::link` defines, from the anchor on.
fn assert_chain(frames: &[journal::Frame], anchor: Head) {
    let mut head = anchor;
    for f in frames {
        assert_eq!(f.seq, head.seq + 1);
        assert_eq!(f.prev_hash, head.hash);
        assert_eq!(f.hash, chain::link(&head.hash, f.seq, f.body.as_bytes()));
        head = Head {
            seq: f.seq,
            hash: f.hash,
        };
    }
}

#[test]
fn appends_rotate_and_reopen_where_they_left_off() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Head {
        seq: 0,
        hash: GENESIS,
    };
    let written = random_bodies(100);
    {
        let mut j = Journal::open(dir.path(), SMALL, genesis).unwrap();
        for chunk in written.chunks(7) {
            append(&mut j, chunk);
        }
        assert_eq!(j.position().head.seq, 100);
    }
    // About 150 bytes a frame in 4 KiB segments: several segments, each full of zeros first.
    let segs = journal::segments(dir.path()).unwrap();
    assert!(segs.len() > 3, "{segs:?}");
    for (_, path) in &segs {
        assert_eq!(std::fs::metadata(path).unwrap().len(), 4096);
    }
    let frames = all(dir.path());
    assert_eq!(frames.len(), 100);
    assert_chain(&frames, genesis);
    assert_eq!(
        frames.iter().map(|f| f.body.clone()).collect::<Vec<_>>(),
        written
    );
    let head = Head {
        seq: 100,
        hash: frames[99].hash,
    };
    let mut j = Journal::open(dir.path(), SMALL, genesis).unwrap();
    assert_eq!(j.position().head, head);
    append(&mut j, &bodies(100..110));
    let frames = all(dir.path());
    assert_eq!(frames.len(), 110);
    assert_eq!(
        frames[100].body,
        bodies(100..101)[0],
        "blocks follow frames"
    );
    assert_chain(&frames, genesis);
    // Reading from the middle starts at the right frame.
    let tail = journal::read_from(dir.path(), 57, 5).unwrap();
    assert_eq!(
        tail.iter().map(|f| f.seq).collect::<Vec<_>>(),
        [57, 58, 59, 60, 61]
    );
}

#[test]
fn a_torn_last_frame_is_cut_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let anchor = Head {
        seq: 41,
        hash: [7; 32],
    };
    let opts = JournalOptions {
        segment_bytes: 1 << 20,
    };
    let end = {
        let mut j = Journal::open(dir.path(), opts, anchor).unwrap();
        append(&mut j, &bodies(0..9));
        append(&mut j, &bodies(9..10));
        j.position()
    };
    // A crash in the middle of the last write: its last bytes never reached the disk.
    let (_, path) = journal::segments(dir.path()).unwrap().pop().unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0; 40], end.offset - 40).unwrap();
    let mut j = Journal::open(dir.path(), opts, anchor).unwrap();
    assert_eq!(j.position().head.seq, 50, "frame 51 was cut");
    append(&mut j, &bodies(20..25));
    let frames = all(dir.path());
    assert_eq!(frames.len(), 14);
    assert_chain(&frames, anchor);
    assert!(frames[9].body.contains("\"n\":20"), "{}", frames[9].body);
    // Garbage from the torn frame is gone: nothing valid follows the new end.
    assert_eq!(frames.last().unwrap().seq, 55);
}

#[test]
fn damage_in_the_middle_of_a_block_is_a_cut_not_a_skip() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Head {
        seq: 0,
        hash: GENESIS,
    };
    let opts = JournalOptions {
        segment_bytes: 1 << 20,
    };
    let second = {
        let mut j = Journal::open(dir.path(), opts, genesis).unwrap();
        append(&mut j, &bodies(0..3));
        let second = j.position().offset;
        append(&mut j, &bodies(3..10));
        second
    };
    let (_, path) = journal::segments(dir.path()).unwrap().pop().unwrap();
    // Flip one byte inside the second write's block: none of frames 4.. can be read.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    let at = second + journal::FRAME_HEADER as u64 + 10;
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
    assert_eq!(
        all(dir.path()).len(),
        3,
        "readers stop at the damaged block"
    );
    let j = Journal::open(dir.path(), opts, genesis).unwrap();
    assert_eq!(j.position().head.seq, 3);
}

/// Bodies that repeat their text are written as blocks, random ones as frames; a reader finds
/// every body where the write said it is, and reading all of them gives back the chain.
#[test]
fn blocks_hold_what_compresses_and_frames_what_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Head::default();
    let opts = JournalOptions {
        segment_bytes: 8 * 1024,
    };
    let mut j = Journal::open(dir.path(), opts, genesis).unwrap();
    let mut random = random_bodies(30).into_iter();
    let mut written = Vec::new();
    let mut located = Vec::new();
    // Bytes of the alike batches' frames, and what they took in their segment.
    let (mut raw, mut stored) = (0, 0);
    for round in 0..40 {
        let batch: Vec<String> = if round % 4 == 3 {
            random.by_ref().take(3).collect()
        } else {
            bodies(round * 20..round * 20 + 20)
        };
        let mut frames = journal::Frames::default();
        let mut head = j.position().head;
        for body in &batch {
            head = frames.push(head, body.as_bytes(), opts).unwrap();
        }
        let before = j.position();
        let mut offsets = Vec::new();
        let after = j.write_frames(&frames, &mut offsets).unwrap();
        if round % 4 != 3 && after.segment == before.segment {
            raw += frames.bytes.len();
            stored += usize::try_from(after.offset - before.offset).unwrap();
        }
        assert_eq!(offsets.len(), batch.len());
        let first = head.seq + 1 - batch.len() as u64;
        located.extend((first..).zip(offsets));
        written.extend(batch);
    }
    assert!(
        journal::segments(dir.path()).unwrap().len() > 2,
        "blocks rotate too"
    );
    assert!(stored * 3 < raw, "{raw} bytes of frames took {stored}");
    let frames = all(dir.path());
    assert_eq!(frames.len(), written.len());
    assert_chain(&frames, genesis);
    let mut reader = journal::FrameReader::new(dir.path()).unwrap();
    for ((seq, offset), body) in located.iter().zip(&written) {
        assert_eq!(reader.body(*seq, *offset).unwrap().as_ref(), Some(body));
    }
    // The random bodies were written on their own, the rest in blocks.
    let alone = located.iter().filter(|(_, o)| *o < 1 << 62).count();
    assert_eq!(alone, 30, "{located:?}");
}

/// A frame larger than a block may hold is written on its own, between blocks, and reads back.
#[test]
fn a_frame_larger_than_a_block_is_written_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        segment_bytes: 8 << 20,
    };
    let mut j = Journal::open(dir.path(), opts, Head::default()).unwrap();
    let large = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 << 20));
    let mut written = bodies(0..5);
    written.push(large);
    written.extend(bodies(5..10));
    let mut frames = journal::Frames::default();
    let mut head = j.position().head;
    for body in &written {
        head = frames.push(head, body.as_bytes(), opts).unwrap();
    }
    let mut offsets = Vec::new();
    j.write_frames(&frames, &mut offsets).unwrap();
    assert!(offsets[5] < 1 << 62, "the large frame is not in a block");
    assert!(
        offsets[0] >= 1 << 62 && offsets[6] >= 1 << 62,
        "{offsets:?}"
    );
    let frames = all(dir.path());
    assert_eq!(
        frames.iter().map(|f| f.body.clone()).collect::<Vec<_>>(),
        written
    );
    let mut reader = journal::FrameReader::new(dir.path()).unwrap();
    assert_eq!(
        reader.body(6, offsets[5]).unwrap().as_ref(),
        Some(&written[5])
    );
}

/// A block rewritten by someone who knows the format (its CRC recomputed) still names the
/// frame inside it that no longer matches its own CRC.
#[test]
fn a_frame_changed_inside_a_valid_block_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Head::default();
    let opts = JournalOptions {
        segment_bytes: 1 << 20,
    };
    let mut j = Journal::open(dir.path(), opts, genesis).unwrap();
    append(&mut j, &bodies(0..8));
    drop(j);
    let (_, path) = journal::segments(dir.path()).unwrap().pop().unwrap();
    let data = std::fs::read(&path).unwrap();
    let journal::Decoded::Block { body_at, len, .. } = journal::decode(&data) else {
        panic!("eight alike bodies make a block");
    };
    let payload = &data[body_at..body_at + len];
    let mut raw = lz4_flex::block::decompress(&payload[4..], 1 << 20).unwrap();
    // Frame 2's body, one byte changed, its frame CRC left as it was.
    let at = raw.windows(5).position(|w| w == b"\"n\":1").unwrap();
    raw[at + 4] = b'7';
    let lz4 = lz4_flex::block::compress(&raw);
    let mut block = Vec::new();
    let len = u32::try_from(4 + lz4.len()).unwrap() | 1 << 31;
    block.extend_from_slice(&len.to_le_bytes());
    block.extend_from_slice(&[0; 4]);
    block.extend_from_slice(&data[8..journal::FRAME_HEADER]);
    block.extend_from_slice(&u32::try_from(raw.len()).unwrap().to_le_bytes());
    block.extend_from_slice(&lz4);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&block[..4]), &block[8..]);
    block[4..8].copy_from_slice(&crc.to_le_bytes());
    let mut tampered = block;
    tampered.resize(data.len(), 0);
    std::fs::write(&path, tampered).unwrap();
    let mut reader = journal::SegmentReader::open(&path, None).unwrap();
    let err = reader.next_frame().unwrap_err();
    assert!(
        err.to_string().contains("does not hold whole frames"),
        "{err}"
    );
}

#[test]
fn rewinding_overwrites_what_was_not_durable() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Head {
        seq: 0,
        hash: GENESIS,
    };
    let mut j = Journal::open(dir.path(), SMALL, genesis).unwrap();
    append(&mut j, &bodies(0..3));
    let durable = j.position();
    append(&mut j, &bodies(3..6));
    j.rewind(durable);
    append(&mut j, &bodies(10..12));
    let frames = all(dir.path());
    assert_eq!(frames.len(), 5);
    assert_chain(&frames, genesis);
    assert!(frames[3].body.contains("\"n\":10"));
}

#[test]
fn frames_reject_every_kind_of_damage() {
    let mut buf = Vec::new();
    journal::encode(&mut buf, 9, &[1; 32], b"{\"a\":1}").unwrap();
    assert!(matches!(
        journal::decode(&buf),
        journal::Decoded::Frame { seq: 9, .. }
    ));
    assert_eq!(journal::decode(&[0; 100]), journal::Decoded::End);
    assert_eq!(journal::decode(&[0; 10]), journal::Decoded::End);
    for at in 0..buf.len() {
        let mut bad = buf.clone();
        bad[at] ^= 0x40;
        assert!(
            matches!(journal::decode(&bad), journal::Decoded::Bad(_)),
            "a flipped byte at {at} went unnoticed"
        );
    }
    assert!(matches!(
        journal::decode(&buf[..buf.len() - 1]),
        journal::Decoded::Bad(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_cuts_a_torn_tail_at_start_and_the_chain_and_index_continue() {
    use super::support::{record, seed_fixed, stop, temp_store};
    use crate::audit::{AuditConfig, AuditSink, Filter, open_read_only, query, verify};

    let (_dir, path) = temp_store();
    seed_fixed(&path, 10).await;
    // A crash while entry 10 was being written: its last bytes never reached the disk. The
    // index had it already (as it may, from a reader that caught up before the crash).
    let dir = path.with_extension("journal");
    let (_, segment) = journal::segments(&dir).unwrap().pop().unwrap();
    let mut reader = journal::SegmentReader::open(&segment, None).unwrap();
    while reader.next_frame().unwrap().is_some() {}
    let end = reader.offset();
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&[0; 16], end - 16).unwrap();
    drop(file);

    let (sink, writer) = AuditSink::start(AuditConfig::new(&path)).unwrap();
    let mut again = record(99, jiff::Timestamp::now());
    again.correlation_id = "after-the-crash".into();
    assert_eq!(
        sink.commit(again).await.unwrap().0,
        10,
        "seq 10 is free again"
    );
    stop(sink, writer).await;

    let conn = open_read_only(&path).unwrap();
    let v = verify(&conn, &[]).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    let rows = query(&conn, &Filter::default()).unwrap();
    assert_eq!(rows.len(), 10);
    let last = rows.iter().find(|r| r.seq == 10).unwrap();
    assert_eq!(last.record.correlation_id, "after-the-crash");
}

/// Writes are padded with zeros to the end of their page (so the kernel never reads a page
/// back to complete it), never past the segment's end: stale bytes behind the frames (a write
/// that failed and was rewound) are cleared up to there.
#[test]
fn writes_pad_to_the_page_and_stay_inside_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Head::default();
    // Not a multiple of the page: the last write of a segment is padded to the segment's end.
    let opts = JournalOptions {
        segment_bytes: 4096 + 1500,
    };
    let written = bodies(0..60);
    let mut j = Journal::open(dir.path(), opts, genesis).unwrap();
    append(&mut j, &written[..3]);
    let (_, path) = journal::segments(dir.path()).unwrap().pop().unwrap();
    let stale = |from: u64| {
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&vec![0xAA; 4096], from).unwrap();
    };
    stale(j.position().offset);
    append(&mut j, &written[3..4]);
    let data = std::fs::read(&path).unwrap();
    let at = usize::try_from(j.position().offset).unwrap();
    assert!(data[at..4096].iter().all(|b| *b == 0), "padded to the page");
    assert!(data[4096..].contains(&0xAA), "and not beyond it");
    for chunk in written[4..].chunks(5) {
        append(&mut j, chunk);
    }
    for (_, path) in journal::segments(dir.path()).unwrap() {
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, opts.segment_bytes, "{}", path.display());
    }
    drop(j);
    let frames = all(dir.path());
    assert_eq!(frames.len(), 60);
    assert_chain(&frames, genesis);
}

/// Stopping the writer stops the thread that prepares the next segment and waits for it: no
/// half-written spare is left behind to race the next writer in the same directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_writer_leaves_no_half_written_spare() {
    use super::support::{record, stop, temp_store};
    use crate::audit::{AuditConfig, AuditSink, indexer, journal::SPARE_TMP};

    let (_dir, path) = temp_store();
    // A fresh journal prepares its spare (64 MiB of zeros, paced over about a second) from the
    // start; the writer is stopped while that is under way.
    let (sink, writer) = AuditSink::start(AuditConfig::new(&path)).unwrap();
    sink.commit(record(1, jiff::Timestamp::now()))
        .await
        .unwrap();
    stop(sink, writer).await;
    assert!(
        !indexer::journal_dir(&path).join(SPARE_TMP).exists(),
        "the spare's thread was still writing after the writer stopped"
    );
    let (sink, writer) = AuditSink::start(AuditConfig::new(&path)).unwrap();
    assert_eq!(
        sink.commit(record(2, jiff::Timestamp::now()))
            .await
            .unwrap()
            .0,
        2
    );
    stop(sink, writer).await;
}
