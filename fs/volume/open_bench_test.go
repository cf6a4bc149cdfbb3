package volume

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
)

// BenchmarkOpenKeys measures what every first open of a file costs
// kmsfs beyond a plain open: reading, parsing and unlocking the header.
func BenchmarkOpenKeys(b *testing.B) {
	dir := b.TempDir()
	cipher := filepath.Join(dir, "cipher")
	if err := os.Mkdir(cipher, 0o700); err != nil {
		b.Fatal(err)
	}
	res := keyring.NewResolver(keyring.NewRegistry(local.Register), keyring.Options{Create: true})
	ctx := context.Background()
	keyURI := local.URI(filepath.Join(dir, "local.key"))
	if _, err := Init(ctx, cipher, InitOptions{Keys: []string{keyURI}, ReuseFiles: 1024, ReuseSeconds: 300}, res); err != nil {
		b.Fatal(err)
	}
	v, err := Open(ctx, cipher, res, OpenOptions{Trusted: []string{keyURI}})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	hdr, fk, err := v.New(ctx)
	if err != nil {
		b.Fatal(err)
	}
	fk.Close()
	f, err := os.Create(filepath.Join(cipher, "f"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(hdr, make([]byte, 8192)...)); err != nil {
		b.Fatal(err)
	}
	fd := int(f.Fd())
	name := func() string { return "f" }
	b.ReportAllocs()
	for b.Loop() {
		fk, err := v.Load(ctx, fd, name)
		if err != nil {
			b.Fatal(err)
		}
		fk.Close()
	}
}
