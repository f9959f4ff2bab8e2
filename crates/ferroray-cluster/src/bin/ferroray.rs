//! The `ferroray` command (see `ferroray_cluster::cli`).

fn main() {
    ferroray_cluster::logging();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let exe = std::env::current_exe().map(|p| p.into_os_string()).unwrap_or_else(|_| args[0].clone());
    std::process::exit(ferroray_cluster::cli::main(args, vec![exe]));
}
