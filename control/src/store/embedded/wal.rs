//! The write-ahead log: what makes a write durable between checkpoints.
//!
//! A durable commit of redb writes every page the transaction touched, scattered over the
//! file, and syncs them (10 pages and an `fdatasync`: ~380 µs on this disk). The writer
//! instead commits a batch to redb without syncing, appends the batch's history records here
//! (one sequential write) and syncs this file (~150 µs), then answers. Now and then it
//! makes redb durable (a *checkpoint*) and empties the log. After a crash, redb opens at its
//! last checkpoint and [`replay`] applies the logged records above it.
//!
//! A frame is `len: u32 LE`, `crc32(payload): u32 LE`, then the payload: one history record
//! (the JSON the history table keeps). Every append ends with an end marker (eight zero
//! bytes: a frame of length 0, which no record is). Reading stops at the marker, or at the
//! first frame that is short or fails its checksum: the tail a crash tore was never
//! acknowledged. Frames left from before a checkpoint hold revisions redb already has, and
//! are skipped.
//!
//! The file is kept [`PREALLOCATED`] bytes long, written with zeros when opened, and the log
//! is rewritten from its start after each checkpoint instead of truncated: an append then
//! overwrites blocks the file already has, and its `fdatasync` writes the data alone, not the
//! file's new size and block map (on this disk ~100–120 µs instead of 170–900 µs).

use super::{HISTORY, META, OBJECTS};
use crate::store::EventType;
use crate::store::seal::Record;
use redb::{Database, ReadableTable};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Bytes logged before the writer checkpoints: bounds replay after a crash and the pages
/// redb holds for commits not yet durable. A checkpoint writes every page dirtied since the
/// last one, and a page rewritten many times in between is written once: at 4 MiB the
/// checkpoints of a flood of 1 KB creates were ~19 % of the writer thread, and creates at 64
/// in flight went from 9 048–11 266/s to 10 818–14 058/s at 16 MiB (same runs, alternated;
/// the server's RSS the same, ~100 MB). Replaying 16 MiB after a crash takes well under a
/// second.
pub(crate) const CHECKPOINT_BYTES: u64 = 16 << 20;

/// The log file's size, zeroed, so appends up to a checkpoint never grow it.
const PREALLOCATED: u64 = CHECKPOINT_BYTES + (1 << 20);

/// Ends every append: a frame of length 0.
const END: [u8; 8] = [0; 8];

/// Largest frame payload a reader accepts (a record holds one object, at most a few MiB).
const MAX_FRAME: u32 = 64 << 20;

/// Where the log of the store at `db` lives.
pub fn path_of(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

pub(crate) struct Wal {
    file: File,
    len: u64,
}

impl Wal {
    /// Open the log, emptied: call after [`replay`] made redb durable past its records. The
    /// file is grown to [`PREALLOCATED`] bytes with written zeros (not a hole: a hole's
    /// blocks would be allocated by the appends, the cost this avoids).
    pub fn open_empty(path: &Path) -> io::Result<Wal> {
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
        let have = file.metadata()?.len();
        let zeros = vec![0u8; 1 << 20];
        let mut at = have;
        while at < PREALLOCATED {
            let n = (PREALLOCATED - at).min(zeros.len() as u64);
            write_at(&file, &zeros[..n as usize], at)?;
            at += n;
        }
        write_at(&file, &END, 0)?;
        file.sync_all()?;
        Ok(Wal { file, len: 0 })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Append `records` as frames and wait until they are on disk. On failure the log is cut
    /// back to where it was (best effort) and nothing counts as logged.
    pub fn append<R: AsRef<[u8]>>(&mut self, records: &[R]) -> io::Result<()> {
        let size: usize = records.iter().map(|r| r.as_ref().len() + 8).sum();
        let mut buf = Vec::with_capacity(size + END.len());
        for r in records {
            let r = r.as_ref();
            let len = u32::try_from(r.len())
                .ok()
                .filter(|l| *l <= MAX_FRAME)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("a record of {} bytes", r.len())))?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(r).to_le_bytes());
            buf.extend_from_slice(r);
        }
        let frames = buf.len();
        buf.extend_from_slice(&END);
        let written = write_at(&self.file, &buf, self.len).and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += frames as u64;
                Ok(())
            }
            Err(e) => {
                // Best effort: what was written of the batch is cut off by a marker.
                let _ = self.erase(self.len, self.len + buf.len() as u64);
                Err(e)
            }
        }
    }

    /// Forget frames past `len` (a batch whose redb commit failed after it was logged): they
    /// are zeroed, so that no later append shorter than them leaves a whole frame of theirs
    /// readable behind its end marker.
    pub fn cut(&mut self, len: u64) -> io::Result<()> {
        self.erase(len, self.len + END.len() as u64)?;
        self.file.sync_data()?;
        self.len = len;
        Ok(())
    }

    fn erase(&self, from: u64, to: u64) -> io::Result<()> {
        write_at(&self.file, &vec![0u8; to.saturating_sub(from) as usize], from)
    }

    /// Empty the log after a checkpoint: the next append writes from its start. Not synced:
    /// frames that survive a crash hold revisions the checkpoint made durable, which replay
    /// skips.
    pub fn reset(&mut self) -> io::Result<()> {
        write_at(&self.file, &END, 0)?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(unix)]
