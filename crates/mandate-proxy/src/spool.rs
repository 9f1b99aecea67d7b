//! The audit spool: a write-ahead log of tool-call records on local disk,
//! so that a record exists before anyone ships it and survives a crash.
//!
//! Records are JSON lines in numbered segment files
//! (`spool-0000000000000001.jsonl`). A small `committed` file (replaced
//! atomically by rename) says how far the broker has acknowledged: a
//! segment number and a byte offset. On open, everything after it is
//! still to send; a half-written last line (a crash mid-write) is cut off.
//! Once the shipper has caught up, the writer starts a new segment and the
//! acknowledged ones are deleted, which is how the spool stays small.
//!
//! A record's position is its sequence number for the broker (see
//! [`seq_of`]): positions only grow, across restarts too, and the spool's
//! random `source` id (created with the spool) tells spools apart. The
//! broker drops anything at or below the highest position it has chained
//! from a source, which is how a batch resent after a crash is chained once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const COMMITTED: &str = "committed";
const REJECTED: &str = "rejected.jsonl";
const SOURCE: &str = "source";

/// Bits of a sequence number that hold the byte offset; segments are
/// started well before an offset could reach this.
const OFFSET_BITS: u32 = 40;
/// A segment is closed once it is this large, busy or not.
pub const SEGMENT_MAX: u64 = 1 << 36;

/// The sequence number of the record that starts at `pos`.
pub fn seq_of(pos: Position) -> u64 {
    (pos.segment << OFFSET_BITS) | pos.offset
}

/// A place in the spool: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Complete records read from the spool, and where the next read starts.
#[derive(Debug, Default)]
pub struct Batch {
    pub lines: Vec<Vec<u8>>,
    pub end: Position,
}

/// The spool directory, for reading and committing.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    source: String,
}

/// The one appender. Records wait in `buf` until flushed; the file only
/// ever ends at a record boundary (`complete`) once a flush is over, and a
/// flush that fails is undone (see [`SpoolWriter::flush`]).
#[derive(Debug)]
pub struct SpoolWriter {
    dir: PathBuf,
    file: File,
    /// Whole records (each with its newline) not yet in the file.
    buf: Vec<u8>,
    /// Where the file ends after the last flush that succeeded.
    complete: u64,
    /// Where the next record starts: `complete` + `buf.len()`.
    pos: Position,
    /// Tests: bytes that can still be written before writes fail, as on a
    /// disk that fills up part-way through a write.
    #[cfg(test)]
    room: Option<u64>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("spool-{n:016}.jsonl"))
}

fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("spool-")
            .and_then(|r| r.strip_suffix(".jsonl"))
            .and_then(|n| n.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    // Makes renames and new files durable; not possible on every platform.
    match File::open(dir) {
        Ok(d) => d.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Spool {
    /// Open (creating) the spool: recover from a crash and return the
    /// reader, the writer (at the end of the last segment) and the
    /// committed position.
    pub fn open(dir: &Path) -> io::Result<(Spool, SpoolWriter, Position)> {
        fs::create_dir_all(dir)?;
        let spool = Spool {
            dir: dir.to_owned(),
            source: source_id(dir)?,
        };
        let mut committed = spool.read_committed()?;
        for n in segments(dir)? {
            if n < committed.segment {
                fs::remove_file(segment_path(dir, n))?;
            }
        }
        let mut last = segments(dir)?
            .last()
            .copied()
            .unwrap_or(committed.segment)
            .max(committed.segment);
        if committed.segment == last && committed.offset > 0 && !segment_path(dir, last).exists() {
            // Its acknowledged records were deleted by hand: write on in a
            // new segment so positions keep growing.
            last += 1;
        }
        let path = segment_path(dir, last);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let len = complete_len(&mut file)?;
        if len != file.metadata()?.len() {
            tracing::warn!(
                segment = last,
                "audit spool: dropping a half-written record left by a crash"
            );
            file.set_len(len)?;
            file.sync_all()?;
        }
        if committed.segment == last && committed.offset > len {
            // Cannot happen unless the files were edited: resend what is
            // there, and write on in a new segment so positions keep growing.
            tracing::warn!("audit spool: committed offset is past the end; resending the segment");
            committed.offset = 0;
            return spool.writer_after(last, committed);
        }
        sync_dir(dir)?;
        let writer = SpoolWriter::new(dir.to_owned(), file, last, len);
        Ok((spool, writer, committed))
    }

    fn writer_after(
        self,
        last: u64,
        committed: Position,
    ) -> io::Result<(Spool, SpoolWriter, Position)> {
        let next = last + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, next))?;
        sync_dir(&self.dir)?;
        let writer = SpoolWriter::new(self.dir.clone(), file, next, 0);
        Ok((self, writer, committed))
    }

    /// This spool's id, which the broker keys its de-duplication by.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn read_committed(&self) -> io::Result<Position> {
        let path = self.dir.join(COMMITTED);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Fresh spool, or the commit file was never written: start
                // at the oldest segment present.
                let first = segments(&self.dir)?.first().copied().unwrap_or(1);
                return Ok(Position {
                    segment: first,
                    offset: 0,
                });
            }
            Err(e) => return Err(e),
        };
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(segment)), Some(Ok(offset)), None) => Ok(Position { segment, offset }),
            _ => Err(bad(format!(
                "{} is not `<segment> <offset>`",
                path.display()
            ))),
        }
    }

    /// Up to `max` complete records after `from`, not past `upto` (what the
    /// writer has made durable). Moves on to the next segment at the end of
    /// one the writer has left.
    pub fn read(&self, from: Position, upto: Position, max: usize) -> io::Result<Batch> {
        let mut pos = from;
        let mut lines = Vec::new();
        while pos < upto && lines.len() < max {
            let before = pos;
            let limit = if pos.segment == upto.segment {
                upto.offset
            } else {
                u64::MAX
            };
            let mut file = match File::open(segment_path(&self.dir, pos.segment)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound && pos.segment < upto.segment => {
                    pos = Position {
                        segment: pos.segment + 1,
                        offset: 0,
                    };
                    continue;
                }
                Err(e) => return Err(e),
            };
            file.seek(SeekFrom::Start(pos.offset))?;
            let mut r = BufReader::new(file.take(limit.saturating_sub(pos.offset)));
            loop {
                if lines.len() >= max {
                    break;
                }
                let mut line = Vec::new();
                let n = r.read_until(b'\n', &mut line)?;
                if n == 0 || line.last() != Some(&b'\n') {
                    // End of what may be read here (a partial line is only
                    // possible past `upto`, which `take` already excludes).
                    if pos.segment < upto.segment {
                        pos = Position {
                            segment: pos.segment + 1,
                            offset: 0,
                        };
                    }
                    break;
                }
                pos.offset += n as u64;
                line.pop();
                if !line.is_empty() {
                    lines.push(line);
                }
            }
            if pos == before || (pos.segment == upto.segment && pos.offset >= upto.offset) {
                // Done, or the file is shorter than the writer said: stop
                // rather than spin; the next read tries again.
                break;
            }
        }
        Ok(Batch { lines, end: pos })
    }

    /// Record that everything before `pos` is acknowledged, durably, then
    /// delete the segments that are wholly behind it.
    pub fn commit(&self, pos: Position) -> io::Result<()> {
        let tmp = self.dir.join(format!("{COMMITTED}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{} {}", pos.segment, pos.offset)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(COMMITTED))?;
        sync_dir(&self.dir)?;
        for n in segments(&self.dir)? {
            if n < pos.segment {
                fs::remove_file(segment_path(&self.dir, n))?;
            }
        }
        Ok(())
    }

    /// Bytes written but not yet acknowledged.
    pub fn backlog(&self, committed: Position, upto: Position) -> u64 {
        if committed >= upto {
            return 0;
        }
        if committed.segment == upto.segment {
            return upto.offset - committed.offset;
        }
        let mut total = upto.offset;
        for n in committed.segment..upto.segment {
            let len = fs::metadata(segment_path(&self.dir, n))
                .map(|m| m.len())
                .unwrap_or(0);
            let start = if n == committed.segment {
                committed.offset
            } else {
                0
            };
            total += len.saturating_sub(start);
        }
        total
    }

    /// Keep a record the broker refuses outright, so it is not lost and
    /// does not block the records behind it.
    pub fn set_aside(&self, line: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(REJECTED))?;
        f.write_all(line)?;
        f.write_all(b"\n")?;
        f.sync_data()
    }
}

