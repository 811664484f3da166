//! The `ferry` binary: a thin command-line front over the library.

fn main() {
    println!("ferry {}", ferry::VERSION);
}