fn write_at(f: &File, buf: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, at)
}

#[cfg(windows)]
fn write_at(f: &File, mut buf: &[u8], mut at: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = f.seek_write(buf, at)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        at += n as u64;
    }
    Ok(())
}

/// The payloads of the log's whole frames, in order, up to the first torn or corrupt one.
pub(crate) fn frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 {
            break;
        }
        let Some(payload) = rest.get(8..8 + len as usize).filter(|_| len <= MAX_FRAME) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push(payload);
        rest = &rest[8 + len as usize..];
    }
    out
}

/// Apply the logged records above redb's revision to `db` and make it durable. Returns the
/// revision reached and how many records were applied.
pub(crate) fn replay(db: &Database, path: &Path) -> anyhow::Result<(u64, usize)> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
    let txn = db.begin_write()?;
    let (rev, applied) = {
        let mut meta = txn.open_table(META)?;
        let mut objects = txn.open_table(OBJECTS)?;
        let mut history = txn.open_table(HISTORY)?;
        let mut rev = meta.get("rev")?.map(|g| g.value()).unwrap_or(0);
        let mut applied = 0;
        for payload in frames(&bytes) {
            let rec: Record = serde_json::from_slice(payload)
                .map_err(|e| anyhow::anyhow!("{}: a logged record does not parse: {e}", path.display()))?;
            if rec.rev <= rev {
                continue;
            }
            match (rec.kind, &rec.object, &rec.sealed) {
                (EventType::Deleted, _, _) => {
                    objects.remove(rec.key.as_str())?;
                }
                (_, _, Some(sealed)) => {
                    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, sealed)
                        .map_err(|e| anyhow::anyhow!("a logged sealed record of {}: {e}", rec.key))?;
                    objects.insert(rec.key.as_str(), raw.as_slice())?;
                }
                (_, Some(object), None) => {
                    objects.insert(rec.key.as_str(), serde_json::to_vec(object)?.as_slice())?;
                }
                (_, None, None) => anyhow::bail!("a logged record of {} holds no object", rec.key),
            }
            history.insert(rec.rev, payload)?;
            rev = rec.rev;
            applied += 1;
        }
        if applied > 0 {
            meta.insert("rev", rev)?;
        }
        (rev, applied)
    };
    txn.commit()?;
    Ok((rev, applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stop_at_the_end_marker_or_a_torn_or_corrupt_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wal");
        let mut w = Wal::open_empty(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), PREALLOCATED, "preallocated");
        assert!(frames(&std::fs::read(&p).unwrap()).is_empty());
        w.append(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
        w.append(&[b"three".to_vec()]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len() as u64, PREALLOCATED, "appends overwrite, they do not grow the file");
        assert_eq!(frames(&bytes), vec![&b"one"[..], b"two", b"three"]);
        let end = w.len() as usize;
        assert_eq!(frames(&bytes[..end - 1]), vec![&b"one"[..], b"two"], "torn last frame");
        let mut bad = bytes.clone();
        bad[8 + 3 + 8] ^= 1;
        assert_eq!(frames(&bad), vec![&b"one"[..]], "corrupt second frame: nothing after it");
        assert!(frames(&[0xff; 7]).is_empty());
        let huge = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(frames(&huge).is_empty(), "a length past the file");
        // A cut batch leaves nothing readable, even behind a shorter append over it.
        w.cut(11).unwrap();
        assert_eq!(frames(&std::fs::read(&p).unwrap()), vec![&b"one"[..]]);
        w.append(&[b"2".to_vec()]).unwrap();
        assert_eq!(frames(&std::fs::read(&p).unwrap()), vec![&b"one"[..], b"2"]);
        // After a checkpoint the log starts again from the file's start.
        w.reset().unwrap();
        assert_eq!(w.len(), 0);
        assert!(frames(&std::fs::read(&p).unwrap()).is_empty());
        w.append(&[b"four".to_vec()]).unwrap();
        assert_eq!(frames(&std::fs::read(&p).unwrap()), vec![&b"four"[..]]);
        // Reopened: empty again, still preallocated.
        drop(w);
        let w = Wal::open_empty(&p).unwrap();
        assert_eq!(w.len(), 0);
        assert!(frames(&std::fs::read(&p).unwrap()).is_empty());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), PREALLOCATED);
    }
}
