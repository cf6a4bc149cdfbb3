//go:build !goexperiment.runtimesecret

package secmem

// Erasing reports whether Do erases what its function used: kmsfs was
// built with GOEXPERIMENT=runtimesecret.
const Erasing = false

// Do calls f. Built without GOEXPERIMENT=runtimesecret, nothing erases
// the stack and heap f used; Wipe still erases what the caller holds.
func Do(f func()) { f() }
