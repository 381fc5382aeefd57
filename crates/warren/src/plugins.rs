//! Loading exchange-type plugins (dynamic libraries speaking the
//! `warren-plugin` C ABI) and adapting them to the core's exchange traits,
//! so that the core sees plugin types exactly like the built-in ones.
//!
//! Every failure names the file and leaves the broker running with the other
//! plugins: not a library, no entry symbol, wrong ABI version, a type name
//! that is already taken. Libraries are never unloaded.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use warren_core::exchange::{BindingId, RouteInput};
use warren_core::props::Properties;
use warren_core::{CoreError, ExchangeRouter, ExchangeType, Table, TypeRegistry, Value};
use warren_plugin::{
    kind, status, wants, PluginDescriptor, TypeDescriptor, WError, WField, WMessage, WStr,
    ABI_VERSION, ENTRY_SYMBOL,
};

/// A plugin that loaded, for logs and listings.
#[derive(Clone, Debug)]
pub struct LoadedPlugin {
    /// Name from the descriptor.
    pub name: String,
    /// Version from the descriptor.
    pub version: String,
    /// The library file.
    pub file: PathBuf,
    /// Exchange types it registered.
    pub types: Vec<String>,
}

/// Why a plugin file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// dlopen failed.
    #[error("plugin {file}: not a loadable library: {reason}")]
    NotALibrary {
        /// The file.
        file: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// The entry symbol is missing.
    #[error("plugin {file}: no `warren_plugin_entry` symbol; is it a Warren plugin?")]
    NoEntry {
        /// The file.
        file: PathBuf,
    },
    /// The ABI version differs.
    #[error("plugin {file}: ABI version {found}, but this broker speaks version {expected}; rebuild the plugin against warren-plugin {expected}")]
    AbiVersion {
        /// The file.
        file: PathBuf,
        /// Version in the descriptor.
        found: u32,
        /// Ours.
        expected: u32,
    },
}

fn text(s: WStr) -> String {
    // SAFETY: descriptors point at static data inside the loaded library.
    String::from_utf8_lossy(unsafe { s.as_bytes() }).into_owned()
}

/// Load every library in `dir` (or only those named in `enabled`, by
/// descriptor name or file stem) and register their types.
pub fn load_dir(dir: &Path, enabled: &[String], registry: &TypeRegistry) -> Vec<LoadedPlugin> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::info!(
            "plugin directory {} not found; no plugins loaded",
            dir.display()
        );
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("so" | "dylib")))
        .collect();
    files.sort();
    let mut loaded = Vec::new();
    for file in files {
        match load_file(&file, enabled, registry) {
            Ok(Some(p)) => {
                tracing::info!(
                    "loaded plugin '{}' {} from {}: exchange types {}",
                    p.name,
                    p.version,
                    p.file.display(),
                    if p.types.is_empty() {
                        "(none)".to_string()
                    } else {
                        p.types.join(", ")
                    }
                );
                loaded.push(p);
            }
            Ok(None) => {}
            Err(e) => tracing::error!("{e}"),
        }
    }
    loaded
}

fn load_file(
    file: &Path,
    enabled: &[String],
    registry: &TypeRegistry,
) -> Result<Option<LoadedPlugin>, PluginError> {
    // SAFETY: loading a library runs its initialisers; plugins are trusted
    // code placed in the plugin directory by the operator.
    let lib = unsafe { libloading::Library::new(file) }.map_err(|e| PluginError::NotALibrary {
        file: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    let lib = Arc::new(lib);
    // SAFETY: the symbol's type is fixed by the ABI.
    let entry =
        unsafe { lib.get::<unsafe extern "C" fn() -> *const PluginDescriptor>(ENTRY_SYMBOL) }
            .map_err(|_| PluginError::NoEntry {
                file: file.to_path_buf(),
            })?;
    // SAFETY: the entry returns a pointer to a static descriptor.
    let desc: &'static PluginDescriptor = match unsafe { entry().as_ref() } {
        Some(d) => unsafe { &*(d as *const PluginDescriptor) },
        None => {
            return Err(PluginError::NoEntry {
                file: file.to_path_buf(),
            })
        }
    };
    if desc.abi_version != ABI_VERSION {
        return Err(PluginError::AbiVersion {
            file: file.to_path_buf(),
            found: desc.abi_version,
            expected: ABI_VERSION,
        });
    }
    let name = text(desc.name);
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if !enabled.is_empty() && !enabled.iter().any(|e| e == &name || e == stem) {
        tracing::info!(
            "plugin '{name}' in {} is not enabled; skipped",
            file.display()
        );
        return Ok(None);
    }
    let types: &'static [TypeDescriptor] = if desc.type_count == 0 || desc.types.is_null() {
        &[]
    } else {
        // SAFETY: static array inside the library, which is never unloaded.
        unsafe { std::slice::from_raw_parts(desc.types, desc.type_count) }
    };
    let mut registered = Vec::new();
    for t in types {
        let type_name = text(t.type_name);
        let pt = PluginType {
            name: type_name.clone(),
            plugin: name.clone(),
            desc: t,
            _lib: lib.clone(),
        };
        match registry.register(Arc::new(pt)) {
            Ok(()) => registered.push(type_name),
            Err(_) => tracing::error!(
                "plugin {}: exchange type '{type_name}' clashes with a built-in or already loaded type; skipped",
                file.display()
            ),
        }
    }
    Ok(Some(LoadedPlugin {
        name,
        version: text(desc.version),
        file: file.to_path_buf(),
        types: registered,
    }))
}

