//! The stable plugin ABI of Warren's exchange types.
//!
//! A plugin is a dynamic library exporting one symbol,
//! [`ENTRY_SYMBOL`] (`warren_plugin_entry`), an `extern "C"` function that
//! returns a pointer to a static [`PluginDescriptor`]. Only `repr(C)` types,
//! pointers and lengths cross the boundary; all memory stays on the side
//! that allocated it: the broker owns every input and the output buffer,
//! the plugin owns its per-exchange state. `include/warren_plugin.h` is the
//! same ABI for C.
//!
//! Rust authors implement [`PluginExchange`] and call [`warren_plugin!`],
//! which generates the descriptor and wraps every call in `catch_unwind`, so
//! a panic becomes an error code and never unwinds into the broker.
//!
//! This crate has no dependencies: a plugin depends on it alone.

#![deny(missing_docs)]

use std::ffi::c_void;

/// Bumped on any incompatible change; the loader refuses other versions.
pub const ABI_VERSION: u32 = 1;

/// The exported entry symbol (NUL-terminated for dlsym).
pub const ENTRY_SYMBOL: &[u8] = b"warren_plugin_entry\0";

/// Status codes returned by every plugin function.
pub mod status {
    /// Success.
    pub const OK: i32 = 0;
    /// Refused (bad arguments); a message may be in the error buffer.
    pub const ERROR: i32 = 1;
    /// `route`: the output buffer is too small; `*out_len` holds the size needed.
    pub const BUFFER_TOO_SMALL: i32 = 2;
    /// The plugin panicked; its state must not be trusted for this call.
    pub const PANIC: i32 = -1;
}

/// Borrowed bytes (UTF-8 where the field says so). Valid only during the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WStr {
    /// Start; may be dangling when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl WStr {
    /// Borrow a slice.
    pub fn new(b: &[u8]) -> WStr {
        WStr {
            ptr: b.as_ptr(),
            len: b.len(),
        }
    }

    /// View as bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes for the lifetime chosen.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.len)
        }
    }
}

/// Kinds of [`WField`] values.
pub mod kind {
    /// `bytes` holds a string (usually UTF-8).
    pub const STR: u8 = 0;
    /// `int` holds an integer (any AMQP integer type, or a timestamp).
    pub const INT: u8 = 1;
    /// `int` is 0 or 1.
    pub const BOOL: u8 = 2;
    /// `float` holds a floating-point number.
    pub const FLOAT: u8 = 3;
    /// Anything else (tables, arrays, void): `bytes` is empty.
    pub const OTHER: u8 = 4;
}

/// One named value: an exchange or binding argument, a message header, or
/// a message property.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WField {
    /// Name.
    pub key: WStr,
    /// One of [`kind`].
    pub kind: u8,
    /// Integer or boolean value.
    pub int: i64,
    /// Floating-point value.
    pub float: f64,
    /// String value.
    pub bytes: WStr,
}

/// A growable error message buffer owned by the broker.
#[repr(C)]
pub struct WError {
    /// Destination.
    pub ptr: *mut u8,
    /// Capacity.
    pub cap: usize,
    /// Bytes written.
    pub len: usize,
}

/// What `route` sees of a message.
#[repr(C)]
pub struct WMessage {
    /// Routing key.
    pub routing_key: WStr,
    /// Headers (empty unless the type asked for them).
    pub headers: *const WField,
    /// Number of headers.
    pub header_count: usize,
    /// Properties: content_type, correlation_id, message_id, timestamp,
    /// type, app_id, user_id, reply_to, priority, delivery_mode, when set
    /// (empty unless the type asked for them).
    pub properties: *const WField,
    /// Number of properties.
    pub property_count: usize,
    /// Body length in bytes.
    pub body_len: u64,
}

/// Create per-exchange state from the declare arguments.
pub type CreateFn = unsafe extern "C" fn(
    args: *const WField,
    arg_count: usize,
    state: *mut *mut c_void,
    err: *mut WError,
) -> i32;
/// Free per-exchange state.
pub type DestroyFn = unsafe extern "C" fn(state: *mut c_void);
/// Add or remove a binding.
pub type BindFn = unsafe extern "C" fn(
    state: *mut c_void,
    binding: u32,
    key: WStr,
    args: *const WField,
    arg_count: usize,
    err: *mut WError,
) -> i32;
/// Route one message: write binding ids to `out` (capacity `out_cap`), set `*out_len`.
pub type RouteFn = unsafe extern "C" fn(
    state: *const c_void,
    msg: *const WMessage,
    out: *mut u32,
    out_cap: usize,
    out_len: *mut usize,
) -> i32;

/// Flags for [`TypeDescriptor::wants`].
pub mod wants {
    /// Pass message headers to `route`.
    pub const HEADERS: u32 = 1;
    /// Pass message properties to `route`.
    pub const PROPERTIES: u32 = 2;
}

