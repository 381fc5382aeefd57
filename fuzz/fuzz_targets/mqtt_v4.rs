//! MQTT 3.1.1 (level 4) and 3.1 (level 3, read as 4) packets through
//! `warren_mqtt::codec::read`, looping over the buffer until `Incomplete`
//! or an error: first as a session reads them (CONNECT at level 0, then
//! level 4), then at levels 4 and 3 throughout, which must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common_mqtt.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::read_all(data, 0, 4);
    let v4 = common::read_all(data, 4, 4);
    let v3 = common::read_all(data, 3, 3);
    assert_eq!(v4, v3, "levels 3 and 4 read differently");
});
