//go:build goexperiment.runtimesecret

package secmem

import "runtime/secret"

// Erasing reports whether Do erases what its function used: kmsfs was
// built with GOEXPERIMENT=runtimesecret.
const Erasing = true

// Do calls f under runtime/secret: the registers and stack f used are
// erased when it returns, and the heap objects it allocated are erased by
// the garbage collector once unreachable. Goroutines f starts are not
// covered.
func Do(f func()) { secret.Do(f) }