/// The spool's id: read, or made (random, durable before any record is
/// written) when the spool is new.
fn source_id(dir: &Path) -> io::Result<String> {
    let path = dir.join(SOURCE);
    match fs::read_to_string(&path) {
        Ok(t) => {
            let id = t.trim();
            if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(id.to_owned())
            } else {
                Err(bad(format!("{} is not a 32-hex-digit id", path.display())))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !segments(dir)?.is_empty() {
                // A new id is a new source to the broker: nothing is lost,
                // but a record resent from here may be chained twice.
                tracing::warn!(
                    path = %path.display(),
                    "audit spool: its id is missing; starting a new one (records not yet acknowledged may be chained twice)"
                );
            }
            let raw = mandate_token::random_bytes::<16>();
            let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = dir.join(format!("{SOURCE}.tmp"));
            {
                let mut f = File::create(&tmp)?;
                writeln!(f, "{id}")?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            sync_dir(dir)?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// Length of the file up to and including its last newline.
fn complete_len(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Flush when this much waits, whatever else happens.
const BUF_MAX: usize = 1 << 20;

impl SpoolWriter {
    fn new(dir: PathBuf, file: File, segment: u64, offset: u64) -> Self {
        SpoolWriter {
            dir,
            file,
            buf: Vec::with_capacity(8192),
            complete: offset,
            pos: Position { segment, offset },
            #[cfg(test)]
            room: None,
        }
    }

    /// Append records (one JSON document each, no newline) and hand them,
    /// with any buffered ones, to the OS: they survive this process dying,
    /// not yet a power loss.
    pub fn write(&mut self, records: &[Vec<u8>]) -> io::Result<Position> {
        for r in records {
            self.push(r);
        }
        self.flush()?;
        Ok(self.pos)
    }

    /// Append one record to the write buffer only: it reaches the file
    /// with the next [`SpoolWriter::write`] or [`SpoolWriter::flush`].
    pub fn buffer(&mut self, record: &[u8]) -> io::Result<Position> {
        self.push(record);
        if self.buf.len() >= BUF_MAX {
            self.flush()?;
        }
        Ok(self.pos)
    }

    fn push(&mut self, record: &[u8]) {
        debug_assert!(!record.contains(&b'\n'));
        self.buf.extend_from_slice(record);
        self.buf.push(b'\n');
        self.pos.offset += record.len() as u64 + 1;
    }

    /// Hand buffered records to the OS. If that fails (disk full, I/O
    /// error), the flush is undone: the buffer is dropped and the file cut
    /// back to where it ended, so no half record is left for the next
    /// write to follow, and a record refused now never turns up later.
    /// What is lost is what was in the buffer: at most the outcome records
    /// that waited there (see `writer`), and the record being written.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut done = 0;
        while done < self.buf.len() {
            match self.write_some(done) {
                Ok(0) => return Err(self.undo(io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.undo(e)),
            }
        }
        self.buf.clear();
        self.complete = self.pos.offset;
        Ok(())
    }

    fn write_some(&mut self, from: usize) -> io::Result<usize> {
        let rest = &self.buf[from..];
        #[cfg(test)]
        if let Some(room) = self.room.as_mut() {
            if *room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left"));
            }
            let n = (*room).min(rest.len() as u64) as usize;
            let n = self.file.write(&rest[..n])?;
            *room -= n as u64;
            return Ok(n);
        }
        self.file.write(rest)
    }

    fn undo(&mut self, e: io::Error) -> io::Error {
        self.buf.clear();
        self.pos.offset = self.complete;
        if let Err(cut) = self.file.set_len(self.complete) {
            tracing::error!(error = %cut, "audit spool: cannot cut a failed write back; its half record will be skipped when read");
        }
        e
    }

    /// Forget buffered records, as a crash would.
    pub fn discard_buffered(&mut self) {
        self.buf.clear();
        self.pos.offset = self.complete;
    }

    /// A second handle on the current segment, to sync it without
    /// holding up writers.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Make everything written so far durable; returns where that ends.
    pub fn sync(&mut self) -> io::Result<Position> {
        self.flush()?;
        self.file.sync_data()?;
        Ok(self.pos)
    }

    /// [`SpoolWriter::write`] then [`SpoolWriter::sync`].
    #[cfg(test)]
    pub fn append(&mut self, records: &[Vec<u8>]) -> io::Result<Position> {
        self.write(records)?;
        self.sync()
    }

    /// Start a new segment (if the current one has anything in it), so the
    /// old one can be deleted once acknowledged.
    pub fn rotate(&mut self) -> io::Result<Position> {
        if self.pos.offset == 0 {
            return Ok(self.pos);
        }
        self.flush()?;
        let next = self.pos.segment + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, next))?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.complete = 0;
        self.pos = Position {
            segment: next,
            offset: 0,
        };
        Ok(self.pos)
    }

    pub fn position(&self) -> Position {
        self.pos
    }

    /// From now on, let only `bytes` more be written, then fail every
    /// write as a full disk does (`None`: no limit).
    #[cfg(test)]
    pub fn limit_room(&mut self, bytes: Option<u64>) {
        self.room = bytes;
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // A graceful stop has flushed already; this is for anything left.
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> Vec<u8> {
        format!(r#"{{"id":"r{i}"}}"#).into_bytes()
    }

    fn ids(b: &Batch) -> Vec<String> {
        b.lines
            .iter()
            .map(|l| String::from_utf8(l.clone()).unwrap())
            .collect()
    }

    #[test]
    fn records_survive_a_kill_before_commit_and_are_resent_once_after() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, mut w, committed) = Spool::open(dir.path()).unwrap();
            let upto = w.append(&[rec(0), rec(1), rec(2)]).unwrap();
            let b = spool.read(committed, upto, 2).unwrap();
            assert_eq!(ids(&b), [r#"{"id":"r0"}"#, r#"{"id":"r1"}"#]);
            spool.commit(b.end).unwrap();
            w.append(&[rec(3)]).unwrap();
            // Killed: dropped with r2 and r3 shipped-or-not but uncommitted.
        }
        let (spool, w, committed) = Spool::open(dir.path()).unwrap();
        let b = spool.read(committed, w.position(), 100).unwrap();
        assert_eq!(ids(&b), [r#"{"id":"r2"}"#, r#"{"id":"r3"}"#]);
        spool.commit(b.end).unwrap();
        let (spool, w, committed) = Spool::open(dir.path()).unwrap();
        assert!(
            spool
                .read(committed, w.position(), 100)
                .unwrap()
                .lines
                .is_empty()
        );
    }

    #[test]
    fn half_written_record_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, mut w, _) = Spool::open(dir.path()).unwrap();
            w.append(&[rec(0)]).unwrap();
            let seg = segment_path(dir.path(), w.position().segment);
            let mut f = OpenOptions::new().append(true).open(seg).unwrap();
            f.write_all(br#"{"id":"r1","#).unwrap();
        }
        let (spool, mut w, committed) = Spool::open(dir.path()).unwrap();
        let upto = w.append(&[rec(2)]).unwrap();
        let b = spool.read(committed, upto, 100).unwrap();
        assert_eq!(ids(&b), [r#"{"id":"r0"}"#, r#"{"id":"r2"}"#]);
    }

    #[test]
    fn compaction_deletes_acknowledged_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut w, committed) = Spool::open(dir.path()).unwrap();
        let upto = w.append(&[rec(0), rec(1)]).unwrap();
        let b = spool.read(committed, upto, 100).unwrap();
        spool.commit(b.end).unwrap();
        assert_eq!(spool.backlog(b.end, upto), 0);
        // Caught up: rotate, then a record lands in the new segment.
        w.rotate().unwrap();
        let upto = w.append(&[rec(2)]).unwrap();
        assert!(spool.backlog(b.end, upto) > 0);
        let b2 = spool.read(b.end, upto, 100).unwrap();
        assert_eq!(ids(&b2), [r#"{"id":"r2"}"#]);
        assert_eq!(b2.end, upto);
        spool.commit(b2.end).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![upto.segment]);
        // The old segment's records are not resent after a restart.
        drop(w);
        let (spool, w, committed) = Spool::open(dir.path()).unwrap();
        assert!(
            spool
                .read(committed, w.position(), 100)
                .unwrap()
                .lines
                .is_empty()
        );
    }

    #[test]
    fn a_crash_between_rotation_and_commit_loses_and_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, mut w, committed) = Spool::open(dir.path()).unwrap();
            let upto = w.append(&[rec(0)]).unwrap();
            w.rotate().unwrap();
            w.append(&[rec(1)]).unwrap();
            // r0 acknowledged, but the move to the new segment is not committed.
            spool
                .commit(spool.read(committed, upto, 100).unwrap().end)
                .unwrap();
        }
        let (spool, w, committed) = Spool::open(dir.path()).unwrap();
        let b = spool.read(committed, w.position(), 100).unwrap();
        assert_eq!(ids(&b), [r#"{"id":"r1"}"#]);
    }

    /// The broker drops a record whose seq is not above the last one it
    /// chained from this source: positions must only grow.
    #[test]
    fn positions_only_grow_across_rotation_compaction_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        let mut source = None;
        for round in 0..4 {
            let (spool, mut w, committed) = Spool::open(dir.path()).unwrap();
            assert_eq!(
                *source.get_or_insert(spool.source().to_owned()),
                spool.source()
            );
            seen.push(seq_of(w.position()));
            let upto = w.append(&[rec(round)]).unwrap();
            seen.push(seq_of(upto));
            let b = spool.read(committed, upto, 100).unwrap();
            spool.commit(b.end).unwrap();
            if round % 2 == 0 {
                seen.push(seq_of(w.rotate().unwrap()));
            }
        }
        // Someone deletes the acknowledged segment by hand.
        {
            let (_, w, _) = Spool::open(dir.path()).unwrap();
            fs::remove_file(segment_path(dir.path(), w.position().segment)).unwrap();
        }
        let (_, w, _) = Spool::open(dir.path()).unwrap();
        seen.push(seq_of(w.position()));
        let mut sorted = seen.clone();
        sorted.dedup();
        assert!(sorted.windows(2).all(|p| p[0] < p[1]), "{seen:?}");
        assert!(seen.windows(2).all(|p| p[0] <= p[1]), "{seen:?}");
        assert_ne!(
            seen.last(),
            seen.iter().rev().nth(1),
            "a deleted segment is not written again"
        );
    }

    #[test]
    fn spools_have_distinct_ids_and_a_lost_id_is_replaced() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id_a = Spool::open(a.path()).unwrap().0.source().to_owned();
        let id_b = Spool::open(b.path()).unwrap().0.source().to_owned();
        assert_ne!(id_a, id_b);
        assert_eq!(id_a.len(), 32);
        {
            let (_, mut w, _) = Spool::open(a.path()).unwrap();
            w.append(&[rec(0)]).unwrap();
        }
        fs::remove_file(a.path().join(SOURCE)).unwrap();
        let (spool, w, committed) = Spool::open(a.path()).unwrap();
        assert_ne!(spool.source(), id_a);
        let b = spool.read(committed, w.position(), 100).unwrap();
        assert_eq!(
            ids(&b),
            [r#"{"id":"r0"}"#],
            "unacknowledged records are still sent"
        );
        fs::write(a.path().join(SOURCE), "not hex").unwrap();
        assert!(Spool::open(a.path()).is_err());
    }

    #[test]
    fn garbage_commit_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(COMMITTED), "seven").unwrap();
        assert!(Spool::open(dir.path()).is_err());
    }
}
