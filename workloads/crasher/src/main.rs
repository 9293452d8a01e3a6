//! crasher: prints a line to stderr and exits with a failure, for restart and back-off tests.
//! (WASI 0.2's `exit` carries success or failure only, so the node reports exit code 1.)

fn main() {
    eprintln!("crasher: giving up");
    std::process::exit(3);
}
