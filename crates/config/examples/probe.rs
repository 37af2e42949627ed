fn main() {
    let path = std::env::args().nth(1).unwrap();
    let mode = std::env::args().nth(2).unwrap_or_default();
    let text = std::fs::read_to_string(&path).unwrap();
    if mode == "ignored" {
        let _: serde::de::IgnoredAny = serde_saphyr::from_str(&text).unwrap();
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    for l in status.lines() {
        if l.starts_with("VmHWM") {
            println!("{l}");
        }
    }
}
