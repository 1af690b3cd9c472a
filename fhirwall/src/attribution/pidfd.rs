//! Process handles: pidfds (pidfd_open(2), Linux 5.3). A pidfd refers to one process, not to a
//! pid: after that process exits it stays "exited" even when the pid number has been handed to
//! another process. Holding one per cached process turns the check "is the cached process still
//! the one with this pid?" into a single non-blocking `poll`, with no procfs text to generate.

use std::{
    io,
    os::fd::{AsFd as _, FromRawFd as _, OwnedFd},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// An open pidfd.
#[derive(Debug)]
pub struct ProcessHandle(OwnedFd);

impl ProcessHandle {
    /// Opens a handle on the process whose thread group id is `tgid` in the agent's pid
    /// namespace.
    pub fn open(tgid: u32) -> io::Result<Self> {
        let pid =
            libc::pid_t::try_from(tgid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags by value and returns a new descriptor or -1;
        // no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Whether the process has exited (zombie or reaped). A pidfd polls readable once the whole
    /// thread group has exited (kernel/pid.c, `pidfd_poll`), so a leader thread that called
    /// `pthread_exit` while other threads run still counts as running.
    pub fn has_exited(&self) -> io::Result<bool> {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::ZERO).map_err(io::Error::from)?;
        Ok(ready > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_one_process_through_its_exit() {
        let own = ProcessHandle::open(std::process::id()).expect("own pidfd");
        assert!(!own.has_exited().expect("poll"));
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let handle = ProcessHandle::open(child.id()).expect("child pidfd");
        child.wait().expect("reap");
        assert!(handle.has_exited().expect("poll"));
        assert!(ProcessHandle::open(u32::MAX).is_err());
    }
}
