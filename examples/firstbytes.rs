use ferry::archive::{self, Counters, PackOptions};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
struct Sink {
    t0: Instant,
    n: u64,
    marks: Vec<(u64, f64)>,
}
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let before = self.n;
        self.n += b.len() as u64;
        for m in [1u64, 1 << 20, 3_400_000, 10_000_000, 50_000_000] {
            if before < m && self.n >= m {
                self.marks.push((m, self.t0.elapsed().as_secs_f64() * 1e3));
            }
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
fn main() {
    let root = std::env::args().nth(1).unwrap();
    let threads: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(2);
    let t0 = Instant::now();
    let mut sink = Sink {
        t0,
        n: 0,
        marks: vec![],
    };
    archive::pack(
        std::path::Path::new(&root),
        &mut sink,
        &PackOptions { level: 1, threads },
        &AtomicBool::new(false),
        &Counters::default(),
    )
    .unwrap();
    println!(
        "marks (bytes, ms): {:?}; total {:.0} ms {} bytes",
        sink.marks,
        t0.elapsed().as_secs_f64() * 1e3,
        sink.n
    );
}
