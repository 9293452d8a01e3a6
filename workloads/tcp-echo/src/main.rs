//! tcp-echo: a long-running `wasi:sockets` server. Listens on `$POD_IP:$PORT` (default port
//! 7000) and sends back whatever each client sends, many clients at once.
//!
//! For probe demonstrations: `READY_AFTER_SECS` delays listening, `STOP_AFTER_SECS` closes the
//! listener (the process keeps running) so tcpSocket probes start failing.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn secs(var: &str) -> Option<Duration> {
    std::env::var(var).ok()?.parse().ok().map(Duration::from_secs)
}

fn main() {
    let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(7000);
    if let Some(d) = secs("READY_AFTER_SECS") {
        println!("tcp-echo: waiting {d:?} before listening");
        std::thread::sleep(d);
    }
    let listener = match TcpListener::bind((ip.as_str(), port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tcp-echo: cannot listen on {ip}:{port}: {e}");
            std::process::exit(1);
        }
    };
    listener.set_nonblocking(true).expect("nonblocking listener");
    println!("tcp-echo: listening on {ip}:{port}");
    let stop_at = secs("STOP_AFTER_SECS").map(|d| Instant::now() + d);
    let mut listener = Some(listener);
    let mut clients: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut busy = false;
        if stop_at.is_some_and(|t| Instant::now() >= t) && listener.take().is_some() {
            println!("tcp-echo: stopped listening");
        }
        if let Some(l) = &listener {
            match l.accept() {
                Ok((s, peer)) => {
                    s.set_nonblocking(true).expect("nonblocking stream");
                    println!("tcp-echo: client {peer}");
                    clients.push(s);
                    busy = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => eprintln!("tcp-echo: accept: {e}"),
            }
        }
        clients.retain_mut(|s| match s.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                busy = true;
                let _ = s.set_nonblocking(false);
                let ok = s.write_all(&buf[..n]).is_ok();
                let _ = s.set_nonblocking(true);
                ok
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => true,
            Err(_) => false,
        });
        if !busy {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
