//! Sorcery: the module's own object type, persisted by whichever wizard `sorcery.conf` maps
//! it to (astdb by default, realtime for a database).
//!
//! Every call here may do I/O (SQLite, a database over the network): only the module's store
//! thread and the loader call them, never a PJSIP or dialplan thread.

use std::ffi::{CStr, c_char, c_void};
use std::ptr::NonNull;

use super::c_string;
use crate::ffi;

/// The module's sorcery instance with one object type; closed on drop.
#[derive(Debug)]
pub struct Sorcery {
    raw: NonNull<ffi::ast_sorcery>,
    kind: std::ffi::CString,
    fields: usize,
}

// SAFETY: sorcery instances are reference-counted ao2 objects with their own locking; Asterisk
// uses them from any thread.
unsafe impl Send for Sorcery {}
// SAFETY: as above; every method takes `&self` and goes through sorcery's own locking.
unsafe impl Sync for Sorcery {}

/// One object, referenced; released on drop.
#[derive(Debug)]
pub struct Object<'s> {
    raw: NonNull<c_void>,
    sorcery: &'s Sorcery,
}

impl Sorcery {
    /// Opens the instance: type `kind` with the string fields `fields` (their order is their
    /// index), `wizard`/`data` unless `sorcery.conf` maps the type elsewhere; loads it.
    pub fn open(
        kind: &str,
        fields: &'static [std::ffi::CString],
        wizard: &str,
        data: &str,
    ) -> Option<Sorcery> {
        let names: Vec<*const c_char> = fields.iter().map(|f| f.as_ptr()).collect();
        let (k, w, d) = (c_string(kind), c_string(wizard), c_string(data));
        // SAFETY: the names are 'static (config_options keeps the pointers); the other strings
        // are copied by sorcery during the call.
        let raw = unsafe {
            ffi::rp_shim_sorcery_open(
                k.as_ptr(),
                names.as_ptr(),
                names.len(),
                w.as_ptr(),
                d.as_ptr(),
            )
        };
        Some(Sorcery {
            raw: NonNull::new(raw)?,
            kind: k,
            fields: fields.len(),
        })
    }

