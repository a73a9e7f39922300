//! Placeholder until the retry suite lands.
fn main() {}
