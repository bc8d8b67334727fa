//! Sandbox benchmark (filled in with the sandbox).
fn main() {}
