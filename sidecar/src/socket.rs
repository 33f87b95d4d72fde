//! Creating the listening socket: refusing to steal another sidecar's, clearing a stale one left
//! by a crash, and giving the file the owner and mode the PBX user needs to connect.

use std::{
    fs::{self, Permissions},
    io,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// How long to wait for a live sidecar to accept the probe connection. A listener whose backlog
/// is full never accepts, yet it is alive: a timeout counts as "someone is listening".
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how to create the listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Path of the socket file; missing parent directories are created.
    pub path: PathBuf,
    /// Permission bits given to the socket file after it is bound.
    pub mode: u32,
    /// Group to own the socket file, by name, so that members (e.g. `asterisk`) may connect.
    pub group: Option<String>,
}

impl SocketOptions {
    /// Options for `path` with mode `0660` and the group left as created.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mode: 0o660,
            group: None,
        }
    }
}

/// Why [`bind`] refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something answered a connection on the socket path.
    #[error("another sidecar is already listening on {}", .0.display())]
    AlreadyListening(PathBuf),
    /// The path exists but is not a socket; it is left alone.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// The `--socket-group` name could not be resolved.
    #[error("cannot use group {name:?} for the socket: {reason}")]
    Group {
        /// The group name asked for.
        name: String,
        /// Why it could not be used.
        reason: String,
    },
    /// A filesystem or socket call failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "binding".
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BindError {
    let path = path.to_path_buf();
    move |source| BindError::Io {
        action,
        path,
        source,
    }
}

/// Creates the listening socket described by `opts`.
///
/// Must be called from within a tokio runtime. An existing socket file is probed: if a process
/// accepts on it this fails with [`BindError::AlreadyListening`], otherwise the file is stale and
/// is removed. Any other kind of file at the path is refused.
pub async fn bind(opts: &SocketOptions) -> Result<UnixListener, BindError> {
    let path = opts.path.as_path();
    // Resolve the group first: a typo should fail before the filesystem is touched.
    let gid = opts.group.as_deref().map(lookup_group).transpose()?;
    clear_stale(path).await?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_error("creating directory", parent))?;
    }
    let listener = UnixListener::bind(path).map_err(io_error("binding", path))?;
    if let Err(e) = set_owner_and_mode(path, gid, opts.mode) {
        // Leave no half-configured socket behind for the next start to puzzle over.
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

fn set_owner_and_mode(path: &Path, gid: Option<u32>, mode: u32) -> Result<(), BindError> {
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_error("chowning", path))?;
    }
    // Set explicitly: what bind(2) leaves depends on the umask of whoever started us.
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io_error("chmodding", path))
}

fn lookup_group(name: &str) -> Result<u32, BindError> {
    let fail = |reason: String| BindError::Group {
        name: name.to_owned(),
        reason,
    };
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(fail("no such group".to_owned())),
        Err(errno) => Err(fail(errno.desc().to_owned())),
    }
}

async fn clear_stale(path: &Path) -> Result<(), BindError> {
    // symlink_metadata: a symlink is not a socket, and following it could delete someone else's.
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("inspecting", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_path_buf()));
    }
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        // A full backlog makes a non-blocking connect fail with EAGAIN: alive all the same.
        Ok(Ok(_)) | Err(_) => Err(BindError::AlreadyListening(path.to_path_buf())),
        Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(BindError::AlreadyListening(path.to_path_buf()))
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => match fs::remove_file(path) {
            Ok(()) => {
                warn!(path = %path.display(), "removed stale socket left by an earlier run");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("removing stale socket", path)(e)),
        },
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) => Err(io_error("probing existing socket", path)(e)),
    }
}

/// The socket file as it was when serving began, so that shutdown removes that file and not one
/// a newer sidecar has since bound at the same path.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl SocketFile {
    pub(crate) fn of(listener: &UnixListener) -> Option<Self> {
        let addr = listener.local_addr().ok()?;
        let path = addr.as_pathname()?.to_path_buf();
        let meta = fs::symlink_metadata(&path).ok()?;
        Some(Self {
            path,
            identity: (meta.dev(), meta.ino()),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn remove(self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => {
                match fs::remove_file(&self.path) {
                    Ok(()) => info!(path = %self.path.display(), "removed socket"),
                    Err(e) => warn!(path = %self.path.display(), "cannot remove socket: {e}"),
                }
            }
            Ok(_) => warn!(path = %self.path.display(), "socket was replaced; leaving it"),
            Err(_) => {}
        }
    }
}