/// One exchange type provided by a plugin.
#[repr(C)]
pub struct TypeDescriptor {
    /// The `type` clients declare exchanges with, e.g. `x-consistent-hash`.
    pub type_name: WStr,
    /// Bit set of [`wants`].
    pub wants: u32,
    /// Create state.
    pub create: CreateFn,
    /// Free state.
    pub destroy: DestroyFn,
    /// Add a binding (called with exclusive access to the state).
    pub bind: BindFn,
    /// Remove a binding (called with exclusive access to the state).
    pub unbind: BindFn,
    /// Route (called concurrently from many threads: state must be thread-safe).
    pub route: RouteFn,
}

/// What the entry symbol returns.
#[repr(C)]
pub struct PluginDescriptor {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// The plugin's name, for logs and listings.
    pub name: WStr,
    /// Version text of the plugin.
    pub version: WStr,
    /// The exchange types.
    pub types: *const TypeDescriptor,
    /// How many.
    pub type_count: usize,
}

// SAFETY: descriptors are immutable statics pointing at 'static data.
unsafe impl Sync for PluginDescriptor {}
unsafe impl Sync for TypeDescriptor {}

/// A field as Rust plugin code sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// String (raw bytes).
    Str(&'a [u8]),
    /// Integer.
    Int(i64),
    /// Boolean.
    Bool(bool),
    /// Float.
    Float(f64),
    /// Table, array or void.
    Other,
}

impl<'a> Value<'a> {
    /// Text, if a UTF-8 string.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Value::Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// Safe view of a field list.
#[derive(Clone, Copy)]
pub struct Fields<'a>(&'a [WField]);

impl<'a> Fields<'a> {
    /// # Safety
    /// `ptr`/`len` must describe valid fields for `'a`.
    pub unsafe fn from_raw(ptr: *const WField, len: usize) -> Fields<'a> {
        if len == 0 || ptr.is_null() {
            Fields(&[])
        } else {
            Fields(std::slice::from_raw_parts(ptr, len))
        }
    }

    /// Look a field up by name.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.iter()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// All fields.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], Value<'a>)> + '_ {
        self.0.iter().map(|f| {
            // SAFETY: guaranteed by `from_raw`.
            let key = unsafe { f.key.as_bytes() };
            let v = match f.kind {
                kind::STR => Value::Str(unsafe { f.bytes.as_bytes() }),
                kind::INT => Value::Int(f.int),
                kind::BOOL => Value::Bool(f.int != 0),
                kind::FLOAT => Value::Float(f.float),
                _ => Value::Other,
            };
            (key, v)
        })
    }
}

/// A message as `route` sees it.
pub struct Message<'a> {
    /// Routing key.
    pub routing_key: &'a [u8],
    /// Headers (when asked for).
    pub headers: Fields<'a>,
    /// Properties (when asked for).
    pub properties: Fields<'a>,
    /// Body length.
    pub body_len: u64,
}

/// Where `route` writes its answer: a caller-owned buffer, no allocation.
pub struct Output<'a> {
    buf: &'a mut [u32],
    len: usize,
}

