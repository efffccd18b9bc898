//! `hush`: the reference relay, the end-to-end demo, and a chat client.

fn main() {}
