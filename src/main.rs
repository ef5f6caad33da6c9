//! The `leadlex` binary: parse the command line, run it. Everything else lives in the
//! library (`leadlex::cli`).

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = leadlex::cli::Cli::parse();
    let json = cli.json;
    match leadlex::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // `--json` promises one JSON object on stdout, failures included.
            if json {
                println!("{}", serde_json::json!({"error": {"message": format!("{err:#}")}}));
            }
            std::process::ExitCode::FAILURE
        }
    }
}
