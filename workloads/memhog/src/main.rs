//! memhog: a hostile workload that grows its memory 1 MiB at a time until it is stopped.
//! With a memory limit the growth fails inside the instance, not on the node. With
//! `HOLD_MIB=N` it stops growing at N MiB and holds them (for usage figures).

fn main() {
    let hold: Option<usize> = std::env::var("HOLD_MIB").ok().and_then(|v| v.parse().ok());
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        if hold.is_some_and(|h| hoard.len() >= h) {
            println!("memhog: holding {} MiB", hoard.len());
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        let mut chunk = vec![0u8; 1 << 20];
        // Touch every page so the memory is really used.
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = 1;
        }
        hoard.push(chunk);
        if hoard.len() % 8 == 0 {
            println!("memhog: holding {} MiB", hoard.len());
        }
    }
}
