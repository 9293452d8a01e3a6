//! Structured logging: one `level=… msg="…"` line per call on stderr, which the node captures
//! per container and serves through `wasmorch logs`.

fn line(level: &str, msg: &str) {
    eprintln!("level={level} msg={msg:?}");
}

pub fn info(msg: &str) {
    line("info", msg)
}

pub fn warn(msg: &str) {
    line("warn", msg)
}

pub fn error(msg: &str) {
    line("error", msg)
}
