#![no_main]
//! Config parsing and validation: any text gets a Config or a list of problems, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = aigate::config::load_str(text, "fuzz", std::path::Path::new("."));
    }
});
