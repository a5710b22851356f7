#![no_main]
//! Host normalisation: total, and idempotent on what it accepts.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(host) = aigate::host::normalise(text) {
            assert_eq!(aigate::host::normalise(&host.to_string()).ok(), Some(host));
        }
    }
});