struct PluginType {
    name: String,
    plugin: String,
    desc: &'static TypeDescriptor,
    _lib: Arc<libloading::Library>,
}

/// Borrowing conversion of core values into ABI fields; the table must
/// outlive the fields.
fn fields<'a>(pairs: impl Iterator<Item = (&'a str, &'a Value)>) -> Vec<WField> {
    pairs
        .map(|(k, v)| {
            let mut f = WField {
                key: WStr::new(k.as_bytes()),
                kind: kind::OTHER,
                int: 0,
                float: 0.0,
                bytes: WStr::new(&[]),
            };
            match v {
                Value::Str(b) | Value::Bytes(b) => {
                    f.kind = kind::STR;
                    f.bytes = WStr::new(b);
                }
                Value::Bool(b) => {
                    f.kind = kind::BOOL;
                    f.int = i64::from(*b);
                }
                Value::F32(x) => {
                    f.kind = kind::FLOAT;
                    f.float = f64::from(*x);
                }
                Value::F64(x) => {
                    f.kind = kind::FLOAT;
                    f.float = *x;
                }
                other => {
                    if let Some(i) = other.as_i64() {
                        f.kind = kind::INT;
                        f.int = i;
                    }
                }
            }
            f
        })
        .collect()
}

fn error_text(buf: &[u8], err: &WError) -> String {
    String::from_utf8_lossy(&buf[..err.len.min(buf.len())]).into_owned()
}

impl ExchangeType for PluginType {
    fn name(&self) -> &str {
        &self.name
    }

    fn create(&self, args: &Table) -> warren_core::Result<Box<dyn ExchangeRouter>> {
        let f = fields(args.iter());
        let mut state: *mut c_void = std::ptr::null_mut();
        let mut buf = [0u8; 512];
        let mut err = WError {
            ptr: buf.as_mut_ptr(),
            cap: buf.len(),
            len: 0,
        };
        // SAFETY: ABI call with valid, borrowed inputs.
        let rc = unsafe { (self.desc.create)(f.as_ptr(), f.len(), &mut state, &mut err) };
        match rc {
            status::OK if !state.is_null() => Ok(Box::new(PluginRouter {
                type_name: self.name.clone(),
                plugin: self.plugin.clone(),
                desc: self.desc,
                state,
                _lib: self._lib.clone(),
            })),
            status::PANIC => Err(CoreError::Internal(format!(
                "exchange type '{}' (plugin '{}') panicked: {}",
                self.name,
                self.plugin,
                error_text(&buf, &err)
            ))),
            _ => Err(CoreError::PreconditionFailed(format!(
                "exchange type '{}' refused the arguments: {}",
                self.name,
                error_text(&buf, &err)
            ))),
        }
    }
}

struct PluginRouter {
    type_name: String,
    plugin: String,
    desc: &'static TypeDescriptor,
    state: *mut c_void,
    _lib: Arc<libloading::Library>,
}

// SAFETY: the ABI requires route to be thread-safe and bind/unbind get
// exclusive access (the core holds the exchange's write lock for them).
unsafe impl Send for PluginRouter {}
unsafe impl Sync for PluginRouter {}

impl Drop for PluginRouter {
    fn drop(&mut self) {
        // SAFETY: state came from this type's create and is freed once.
        unsafe { (self.desc.destroy)(self.state) }
    }
}

