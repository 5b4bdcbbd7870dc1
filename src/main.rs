//! The `detrc` command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`detrc inspect m.onnx | head`) like other Unix tools,
    // instead of panicking inside println!.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    detrc::cli::main()
}
