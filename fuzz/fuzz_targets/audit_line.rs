#![no_main]
//! Audit-line parsing in `verify`: any bytes get a verdict, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = aigate::audit::chain::verify(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = aigate::audit::chain::check_line(&aigate::audit::chain::ChainHead::default(), text);
    }
});
