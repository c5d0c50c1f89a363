use clap::Parser;

fn main() {
    let cli = housekeep::cli::Cli::parse();
    if let Err(e) = housekeep::cli::run(cli) {
        let report = e.report().to_string();
        if housekeep::logging::errors_as_json() {
            eprintln!("{}", housekeep::logging::error_line(&report, e.exit_code()));
        } else {
            eprintln!("housekeep: {report}");
        }
        std::process::exit(e.exit_code());
    }
}
