//! toolbox: a command component to run with `kubectl exec` (its own container's, or as a pod's
//! `wasmorch.io/debug-image`). `argv[0]` is the container's name; `argv[1]` the tool:
//! - `echo WORDS…`: the words, space-separated, on stdout;
//! - `cat`: stdin to stdout until stdin ends;
//! - `env [NAME]`: one variable's value, or every variable;
//! - `ls [DIR]`: the names in a directory (`/` by default);
//! - `fail [MESSAGE]`: the message on stderr, exit status 1;
//! - `sleep`: wait forever (a process container that stays up to be exec'd into).

use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words = || args.get(1..).unwrap_or_default().join(" ");
    match args.first().map(String::as_str) {
        Some("echo") => println!("{}", words()),
        Some("cat") => {
            let mut buf = [0u8; 16 << 10];
            let (mut stdin, mut stdout) = (std::io::stdin(), std::io::stdout());
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stdout.write_all(&buf[..n]).and_then(|_| stdout.flush()).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        Some("env") => match args.get(1) {
            Some(name) => println!("{}", std::env::var(name).unwrap_or_default()),
            None => std::env::vars().for_each(|(k, v)| println!("{k}={v}")),
        },
        Some("ls") => {
            let dir = args.get(1).map(String::as_str).unwrap_or("/");
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut names: Vec<String> =
                        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                    names.sort();
                    names.iter().for_each(|n| println!("{n}"));
                }
                Err(e) => {
                    eprintln!("ls {dir}: {e}");
                    std::process::exit(1);
                }
            }
        }
        Some("fail") => {
            eprintln!("{}", words());
            std::process::exit(1);
        }
        Some("sleep") => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        _ => {
            eprintln!("usage: echo WORDS… | cat | env [NAME] | ls [DIR] | fail [MESSAGE] | sleep");
            std::process::exit(2);
        }
    }
}
