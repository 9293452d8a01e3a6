//! A container's stdout and stderr: one log file per run, rotated as it is written so that a
//! chatty or hostile workload cannot fill the node's disk. When `<container>.log` reaches
//! [`MAX_LOG_BYTES`] it becomes `<container>.log.1` (older parts shift up to
//! `.log.{KEEP_ROTATED}`, the oldest is dropped) and a fresh file starts. As with Kubernetes,
//! `logs` serves the current file.
//!
//! A log file is open only while its container writes: it is opened (for appending) on a
//! write and closed by [`close_idle`] once quiet, so ten thousand idle pods do not hold ten
//! thousand descriptors.
//!
//! Each instance writes through a stream of its own ([`LogSink`]'s `p2_stream`), which hands
//! the file whole lines: the lines of instances running at once do not interleave, and a line
//! a guest prints in pieces (Rust's `eprintln!` writes each argument apart, unbuffered) costs
//! one write instead of one per piece.

use bytes::Bytes;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Size at which a container's log file is rotated.
pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept besides the current one.
pub const KEEP_ROTATED: u32 = 4;

struct Inner {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    max: u64,
    /// The last write: an open file quiet for long enough is closed.
    last: std::time::Instant,
}

/// Every log sink of the process, for [`close_idle`] (dead ones are pruned there).
static SINKS: Mutex<Vec<std::sync::Weak<Mutex<Inner>>>> = Mutex::new(Vec::new());

/// Close the log files that have not been written for `idle` (the next write reopens them);
/// returns how many are open still.
pub fn close_idle(idle: std::time::Duration) -> usize {
    let mut sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    let mut open = 0;
    sinks.retain(|w| {
        let Some(inner) = w.upgrade() else { return false };
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.file.is_some() && inner.last.elapsed() >= idle {
            inner.file = None;
        }
        open += usize::from(inner.file.is_some());
        true
    });
    open
}

impl Inner {
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let part = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(part(KEEP_ROTATED));
        for n in (1..KEEP_ROTATED).rev() {
            let _ = std::fs::rename(part(n), part(n + 1));
        }
        std::fs::rename(&self.path, part(1))?;
        self.file = Some(File::create(&self.path)?);
        self.written = 0;
        Ok(())
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            if self.written >= self.max {
                self.rotate()?;
            }
            let room = (self.max - self.written) as usize;
            let n = bytes.len().min(room);
            if self.file.is_none() {
                self.file = Some(std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?);
            }
            self.last = std::time::Instant::now();
            let Some(f) = self.file.as_mut() else { return Err(std::io::Error::other("log file unavailable")) };
            f.write_all(&bytes[..n])?;
            self.written += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

/// The log of one container run; cheap to clone, shared by all its instances and by stdout
/// and stderr.
#[derive(Clone)]
pub struct LogSink(Arc<Mutex<Inner>>);

impl LogSink {
    /// Start a run's log at `path`: the last run's file becomes `.log.previous` and the last
    /// run's rotated parts are removed.
    pub fn open(path: &Path) -> std::io::Result<LogSink> {
        Self::open_with_limit(path, MAX_LOG_BYTES)
    }

    pub fn open_with_limit(path: &Path, max: u64) -> std::io::Result<LogSink> {
        // No log yet, no run before: nothing to keep or remove (a node starting thousands of
        // pods skips a lookup of each rotated part).
        if let Ok(m) = std::fs::metadata(path) {
            if m.len() > 0 {
                std::fs::rename(path, format!("{}.previous", path.display()))?;
            }
            for n in 1..=KEEP_ROTATED {
                let _ = std::fs::remove_file(format!("{}.{n}", path.display()));
            }
        }
        // Created empty now, opened by the first write.
        File::create(path)?;
        let inner = Inner { path: path.to_path_buf(), file: None, written: 0, max, last: std::time::Instant::now() };
        let sink = Arc::new(Mutex::new(inner));
        SINKS.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&sink));
        Ok(LogSink(sink))
    }

    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(bytes)
    }
}

