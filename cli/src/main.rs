//! ant binary.
fn main() {}
