package main

// The embedded local keyring is always available.
import _ "github.com/kmsfs/kmsfs/keyring/local"
