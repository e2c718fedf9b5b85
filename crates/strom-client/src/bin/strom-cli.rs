//! Stand-alone entry point of the CLI (the same commands `strom` exposes).
use clap::Parser;

#[derive(Parser)]
#[command(name = "strom-cli", about = "Strom command line client")]
struct Args {
    #[command(subcommand)]
    cmd: strom_client::cli::Command,
}

fn main() {
    let args = Args::parse();
    std::process::exit(strom_client::cli::run(args.cmd));
}
