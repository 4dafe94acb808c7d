//! A stand-in for QEMU: loads `libringcast_backend.so` with libloading and drives it through
//! the same C ABI the QEMU patches use, with a small poll(2) main loop that provides the
//! host table's fd watches, timers, clock and log.
//!
//! The loop is per thread (like QEMU's main loop, everything runs on one thread): create the
//! [`MainLoop`] and the devices on the thread that drives them.
//!
//! Modules: this one (loading the plugin), `host` (the host table: log, clock, fd watches,
//! timers, and the [`MainLoop`] that runs them), `devices` (a character device with its fake
//! frontend, an audio device).

mod devices;
mod host;

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::time::{Duration, Instant};

use ringcast_backend::abi::*;

pub use devices::*;
pub use host::MainLoop;
use host::HOST;

/// The loaded plugin and its operation tables.
#[derive(Debug)]
pub struct Plugin {
    _lib: Option<libloading::Library>,
    chardev: &'static QbpChardevOps,
    audio: &'static QbpAudioOps,
}

impl Plugin {
    /// Loads the library at `path` and queries it with the harness's host table.
    pub fn load(path: &Path) -> Result<Plugin, String> {
        // SAFETY: loading runs the library's initialisers; the backend has none that matter.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        // SAFETY: the symbol has the QbpPluginQueryFn signature (ABI contract).
        let query: libloading::Symbol<QbpPluginQueryFn> =
            unsafe { lib.get(b"qbp_plugin_query\0") }.map_err(|e| e.to_string())?;
        let mut p = Self::query(*query)?;
        p._lib = Some(lib);
        Ok(p)
    }

    /// The plugin linked into the test binary (`ringcast_backend::qbp_plugin_query`), so that
    /// its allocations go through the test's global allocator.
    pub fn linked(query: QbpPluginQueryFn) -> Result<Plugin, String> {
        Self::query(query)
    }

    fn query(query: QbpPluginQueryFn) -> Result<Plugin, String> {
        // SAFETY: HOST is a static table valid for the life of the process.
        let info = unsafe { query(&HOST) };
        // SAFETY: the plugin returns NULL or a pointer to static tables.
        let info = unsafe { info.as_ref() }.ok_or("the plugin refused the host table")?;
        if info.header.abi_major != QBP_ABI_MAJOR {
            return Err("plugin ABI major mismatch".into());
        }
        // SAFETY: non-null table pointers of the plugin point to statics.
        let (chardev, audio) = unsafe { (info.chardev.as_ref(), info.audio.as_ref()) };
        Ok(Plugin {
            chardev: chardev.ok_or("no chardev table")?,
            audio: audio.ok_or("no audio table")?,
            _lib: None,
        })
    }

    /// Opens a character device as `-chardev plugin,id=ID,config=OPTS` would.
    pub fn open_chardev(&self, vm: &str, id: &str, opts: &str) -> Result<Chardev, String> {
        let fe = Box::new(FakeFrontend::default());
        let fe_table = Box::new(QbpChardevFrontend {
            header: QbpTableHeader::for_table::<QbpChardevFrontend>(),
            opaque: &*fe as *const FakeFrontend as *mut c_void,
            can_write: Some(fe_can_write),
            write: Some(fe_write),
        });
        let info = Info::new(vm, id, opts);
        let mut err = [0 as c_char; 256];
        let open = self.chardev.open.ok_or("no open")?;
        // SAFETY: all pointers are valid for the call; fe_table and fe outlive the device.
        let chr = unsafe { open(&info.raw, &*fe_table, err.as_mut_ptr(), err.len()) };
        if chr.is_null() {
            // SAFETY: the plugin NUL-terminates the error buffer.
            return Err(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned());
        }
        Ok(Chardev {
            ops: self.chardev,
            chr,
            frontend: fe,
            _fe_table: fe_table,
        })
    }

    /// Opens an audio device as `-audiodev plugin,id=ID,config=OPTS` would.
    pub fn open_audio(&self, vm: &str, id: &str, opts: &str) -> Result<Audio, String> {
        let info = Info::new(vm, id, opts);
        let mut err = [0 as c_char; 256];
        let open = self.audio.open.ok_or("no open")?;
        // SAFETY: valid pointers for the duration of the call.
        let a = unsafe { open(&info.raw, err.as_mut_ptr(), err.len()) };
        if a.is_null() {
            // SAFETY: the plugin NUL-terminates the error buffer.
            return Err(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned());
        }
        Ok(Audio { ops: self.audio, a })
    }
}

/// Keeps the C strings of a QbpInstanceInfo alive.
struct Info {
    _strings: [CString; 4],
    raw: QbpInstanceInfo,
}

impl Info {
    fn new(vm: &str, id: &str, opts: &str) -> Info {
        let s = [
            CString::new(id).unwrap(),
            CString::new(vm).unwrap(),
            CString::new("").unwrap(),
            CString::new(opts).unwrap(),
        ];
        let raw = QbpInstanceInfo {
            header: QbpTableHeader::for_table::<QbpInstanceInfo>(),
            id: s[0].as_ptr(),
            vm_name: s[1].as_ptr(),
            vm_uuid: s[2].as_ptr(),
            config: s[3].as_ptr(),
        };
        Info { _strings: s, raw }
    }
}
