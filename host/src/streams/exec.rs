//! `kubectl exec` and `attach` over WebSocket: Kubernetes' channel protocol
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`). Every binary message starts with a channel
//! byte: 0 stdin, 1 stdout, 2 stderr, 3 the final status (a `Status` object), 4 terminal
//! resize; in v5, `[255, n]` closes channel `n` (the client's end of stdin).
//!
//! What exec means for a component (see ARCHITECTURE.md, "exec"): a fresh instance of the
//! container's command component (or of the debug component a pod names) with the
//! arguments given, the container's environment, mounts, network policy and resource
//! account, its stdio on these channels, its exit code in the status.

use crate::runtime::Stdio;
use crate::runtime::process::Exit;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;
/// Bytes buffered per stdio stream between the instance and the socket.
const PIPE: usize = 64 << 10;

/// The protocol to speak, of those the client offers (`Sec-WebSocket-Protocol`).
pub fn pick_protocol(offered: &str) -> Option<&'static str> {
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    [V5, V4].into_iter().find(|p| offered.contains(p))
}

/// What the client asked for, from the query string.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    pub fn parse(query: &str) -> Options {
        let mut o = Options::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let on = matches!(v.as_ref(), "true" | "1");
            match k.as_ref() {
                "command" => o.command.push(v.into_owned()),
                "stdin" | "input" => o.stdin = on,
                "stdout" | "output" => o.stdout = on,
                "stderr" | "error" => o.stderr = on,
                "tty" => o.tty = on,
                _ => {}
            }
        }
        o
    }
}

/// The status a finished command reports on channel 3.
pub fn status(exit: &Exit) -> Value {
    match exit {
        Exit::Code(0) => json!({"metadata": {}, "status": "Success"}),
        e => {
            let code = e.code();
            let mut message = format!("command terminated with non-zero exit code: exit status {code}");
            if !e.message().is_empty() {
                message.push_str(&format!(" ({})", e.message()));
            }
            json!({"metadata": {}, "status": "Failure", "message": message, "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
        }
    }
}

/// A failure before anything ran, on channel 3.
pub fn failure(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

pub(super) fn framed(channel: u8, data: &[u8]) -> Message {
    let mut b = Vec::with_capacity(1 + data.len());
    b.push(channel);
    b.extend_from_slice(data);
    Message::Binary(Bytes::from(b))
}

/// A close frame with a normal closure (1000): kubectl takes any other close as an error.
pub(super) fn close_normal() -> Message {
    Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: Default::default(),
    }))
}

/// The socket's one writer: messages sent on the channel go out in order; a close frame is
/// the last.
pub(super) fn writer<K>(mut sink: K) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>)
where
    K: futures::Sink<Message> + Unpin + Send + 'static,
{
    let (out, mut out_rx) = mpsc::channel::<Message>(64);
    let task = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    (out, task)
}

/// What the client sends, as the session acts on it.
pub(super) enum Input {
    Stdin(Bytes),
    /// The end of the client's stdin (v5's close of channel 0).
    CloseStdin,
}

/// The client's next input; `None` once it has gone (closed, or the connection broke).
/// Resizes and anything else are skipped: there is no terminal to resize.
pub(super) async fn next_input<S>(stream: &mut S, v5: bool) -> Option<Input>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await? {
            Ok(Message::Binary(b)) => match (b.first(), b.get(1)) {
                (Some(&STDIN), _) => return Some(Input::Stdin(b.slice(1..))),
                (Some(&CLOSE), Some(&STDIN)) if v5 => return Some(Input::CloseStdin),
                _ => {}
            },
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Copy `r` to the socket as messages on `channel` until it ends.
async fn pump(mut r: impl AsyncRead + Unpin, channel: u8, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(framed(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Where an instance's output goes: a pipe to a channel, or nowhere.
fn output(
    wanted: bool,
    channel: u8,
    out: &mpsc::Sender<Message>,
    pumps: &mut Vec<tokio::task::JoinHandle<()>>,
) -> wasmtime_wasi::cli::AsyncStdoutStream {
    if !wanted {
        return wasmtime_wasi::cli::AsyncStdoutStream::new(PIPE, tokio::io::sink());
    }
    // A duplex, not a split simplex: dropping the instance's end is the reader's EOF.
    let (w, r) = tokio::io::duplex(PIPE);
    pumps.push(tokio::spawn(pump(r, channel, out.clone())));
    wasmtime_wasi::cli::AsyncStdoutStream::new(PIPE, w)
}

/// Serve one exec session: run the instance `run` starts with the session's stdio, send its
/// status, close. The instance is stopped if the client goes away first.
pub async fn session<S, F, Fut>(ws: WebSocketStream<S>, v5: bool, opts: Options, run: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(Stdio, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<Exit, String>>,
{
    let (sink, mut stream) = ws.split();
    let (out, writer) = writer(sink);
    let mut pumps = Vec::new();
    let stdout = output(opts.stdout, STDOUT, &out, &mut pumps);
    // With a terminal, Kubernetes merges stderr into stdout.
    let stderr = output(opts.stderr || opts.tty, if opts.tty { STDOUT } else { STDERR }, &out, &mut pumps);
    let (stdin, mut stdin_w) = if opts.stdin {
        let (r, w) = tokio::io::duplex(PIPE);
        (Some(wasmtime_wasi::cli::AsyncStdinStream::new(r)), Some(w))
    } else {
        (None, None)
    };
    let gone = CancellationToken::new();
    let g = gone.clone();
    // The client's messages: stdin, its close, resizes (no terminal here to resize).
    let reader = tokio::spawn(async move {
        while let Some(input) = next_input(&mut stream, v5).await {
            match input {
                Input::Stdin(b) => {
                    if let Some(w) = stdin_w.as_mut()
                        && w.write_all(&b).await.is_err()
                    {
                        stdin_w = None;
                    }
                }
                Input::CloseStdin => {
                    if let Some(mut w) = stdin_w.take() {
                        let _ = w.shutdown().await;
                    }
                }
            }
        }
        g.cancel();
    });
    let exit = run(Stdio { stdin, stdout: Some(stdout), stderr: Some(stderr) }, gone.clone()).await;
    // The instance (and with it the pipes' writing ends) is gone: drain what it wrote.
    for p in pumps {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), p).await;
    }
    if !gone.is_cancelled() {
        let st = match &exit {
            Ok(e) => status(e),
            Err(why) => failure(why),
        };
        let _ = out.send(framed(ERROR, st.to_string().as_bytes())).await;
        let _ = out.send(close_normal()).await;
    }
    drop(out);
    let _ = writer.await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_options() {
        assert_eq!(pick_protocol("v5.channel.k8s.io, v4.channel.k8s.io"), Some(V5));
        assert_eq!(pick_protocol("v4.channel.k8s.io,v3.channel.k8s.io"), Some(V4));
        assert_eq!(pick_protocol("channel.k8s.io"), None);
        let o = Options::parse("command=greet&command=--name%3Dx&command=a+b&stdin=true&stdout=true&tty=false");
        assert_eq!(
            o,
            Options {
                command: vec!["greet".into(), "--name=x".into(), "a b".into()],
                stdin: true,
                stdout: true,
                stderr: false,
                tty: false
            }
        );
    }

    #[test]
    fn exit_statuses_read_as_kubectl_expects() {
        assert_eq!(status(&Exit::Code(0))["status"], "Success");
        let s = status(&Exit::Code(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        let t = status(&Exit::Trap("wasm trap: unreachable".into()));
        assert_eq!(t["details"]["causes"][0]["message"], "134");
        assert!(t["message"].as_str().unwrap().contains("unreachable"));
    }
}