    /// The wizards the type is mapped to, in order.
    pub fn wizards(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..16 {
            let mut buf = [0 as c_char; 64];
            // SAFETY: live instance, NUL-terminated type, `buf` holds 64 bytes.
            let found = unsafe {
                ffi::rp_shim_sorcery_wizard(
                    self.raw.as_ptr(),
                    self.kind.as_ptr(),
                    i,
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            if found == 0 {
                break;
            }
            // SAFETY: the shim wrote a NUL-terminated string into `buf`.
            out.push(
                unsafe { CStr::from_ptr(buf.as_ptr()) }
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        out
    }

    /// A new object with this id (fields empty), not yet stored.
    pub fn alloc(&self, id: &str) -> Option<Object<'_>> {
        let id = c_string(id);
        // SAFETY: live instance, NUL-terminated strings (copied by sorcery).
        let raw =
            unsafe { ffi::ast_sorcery_alloc(self.raw.as_ptr(), self.kind.as_ptr(), id.as_ptr()) };
        Some(Object {
            raw: NonNull::new(raw)?,
            sorcery: self,
        })
    }

    /// Stores a new object; false when a wizard refused (or could not reach its database).
    pub fn create(&self, o: &Object<'_>) -> bool {
        // SAFETY: a live object of this instance.
        unsafe { ffi::ast_sorcery_create(self.raw.as_ptr(), o.raw.as_ptr()) == 0 }
    }

    /// Replaces a stored object; false when it is not stored or the store is unreachable.
    pub fn update(&self, o: &Object<'_>) -> bool {
        // SAFETY: as for `create`.
        unsafe { ffi::ast_sorcery_update(self.raw.as_ptr(), o.raw.as_ptr()) == 0 }
    }

    /// Removes a stored object; false when it is not stored or the store is unreachable.
    pub fn delete(&self, o: &Object<'_>) -> bool {
        // SAFETY: as for `create`.
        unsafe { ffi::ast_sorcery_delete(self.raw.as_ptr(), o.raw.as_ptr()) == 0 }
    }

    /// The stored object with this id.
    pub fn by_id(&self, id: &str) -> Option<Object<'_>> {
        let id = c_string(id);
        // SAFETY: live instance, NUL-terminated strings; we own the returned reference.
        let raw = unsafe {
            ffi::ast_sorcery_retrieve_by_id(self.raw.as_ptr(), self.kind.as_ptr(), id.as_ptr())
        };
        Some(Object {
            raw: NonNull::new(raw)?,
            sorcery: self,
        })
    }

    /// Stored objects whose `field` equals `value`, or all of them when `field` is `None`,
    /// each as `read` makes it. `None` when sorcery gave no answer at all.
    pub fn find<T>(
        &self,
        field: Option<(&str, &str)>,
        mut read: impl FnMut(&Object<'_>) -> T,
    ) -> Option<Vec<T>> {
        struct Ctx<'a, 's, T> {
            sorcery: &'s Sorcery,
            read: &'a mut dyn FnMut(&Object<'_>) -> T,
            out: Vec<T>,
        }
        unsafe extern "C" fn each<T>(ctx: *mut c_void, obj: *mut c_void) {
            // SAFETY: `ctx` is the `Ctx` below, alive for the whole retrieve call.
            let ctx = unsafe { &mut *ctx.cast::<Ctx<'_, '_, T>>() };
            let Some(raw) = NonNull::new(obj) else { return };
            // The shim hands over its reference: the Object's drop releases it.
            let o = Object {
                raw,
                sorcery: ctx.sorcery,
            };
            // A panic must not unwind into C.
            if let Some(v) = super::guard::guard("sorcery retrieve", None, || Some((ctx.read)(&o)))
            {
                ctx.out.push(v);
            }
        }
        let (name, value) = match field {
            Some((n, v)) => (Some(c_string(n)), Some(c_string(v))),
            None => (None, None),
        };
        let mut ctx = Ctx {
            sorcery: self,
            read: &mut read,
            out: Vec::new(),
        };
        // SAFETY: live instance; strings NUL-terminated or NULL; `ctx` outlives the call and
        // `each::<T>` reads it as that type.
        let rc = unsafe {
            ffi::rp_shim_sorcery_retrieve(
                self.raw.as_ptr(),
                self.kind.as_ptr(),
                name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
                value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
                Some(each::<T>),
                (&raw mut ctx).cast(),
            )
        };
        (rc == 0).then_some(ctx.out)
    }
}

impl Drop for Sorcery {
    fn drop(&mut self) {
        // SAFETY: our reference, released once.
        unsafe { ffi::rp_shim_sorcery_close(self.raw.as_ptr()) };
    }
}

impl Object<'_> {
    /// Its id.
    pub fn id(&self) -> String {
        // SAFETY: a live sorcery object; the id lives as long as the object.
        let p = unsafe { ffi::ast_sorcery_object_get_id(self.raw.as_ptr()) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Field `index`'s value ("" when unset or out of range).
    pub fn get(&self, index: usize) -> String {
        if index >= self.sorcery.fields {
            return String::new();
        }
        // SAFETY: a live object of our type; the string is copied before anything changes it.
        let p = unsafe { ffi::rp_shim_sorcery_get(self.raw.as_ptr(), index) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated, alive while the object is unchanged.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Sets field `index`; false when out of range or out of memory.
    pub fn set(&mut self, index: usize, value: &str) -> bool {
        let v = c_string(value);
        // SAFETY: a live object we hold exclusively (not yet shared with sorcery's caches).
        unsafe { ffi::rp_shim_sorcery_set(self.raw.as_ptr(), index, v.as_ptr()) == 0 }
    }
}

impl Drop for Object<'_> {
    fn drop(&mut self) {
        // SAFETY: our reference, released once.
        unsafe { ffi::rp_shim_sorcery_object_unref(self.raw.as_ptr()) };
    }
}
