//! MQTT 5.0 packets through `warren_mqtt::codec::read` at level 5, looping
//! over the buffer until `Incomplete` or an error: as a session reads them
//! (CONNECT at level 0, then level 5) and at level 5 throughout.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common_mqtt.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::read_all(data, 0, 5);
    common::read_all(data, 5, 5);
});