impl IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Lines::new(self.clone()))
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(Lines::new(self.clone()))
    }
}

/// Most bytes of an unfinished line a stream holds before writing them anyway.
const MAX_UNFINISHED_LINE: usize = 4096;

/// One instance's stream into its container's log, writing whole lines. A line is done at
/// `\n` or `\r` (a progress bar redraws with `\r`); an unfinished line is held until it is
/// done, reaches [`MAX_UNFINISHED_LINE`] bytes, or the stream closes (the instance ends, however it
/// ends). A guest's flush does not write a held piece: every piece of an unbuffered print is
/// followed by one.
struct Lines {
    sink: LogSink,
    held: Vec<u8>,
}

impl Lines {
    fn new(sink: LogSink) -> Lines {
        Lines { sink, held: Vec::new() }
    }

    fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let done = bytes.iter().rposition(|b| matches!(b, b'\n' | b'\r')).map_or(0, |i| i + 1);
        let (lines, rest) = bytes.split_at(done);
        if !lines.is_empty() {
            if self.held.is_empty() {
                self.sink.write(lines)?;
            } else {
                self.held.extend_from_slice(lines);
                self.release()?;
            }
        }
        self.held.extend_from_slice(rest);
        if self.held.len() >= MAX_UNFINISHED_LINE {
            self.release()?;
        }
        Ok(())
    }

    fn release(&mut self) -> std::io::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let r = self.sink.write(&self.held);
        self.held.clear();
        r
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::debug!("the end of a container's output was not logged: {e}");
        }
    }
}

