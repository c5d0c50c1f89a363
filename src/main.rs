use clap::Parser;

fn main() {
    let cli = housekeep::cli::Cli::parse();
    if let Err(e) = housekeep::cli::run(cli) {
        eprintln!("housekeep: {}", e.report());
        std::process::exit(e.exit_code());
    }
}