impl<'a> Output<'a> {
    /// Wrap a buffer.
    pub fn new(buf: &'a mut [u32]) -> Self {
        Output { buf, len: 0 }
    }
    /// Route to binding `id`.
    pub fn push(&mut self, id: u32) {
        if self.len < self.buf.len() {
            self.buf[self.len] = id;
        }
        self.len += 1;
    }
    /// Bindings pushed so far (may exceed the capacity: then the broker retries).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Nothing pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An exchange type written in Rust. One value per exchange.
pub trait PluginExchange: Send + Sync + Sized + 'static {
    /// The type name clients declare (`x-...`).
    const TYPE_NAME: &'static str;
    /// Bit set of [`wants`].
    const WANTS: u32 = 0;
    /// State for a new exchange, from its declare arguments.
    fn create(args: Fields<'_>) -> Result<Self, String>;
    /// Add a binding.
    fn bind(&mut self, binding: u32, key: &str, args: Fields<'_>) -> Result<(), String>;
    /// Remove a binding.
    fn unbind(&mut self, binding: u32, key: &str, args: Fields<'_>);
    /// Choose bindings for one message.
    fn route(&self, msg: &Message<'_>, out: &mut Output<'_>);
}

fn write_error(err: *mut WError, msg: &str) {
    if err.is_null() {
        return;
    }
    // SAFETY: the broker passes a valid buffer or null.
    unsafe {
        let e = &mut *err;
        let n = msg.len().min(e.cap);
        std::ptr::copy_nonoverlapping(msg.as_ptr(), e.ptr, n);
        e.len = n;
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Glue used by [`warren_plugin!`]; not for direct use.
#[doc(hidden)]
pub mod glue {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// # Safety
    /// Called by the broker through the ABI.
    pub unsafe extern "C" fn create<T: PluginExchange>(
        args: *const WField,
        n: usize,
        state: *mut *mut c_void,
        err: *mut WError,
    ) -> i32 {
        match catch_unwind(AssertUnwindSafe(|| T::create(Fields::from_raw(args, n)))) {
            Ok(Ok(t)) => {
                *state = Box::into_raw(Box::new(t)) as *mut c_void;
                status::OK
            }
            Ok(Err(e)) => {
                write_error(err, &e);
                status::ERROR
            }
            Err(p) => {
                write_error(err, &format!("plugin panicked: {}", panic_text(&*p)));
                status::PANIC
            }
        }
    }

    /// # Safety
    /// Called by the broker through the ABI, once per state.
    pub unsafe extern "C" fn destroy<T: PluginExchange>(state: *mut c_void) {
        if !state.is_null() {
            let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(state as *mut T))));
        }
    }

    unsafe fn key_str<'a>(key: WStr) -> &'a str {
        std::str::from_utf8(key.as_bytes()).unwrap_or("")
    }

    /// # Safety
    /// Called by the broker through the ABI with exclusive access.
    pub unsafe extern "C" fn bind<T: PluginExchange>(
        state: *mut c_void,
        id: u32,
        key: WStr,
        args: *const WField,
        n: usize,
        err: *mut WError,
    ) -> i32 {
        let t = &mut *(state as *mut T);
        match catch_unwind(AssertUnwindSafe(|| {
            t.bind(id, key_str(key), Fields::from_raw(args, n))
        })) {
            Ok(Ok(())) => status::OK,
            Ok(Err(e)) => {
                write_error(err, &e);
                status::ERROR
            }
            Err(p) => {
                write_error(err, &format!("plugin panicked: {}", panic_text(&*p)));
                status::PANIC
            }
        }
    }

    /// # Safety
    /// Called by the broker through the ABI with exclusive access.
    pub unsafe extern "C" fn unbind<T: PluginExchange>(
        state: *mut c_void,
        id: u32,
        key: WStr,
        args: *const WField,
        n: usize,
        err: *mut WError,
    ) -> i32 {
        let t = &mut *(state as *mut T);
        match catch_unwind(AssertUnwindSafe(|| {
            t.unbind(id, key_str(key), Fields::from_raw(args, n))
        })) {
            Ok(()) => status::OK,
            Err(p) => {
                write_error(err, &format!("plugin panicked: {}", panic_text(&*p)));
                status::PANIC
            }
        }
    }

    /// # Safety
    /// Called by the broker through the ABI, concurrently.
    pub unsafe extern "C" fn route<T: PluginExchange>(
        state: *const c_void,
        msg: *const WMessage,
        out: *mut u32,
        cap: usize,
        out_len: *mut usize,
    ) -> i32 {
        let t = &*(state as *const T);
        let m = &*msg;
        let message = Message {
            routing_key: m.routing_key.as_bytes(),
            headers: Fields::from_raw(m.headers, m.header_count),
            properties: Fields::from_raw(m.properties, m.property_count),
            body_len: m.body_len,
        };
        let buf: &mut [u32] = if cap == 0 {
            &mut []
        } else {
            std::slice::from_raw_parts_mut(out, cap)
        };
        let mut o = Output::new(buf);
        match catch_unwind(AssertUnwindSafe(|| t.route(&message, &mut o))) {
            Ok(()) => {
                *out_len = o.len();
                if o.len() > cap {
                    status::BUFFER_TOO_SMALL
                } else {
                    status::OK
                }
            }
            Err(_) => status::PANIC,
        }
    }

    /// A type descriptor for `T`.
    pub const fn type_descriptor<T: PluginExchange>() -> TypeDescriptor {
        TypeDescriptor {
            type_name: WStr {
                ptr: T::TYPE_NAME.as_ptr(),
                len: T::TYPE_NAME.len(),
            },
            wants: T::WANTS,
            create: create::<T>,
            destroy: destroy::<T>,
            bind: bind::<T>,
            unbind: unbind::<T>,
            route: route::<T>,
        }
    }
}

/// Export a plugin: `warren_plugin!("name", "version", [TypeA, TypeB]);`
#[macro_export]
macro_rules! warren_plugin {
    ($name:expr, $version:expr, [$($t:ty),+ $(,)?]) => {
        static WARREN_PLUGIN_TYPES: &[$crate::TypeDescriptor] = &[$($crate::glue::type_descriptor::<$t>()),+];
        static WARREN_PLUGIN: $crate::PluginDescriptor = $crate::PluginDescriptor {
            abi_version: $crate::ABI_VERSION,
            name: $crate::WStr { ptr: $name.as_ptr(), len: $name.len() },
            version: $crate::WStr { ptr: $version.as_ptr(), len: $version.len() },
            types: WARREN_PLUGIN_TYPES.as_ptr(),
            type_count: WARREN_PLUGIN_TYPES.len(),
        };
        /// The plugin entry point looked up by the broker.
        #[no_mangle]
        pub extern "C" fn warren_plugin_entry() -> *const $crate::PluginDescriptor {
            &WARREN_PLUGIN
        }
    };
}

/// A stable 64-bit hash (FNV-1a followed by a finaliser) for plugins that
/// need the same answer across processes and versions.
pub fn stable_hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
