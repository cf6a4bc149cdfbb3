// Package secmem erases the key material that Go's cryptography keeps in
// ordinary memory: the expanded AES key and GHASH table of an AEAD, the
// padded keys and buffered input of an HMAC, the stack frames and
// registers a derivation used.
//
// Keys themselves live in memguard's locked memory (package keyring);
// what secmem covers is the state Go's crypto packages build from them,
// which they allocate on the heap or the stack and never wipe.
//
// Two mechanisms work together:
//   - Wipe overwrites, on the spot, the whole state behind a value the
//     caller owns and is done with (a cipher.AEAD, a hash.Hash);
//   - Do runs a function under runtime/secret when kmsfs is built with
//     GOEXPERIMENT=runtimesecret (the Makefile does): the stack and
//     registers it used are erased when it returns, and what it allocated
//     is erased by the garbage collector once unreachable. Without the
//     experiment Do just calls the function, and only Wipe erases.
package secmem

import (
	"reflect"
	"sync"
	"unsafe"
)

// Wipe overwrites with zeros everything reachable from v through
// pointers, slices, arrays, structs and interfaces holding pointers: the
// state of a cipher.AEAD from crypto/cipher, of a hash.Hash from
// crypto/hmac or crypto/sha256, or of a struct of the caller's that
// holds them. Pointers and slices are set to nil once what they point to
// is wiped, so a wiped value fails loudly (a nil dereference) if it is
// used again instead of working under an all-zero key.
//
// Wipe must only be given a value whose whole graph the caller owns and
// no one else uses, now or later: it does not stop at shared or global
// data. Strings, maps, channels and functions are not followed (their
// headers are cleared); neither is a non-pointer value boxed in an
// interface inside the graph (Go may share such boxes). Give it a
// pointer, or an interface holding one: a value that is not one is a
// copy, of which only what it points to can be wiped.
func Wipe(v any) {
	if v == nil {
		return
	}
	w := wiper{seen: map[seenKey]bool{}}
	// The interface's data word: the pointer itself for pointer-shaped
	// types, else a pointer to a box that holds a copy of the value.
	words := (*[2]unsafe.Pointer)(unsafe.Pointer(&v))
	t := reflect.TypeOf(v)
	if pointerShaped(t) {
		w.wipe(t, unsafe.Pointer(&words[1]))
		return
	}
	// Not pointer-shaped: v holds a copy of the caller's value, in a box
	// that may be shared or read-only. Wipe what the copy points to, from
	// a copy of our own.
	if hasPointers(t) {
		c := reflect.New(t)
		c.Elem().Set(reflect.ValueOf(v))
		w.wipe(t, c.UnsafePointer())
	}
}

type seenKey struct {
	p unsafe.Pointer
	t reflect.Type
}

type wiper struct {
	seen map[seenKey]bool
}

// wipe wipes the value of type t at p, then zeroes it.
func (w *wiper) wipe(t reflect.Type, p unsafe.Pointer) {
	if p == nil {
		return
	}
	k := seenKey{p, t}
	if w.seen[k] {
		return
	}
	w.seen[k] = true
	if !hasPointers(t) {
		clearBytes(p, t.Size())
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		if q := *(*unsafe.Pointer)(p); q != nil {
			w.wipe(t.Elem(), q)
		}
	case reflect.Slice:
		s := (*sliceHeader)(p)
		if s.data != nil && s.cap > 0 {
			et := t.Elem()
			if !hasPointers(et) {
				clearBytes(s.data, uintptr(s.cap)*et.Size())
			} else {
				for i := range s.cap {
					w.wipe(et, unsafe.Add(s.data, uintptr(i)*et.Size()))
				}
			}
		}
	case reflect.Interface:
		e := reflect.NewAt(t, p).Elem()
		if !e.IsNil() {
			dt := e.Elem().Type()
			words := (*[2]unsafe.Pointer)(p)
			if pointerShaped(dt) {
				w.wipe(dt, unsafe.Pointer(&words[1]))
			}
		}
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			w.wipe(f.Type, unsafe.Add(p, f.Offset))
		}
		return // every field is wiped and zeroed
	case reflect.Array:
		et := t.Elem()
		for i := range t.Len() {
			w.wipe(et, unsafe.Add(p, uintptr(i)*et.Size()))
		}
		return
	}
	// Zero the pointer-holding value itself with a typed store, which
	// tells the garbage collector.
	reflect.NewAt(t, p).Elem().SetZero()
}

// sliceHeader is the layout of a slice.
type sliceHeader struct {
	data     unsafe.Pointer
	len, cap int
}

// clearBytes zeroes n bytes at p, which hold no pointers.
func clearBytes(p unsafe.Pointer, n uintptr) {
	if n == 0 {
		return
	}
	clear(unsafe.Slice((*byte)(p), n))
}

// pointerShaped reports whether Go stores a value of type t directly in
// an interface's data word: a pointer, or a struct or array of exactly
// one pointer.
func pointerShaped(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Chan, reflect.Func:
		return true
	case reflect.Struct:
		var only reflect.Type
		for i := range t.NumField() {
			if f := t.Field(i); f.Type.Size() != 0 {
				if only != nil {
					return false
				}
				only = f.Type
			}
		}
		return only != nil && pointerShaped(only)
	case reflect.Array:
		return t.Len() == 1 && pointerShaped(t.Elem())
	}
	return false
}

var pointerCache sync.Map // reflect.Type -> bool

// hasPointers reports whether values of type t hold any pointer.
func hasPointers(t reflect.Type) bool {
	if v, ok := pointerCache.Load(t); ok {
		return v.(bool)
	}
	var r bool
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Chan, reflect.Func,
		reflect.Slice, reflect.String, reflect.Interface:
		r = true
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				r = true
				break
			}
		}
	case reflect.Array:
		r = t.Len() > 0 && hasPointers(t.Elem())
	}
	pointerCache.Store(t, r)
	return r
}
