//! `kubectl attach`: a running container's output from now on (its log: stdout and stderr
//! together, on channel 1) and, for a process container started with `stdin: true`, its
//! standard input — a pipe the node gives each run of the container, which attach sessions
//! write to. With `stdinOnce`, the first session's end of input is the process's end of
//! input. The session ends when the client leaves or the run ends (its status on channel 3).

use super::exec::{self, Options};
use crate::runtime::output::read_from;
use futures::StreamExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// Bytes of input buffered for a process.
const PIPE: usize = 64 << 10;

/// One run of a container, as attach sees it.
struct Run {
    stdin: tokio::sync::Mutex<Option<tokio::io::DuplexStream>>,
    ended: CancellationToken,
}

/// A container's attachable side: whether its process takes input, and its current run.
pub struct Attach {
    pub stdin: bool,
    pub once: bool,
    run: Mutex<Option<Arc<Run>>>,
}

impl Attach {
    pub fn new(stdin: bool, once: bool) -> Attach {
        Attach { stdin, once, run: Mutex::new(None) }
    }

    /// A run begins (`ended` is cancelled when it ends): the stdin to give its instance,
    /// if the container takes input.
    pub fn begin(&self, ended: CancellationToken) -> Option<wasmtime_wasi::cli::AsyncStdinStream> {
        let (pipe, stdin) = match self.stdin {
            true => {
                let (r, w) = tokio::io::duplex(PIPE);
                (Some(w), Some(wasmtime_wasi::cli::AsyncStdinStream::new(r)))
            }
            false => (None, None),
        };
        let run = Arc::new(Run { stdin: tokio::sync::Mutex::new(pipe), ended });
        *self.run.lock().unwrap_or_else(|e| e.into_inner()) = Some(run);
        stdin
    }

    fn current(&self) -> Option<Arc<Run>> {
        self.run.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Serve one attach session.
pub async fn session<S>(
    ws: WebSocketStream<S>,
    v5: bool,
    opts: Options,
    attach: Arc<Attach>,
    log: PathBuf,
    container: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Output from here on: measured before any input can reach the process.
    let mut offset = tokio::fs::metadata(&log).await.map(|m| m.len()).unwrap_or(0);
    let (sink, mut stream) = ws.split();
    let (out, writer) = exec::writer(sink);
    let run = attach.current();
    let ended = run.as_ref().map(|r| r.ended.clone()).unwrap_or_else(|| container.clone());
    let gone = CancellationToken::new();
    let g = gone.clone();
    let once = attach.once;
    let input = run.clone().filter(|_| opts.stdin);
    let reader = tokio::spawn(async move {
        while let Some(i) = exec::next_input(&mut stream, v5).await {
            let Some(run) = input.as_ref() else { continue };
            match i {
                exec::Input::Stdin(b) => {
                    let mut w = run.stdin.lock().await;
                    if let Some(pipe) = w.as_mut()
                        && pipe.write_all(&b).await.is_err()
                    {
                        *w = None;
                    }
                }
                exec::Input::CloseStdin if once => {
                    if let Some(mut pipe) = run.stdin.lock().await.take() {
                        let _ = pipe.shutdown().await;
                    }
                }
                exec::Input::CloseStdin => {}
            }
        }
        g.cancel();
    });
    let wants_output = opts.stdout || opts.stderr;
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => false,
            _ = ended.cancelled() => true,
            _ = gone.cancelled() => true,
        };
        // The log is written as the instance writes, so once its run has ended all of its
        // output is in the file: this last read misses nothing.
        if let Some((b, next)) = read_from(&log, offset).await {
            offset = next;
            if wants_output && !b.is_empty() && out.send(exec::framed(exec::STDOUT, &b)).await.is_err() {
                break;
            }
        }
        if last {
            break;
        }
    }
    if !gone.is_cancelled() {
        let done = serde_json::json!({"metadata": {}, "status": "Success"});
        let _ = out.send(exec::framed(exec::ERROR, done.to_string().as_bytes())).await;
        let _ = out.send(exec::close_normal()).await;
    }
    drop(out);
    let _ = writer.await;
    reader.abort();
}
