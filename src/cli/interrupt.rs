//! Ctrl-C (SIGINT) and SIGTERM during a command that writes files: a cleanup runs, then the
//! process ends with 128 + the signal's number, as a shell reports a killed command.
//!
//! The signal handler only writes the signal's number to a pipe (async-signal-safe); a thread
//! waiting on the pipe does the work a handler may not (removing folders, printing).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The pipe's write end, for the handler; -1 while none is installed.
static PIPE: AtomicI32 = AtomicI32::new(-1);

/// Set by the handler: the cleanup thread owns the process's end from then on.
static PENDING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE.load(Ordering::SeqCst);
    let byte = sig as u8;
    PENDING.store(true, Ordering::SeqCst);
    // SAFETY: write() and signal() are async-signal-safe. The default action makes a second
    // signal final, should the cleanup hang.
    unsafe {
        if fd >= 0 {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// On the first SIGINT or SIGTERM, runs `cleanup` (on a thread of its own, while the command
/// goes on) and exits with 128 + the signal. Installed once per process.
pub fn exit_after(cleanup: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(anyhow::anyhow!(
            "cannot install the Ctrl-C handler: {}",
            std::io::Error::last_os_error()
        ));
    }
    let [read_end, write_end] = fds;
    PIPE.store(write_end, Ordering::SeqCst);
    std::thread::spawn(move || {
        let mut sig = 0u8;
        loop {
            // SAFETY: reads one byte into `sig` from a descriptor this thread owns.
            let n = unsafe { libc::read(read_end, (&mut sig as *mut u8).cast(), 1) };
            if n == 1 {
                break;
            }
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        cleanup();
        std::process::exit(128 + i32::from(sig));
    });
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
    Ok(())
}

/// Where a signal has arrived, waits for the cleanup thread to end the process: the command's
/// own failure (its temporary folder removed under it) must not end it first with another
/// status and message.
pub fn yield_to_cleanup() {
    if PENDING.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}
