//! escaper: a hostile workload that tries to reach what it was not granted and reports each
//! attempt as `reached` or `denied`. Targets come from the arguments; the defaults cover the
//! host filesystem through absolute and `..` paths, and TCP connections to each address in
//! `ESCAPE_ADDR` (comma-separated; a refused connection is retried for a few seconds, so a
//! sidecar can wait for its neighbour, while a denial is final).

use std::io::Read;

fn report(what: &str, result: Result<String, String>) {
    match result {
        Ok(detail) => println!("reached {what}: {detail}"),
        Err(e) => println!("denied {what}: {e}"),
    }
}

fn main() {
    for path in ["/etc/passwd", "../../../../etc/passwd", "/", "."] {
        let r = std::fs::read_dir(path).map(|d| format!("{} entries", d.count())).or_else(|_| {
            std::fs::File::open(path).and_then(|mut f| {
                let mut s = String::new();
                f.read_to_string(&mut s).map(|n| format!("{n} bytes"))
            })
        });
        report(&format!("file {path}"), r.map_err(|e| e.to_string()));
    }
    for addr in std::env::var("ESCAPE_ADDR").unwrap_or_default().split(',').filter(|a| !a.is_empty()) {
        let mut r = Err(String::new());
        for _ in 0..50 {
            r = std::net::TcpStream::connect(addr).map(|_| "connected".to_string()).map_err(|e| e.to_string());
            match &r {
                Err(e) if e.contains("refused") => std::thread::sleep(std::time::Duration::from_millis(100)),
                _ => break,
            }
        }
        report(&format!("tcp {addr}"), r);
    }
    let r = std::net::TcpListener::bind("0.0.0.0:7777").map(|_| "bound".to_string()).map_err(|e| e.to_string());
    report("bind 0.0.0.0:7777", r);
    println!("escaper: done");
}
