//! spinner: a hostile workload that burns CPU forever. The node must keep serving others.

fn main() {
    println!("spinner: spinning");
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
    }
}
