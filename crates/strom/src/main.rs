fn main() {
    println!("strom {}", env!("CARGO_PKG_VERSION"));
}
