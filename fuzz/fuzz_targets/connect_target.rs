#![no_main]
//! CONNECT target parsing: total, and what it accepts round-trips.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = aigate::proxy::connect::parse_target(text) {
            let again = aigate::proxy::connect::parse_target(&format!("{}:{}", t.host, t.port));
            assert_eq!(again.ok(), Some(t));
        }
    }
});
