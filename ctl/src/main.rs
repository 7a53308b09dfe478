//! ironctl, the operator's CLI.

fn main() {}