impl Pollable for Lines {
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

impl OutputStream for Lines {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes).map_err(|e| StreamError::LastOperationFailed(wasmtime::format_err!(e)))
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Lines {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.push(buf).map(|()| buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What a log file holds past `offset` (at most [`MAX_LOG_BYTES`]) and the offset after it;
/// a file shorter than `offset` (rotated, or a new run's) is read from its start. `None`: no
/// such file.
pub async fn read_from(path: &Path, offset: u64) -> Option<(Bytes, u64)> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await.ok()?;
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let offset = if len < offset { 0 } else { offset };
    if len == offset {
        return Some((Bytes::new(), offset));
    }
    let mut buf = Vec::with_capacity((len - offset).min(MAX_LOG_BYTES) as usize);
    f.seek(std::io::SeekFrom::Start(offset)).await.ok()?;
    (&mut f).take(MAX_LOG_BYTES).read_to_end(&mut buf).await.ok()?;
    let next = offset + buf.len() as u64;
    Some((Bytes::from(buf), next))
}

/// Follow a log file from `offset`: what is appended to it arrives on the receiver (the file
/// is looked at every 100 ms, see [`read_from`]). Ends when the file is gone, `stop` is
/// cancelled or the receiver is dropped.
pub fn follow(
    path: PathBuf,
    mut offset: u64,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::sync::mpsc::Receiver<Bytes> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
            }
            let Some((b, next)) = read_from(&path, offset).await else { return };
            offset = next;
            if !b.is_empty() && tx.send(b).await.is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_bounds_the_disk_used() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("main.log");
        std::fs::write(&p, "last run\n").unwrap();
        let sink = LogSink::open_with_limit(&p, 100).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("main.log.previous")).unwrap(), "last run\n");
        for i in 0..100 {
            sink.write(format!("line {i:03} xxxxxxxxxxxxxxxxxxxxx\n").as_bytes()).unwrap();
        }
        // 3000 bytes written, at most 100 per file, current + KEEP_ROTATED kept.
        let mut total = 0;
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            let name = f.file_name().into_string().unwrap();
            assert!(
                name == "main.log" || name == "main.log.previous" || name.starts_with("main.log."),
                "unexpected file {name}"
            );
            if name != "main.log.previous" {
                let len = f.metadata().unwrap().len();
                assert!(len <= 100, "{name} is {len} bytes");
                total += len;
            }
        }
        assert!(total <= 100 * (KEEP_ROTATED as u64 + 1));
        assert!(!d.path().join(format!("main.log.{}", KEEP_ROTATED + 1)).exists());
        // The newest output is in the current file, the one before it in `.1`.
        let current = std::fs::read_to_string(&p).unwrap();
        assert!(current.ends_with("line 099 xxxxxxxxxxxxxxxxxxxxx\n"), "{current}");
        let newest_rotated = std::fs::read_to_string(d.path().join("main.log.1")).unwrap();
        assert!(newest_rotated.len() == 100);
        // A new run starts clean: rotated parts of the old run are gone.
        LogSink::open_with_limit(&p, 100).unwrap();
        assert!(!d.path().join("main.log.1").exists());
    }

    #[test]
    fn a_quiet_log_holds_no_descriptor_and_reopens_on_write() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("quiet.log");
        let sink = LogSink::open(&p).unwrap();
        let is_open = |s: &LogSink| s.0.lock().unwrap().file.is_some();
        assert!(!is_open(&sink), "nothing written yet");
        sink.write(b"one\n").unwrap();
        assert!(is_open(&sink));
        close_idle(std::time::Duration::ZERO);
        assert!(!is_open(&sink));
        sink.write(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n", "appended after reopening");
        let weak = Arc::downgrade(&sink.0);
        drop(sink);
        close_idle(std::time::Duration::ZERO);
        assert!(SINKS.lock().unwrap().iter().all(|w| !w.ptr_eq(&weak)), "a dropped sink leaves the list");
    }

    #[test]
    fn instances_streams_log_whole_lines_and_their_unfinished_ends_when_they_close() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("main.log");
        let sink = LogSink::open(&p).unwrap();
        let read = || std::fs::read_to_string(&p).unwrap();
        let (mut a, mut b) = (Lines::new(sink.clone()), Lines::new(sink.clone()));
        // Two instances printing a line each in pieces, at once.
        for (first, piece) in [(true, "a: "), (false, "b: "), (true, "one"), (false, "two")] {
            let s = if first { &mut a } else { &mut b };
            s.push(piece.as_bytes()).unwrap();
        }
        assert_eq!(read(), "", "nothing of an unfinished line is written");
        b.push(b"\n").unwrap();
        a.push(b"\nand a half").unwrap();
        assert_eq!(read(), "b: two\na: one\n", "each line whole, as it was finished");
        // A carriage return ends a line too (a progress bar's redraw).
        b.push(b"50%\r").unwrap();
        assert_eq!(read(), "b: two\na: one\n50%\r");
        // An instance that ends mid-line still has its last words logged.
        drop(a);
        assert_eq!(read(), "b: two\na: one\n50%\rand a half");
        // A line longer than the stream holds is written as it comes, held part first.
        b.push(b"x").unwrap();
        b.push(&vec![b'y'; MAX_UNFINISHED_LINE]).unwrap();
        assert_eq!(read().len(), "b: two\na: one\n50%\rand a half".len() + 1 + MAX_UNFINISHED_LINE);
        assert!(read().ends_with(&format!("x{}", "y".repeat(MAX_UNFINISHED_LINE))));
        assert!(b.held.is_empty());
        drop(b);
    }

    #[tokio::test]
    async fn read_from_gives_what_was_appended_and_starts_over_on_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        assert!(read_from(&p, 0).await.is_none());
        std::fs::write(&p, b"abc").unwrap();
        let (b, o) = read_from(&p, 0).await.unwrap();
        assert_eq!((&b[..], o), (&b"abc"[..], 3));
        let (b, o) = read_from(&p, 3).await.unwrap();
        assert_eq!((&b[..], o), (&b""[..], 3));
        // A new run's (shorter) file is read from its start.
        std::fs::write(&p, b"x").unwrap();
        let (b, o) = read_from(&p, 3).await.unwrap();
        assert_eq!((&b[..], o), (&b"x"[..], 1));
    }
}
