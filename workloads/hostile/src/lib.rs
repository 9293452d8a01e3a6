//! hostile: an HTTP component (`wasi:http/incoming-handler`) that misbehaves on request, for
//! the node's resource-limit tests and benchmarks.
//!
//! - `GET /busy?ms=N`: burn CPU for N ms of wall time, then answer.
//! - `GET /hold?mib=N&ms=M`: allocate and touch N MiB, hold it M ms, then answer.
//! - `GET /leak?n=N`: create N header maps of 32 KiB each in host memory and keep them
//!   (host resources, not linear memory), then answer.
//! - `GET /flood?lines=N`: write N lines to stdout.
//! - `GET /overflow`: recurse until the stack overflows.
//! - `GET /late?ms=M`: wait M ms, log `hostile: answering late`, then answer.
//! - `GET /trap`: trap before answering.
//! - `GET /silent`: return without answering.
//! - `GET /stream?chunks=N&ms=M`: answer, then write N lines M ms apart before returning.
//! - anything else: `ok`.

use wasip2::clocks::monotonic_clock;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hostile;

fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::new();
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).expect("valid status");
    let body = resp.body().expect("body once");
    ResponseOutparam::set(out, Ok(resp));
    let stream = body.write().expect("stream once");
    stream.blocking_write_and_flush(text.as_bytes()).expect("write body");
    drop(stream);
    OutgoingBody::finish(body, None).expect("finish body");
}

fn param(query: &str, name: &str) -> Option<u64> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

fn sleep_ms(ms: u64) {
    monotonic_clock::subscribe_duration(ms * 1_000_000).block();
}

fn busy(ms: u64) -> u64 {
    let end = monotonic_clock::now() + ms * 1_000_000;
    let mut x: u64 = 1;
    let mut spins = 0u64;
    while monotonic_clock::now() < end {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        }
        spins += 1;
    }
    spins
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let mut next = [0u8; 256];
    std::hint::black_box(&mut next);
    recurse(depth + 1, &mut next) + pad[0] as u64
}

impl wasip2::exports::http::incoming_handler::Guest for Hostile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_else(|| "/".into());
        let (path, query) = full.split_once('?').unwrap_or((full.as_str(), ""));
        match path {
            "/busy" => {
                let spins = busy(param(query, "ms").unwrap_or(100));
                respond(out, 200, &format!("busy: {spins} spins\n"));
            }
            "/hold" => {
                let mib = param(query, "mib").unwrap_or(1) as usize;
                let mut hoard = vec![0u8; mib << 20];
                for i in (0..hoard.len()).step_by(4096) {
                    hoard[i] = 1;
                }
                sleep_ms(param(query, "ms").unwrap_or(0));
                let touched: usize = hoard.iter().step_by(4096).map(|b| *b as usize).sum();
                respond(out, 200, &format!("held {} MiB\n", touched >> 8));
            }
            "/leak" => {
                let n = param(query, "n").unwrap_or(u64::MAX);
                let value = vec![b'x'; 32 << 10];
                let mut kept = Vec::new();
                for i in 0..n {
                    let f = Fields::new();
                    if f.append("x-leak", &value).is_err() {
                        respond(out, 500, &format!("append failed after {i}\n"));
                        return;
                    }
                    kept.push(f);
                }
                respond(out, 200, &format!("leaked {} header maps\n", kept.len()));
                std::mem::forget(kept);
            }
            "/flood" => {
                let lines = param(query, "lines").unwrap_or(100_000);
                for i in 0..lines {
                    println!("hostile: flooding the log, line {i} .................................................");
                }
                respond(out, 200, &format!("wrote {lines} lines\n"));
            }
            "/overflow" => {
                let mut pad = [0u8; 256];
                let d = recurse(0, &mut pad);
                respond(out, 200, &format!("{d}\n"));
            }
            "/late" => {
                sleep_ms(param(query, "ms").unwrap_or(200));
                println!("hostile: answering late");
                respond(out, 200, "late\n");
            }
            "/trap" => panic!("hostile: trapping before an answer"),
            "/silent" => drop(out),
            "/stream" => {
                let chunks = param(query, "chunks").unwrap_or(3);
                let ms = param(query, "ms").unwrap_or(50);
                let resp = OutgoingResponse::new(Fields::new());
                let body = resp.body().expect("body once");
                ResponseOutparam::set(out, Ok(resp));
                let stream = body.write().expect("stream once");
                for i in 0..chunks {
                    sleep_ms(ms);
                    stream.blocking_write_and_flush(format!("chunk {i}\n").as_bytes()).expect("write body");
                }
                drop(stream);
                OutgoingBody::finish(body, None).expect("finish body");
            }
            _ => respond(out, 200, "ok\n"),
        }
    }
}

wasip2::http::proxy::export!(Hostile);
