//! Placeholder until the bulkhead suite lands.
fn main() {}