impl PluginRouter {
    fn call_bind(
        &mut self,
        unbind: bool,
        id: BindingId,
        key: &str,
        args: &Table,
    ) -> warren_core::Result<()> {
        let f = fields(args.iter());
        let mut buf = [0u8; 512];
        let mut err = WError {
            ptr: buf.as_mut_ptr(),
            cap: buf.len(),
            len: 0,
        };
        let func = if unbind {
            self.desc.unbind
        } else {
            self.desc.bind
        };
        // SAFETY: ABI call; we hold exclusive access to the state.
        let rc = unsafe {
            func(
                self.state,
                id,
                WStr::new(key.as_bytes()),
                f.as_ptr(),
                f.len(),
                &mut err,
            )
        };
        match rc {
            status::OK => Ok(()),
            status::PANIC => {
                tracing::error!(
                    "exchange type '{}' (plugin '{}') panicked in bind: {}",
                    self.type_name,
                    self.plugin,
                    error_text(&buf, &err)
                );
                Err(CoreError::Internal(format!(
                    "exchange type '{}' failed to bind",
                    self.type_name
                )))
            }
            _ => Err(CoreError::PreconditionFailed(format!(
                "exchange type '{}' refused binding key '{key}': {}",
                self.type_name,
                error_text(&buf, &err)
            ))),
        }
    }
}

fn property_fields(p: &Properties) -> Vec<(String, Value)> {
    let mut v = Vec::new();
    let mut s = |k: &str, x: &Option<String>| {
        if let Some(x) = x {
            v.push((k.to_string(), Value::str(x)));
        }
    };
    s("content_type", &p.content_type);
    s("correlation_id", &p.correlation_id);
    s("message_id", &p.message_id);
    s("type", &p.kind);
    s("app_id", &p.app_id);
    s("user_id", &p.user_id);
    s("reply_to", &p.reply_to);
    if let Some(t) = p.timestamp {
        v.push(("timestamp".into(), Value::Timestamp(t)));
    }
    if let Some(x) = p.priority {
        v.push(("priority".into(), Value::U8(x)));
    }
    if let Some(x) = p.delivery_mode {
        v.push(("delivery_mode".into(), Value::U8(x)));
    }
    v
}

impl ExchangeRouter for PluginRouter {
    fn bind(&mut self, id: BindingId, key: &str, args: &Table) -> warren_core::Result<()> {
        self.call_bind(false, id, key, args)
    }

    fn unbind(&mut self, id: BindingId, key: &str, args: &Table) {
        let _ = self.call_bind(true, id, key, args);
    }

    fn route(&self, input: &RouteInput<'_>, out: &mut Vec<BindingId>) -> warren_core::Result<()> {
        // Headers and properties are decoded only for types that ask.
        let headers = if self.desc.wants & wants::HEADERS != 0 {
            input.message.and_then(|m| m.headers())
        } else {
            None
        };
        let props = if self.desc.wants & wants::PROPERTIES != 0 {
            input
                .message
                .and_then(|m| Properties::decode(m.raw_properties()).ok())
                .map(|p| property_fields(&p))
        } else {
            None
        };
        let hf = headers
            .as_ref()
            .map(|h| fields(h.iter()))
            .unwrap_or_default();
        let pf = props
            .as_ref()
            .map(|p| fields(p.iter().map(|(k, v)| (k.as_str(), v))))
            .unwrap_or_default();
        let msg = WMessage {
            routing_key: WStr::new(input.routing_key),
            headers: hf.as_ptr(),
            header_count: hf.len(),
            properties: pf.as_ptr(),
            property_count: pf.len(),
            body_len: input.message.map_or(0, |m| m.body.len() as u64),
        };
        let start = out.len();
        out.reserve(16);
        loop {
            let cap = out.capacity() - start;
            let mut n = 0usize;
            // SAFETY: `out` has `cap` writable slots after `start`; the plugin
            // writes at most `cap` ids and reports how many it wanted.
            let rc = unsafe {
                (self.desc.route)(self.state, &msg, out.as_mut_ptr().add(start), cap, &mut n)
            };
            match rc {
                status::OK if n <= cap => {
                    // SAFETY: the plugin initialised `n` slots.
                    unsafe { out.set_len(start + n) };
                    return Ok(());
                }
                status::BUFFER_TOO_SMALL | status::OK => out.reserve(n),
                status::PANIC => {
                    tracing::error!(
                        "exchange type '{}' (plugin '{}') panicked while routing; publish rejected",
                        self.type_name,
                        self.plugin
                    );
                    return Err(CoreError::Internal(format!(
                        "exchange type '{}' failed to route the message (plugin panicked)",
                        self.type_name
                    )));
                }
                other => {
                    return Err(CoreError::Internal(format!(
                        "exchange type '{}' failed to route the message (status {other})",
                        self.type_name
                    )))
                }
            }
        }
    }
}
