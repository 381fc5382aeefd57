//! Writes the committed seed corpora under `fuzz/seeds/<target>/`: valid
//! AMQP frames, MQTT packets and store segments made with the crates' own
//! writers (hand-built bytes only where Warren has no writer, such as the
//! MQTT packets a client sends), each checked by reading it back.
//!
//! Run from `fuzz/`: `cargo run --example gen_seeds` (a plain build; it does
//! not need cargo-fuzz). The output is deterministic.

mod amqp;
mod mqtt;
mod store;

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    amqp::amqp(&root.join("amqp_frame"));
    mqtt::mqtt_v4(&root.join("mqtt_v4"));
    mqtt::mqtt_v5(&root.join("mqtt_v5"));
    store::store(&root);
    println!("seeds written under {}", root.display());
}

/// Write one seed file `name` into `dir`.
fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}
