//! Loads a configuration and prints how many entries it has: `bench/config-scale.sh` times
//! this against `regferry config`, to tell loading from printing.
// A benchmark helper whose whole job is one line of output.
#![allow(clippy::print_stdout, clippy::print_stderr)]
fn main() {
    let path = std::env::args().nth(1).expect("usage: load FILE");
    match regferry_config::load_file(
        std::path::Path::new(&path),
        &regferry_config::template::SystemHost,
    ) {
        Ok(l) => println!(
            "{} entries, {} warnings",
            l.config.sync.len(),
            l.warnings.len()
        ),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}
