//! The `keyrite` binary: everything happens in `keyrite::cli`.
fn main() -> std::process::ExitCode {
    keyrite::cli::main()
}
