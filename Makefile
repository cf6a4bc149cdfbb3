# kmsfs build and test entry points. "make test" is what CI runs (.ci/run);
# it must work as root on a fresh Debian 12 machine that has only Go.

GO ?= go

# Build and test with this Go release (fetched through the module proxy on
# first use): it fixes standard-library vulnerabilities (net/http,
# crypto/tls, crypto/x509) of older 1.26 releases that govulncheck reports.
export GOTOOLCHAIN := go1.26.10

# Build and test with runtime/secret: key derivations and key expansions
# then erase the stack, registers and heap they used (docs/SECURITY.md,
# "Keys in memory"; "kmsfs version" says whether it is on).
comma := ,
ifeq ($(findstring runtimesecret,$(GOEXPERIMENT)),)
GOEXPERIMENT := $(if $(GOEXPERIMENT),$(GOEXPERIMENT)$(comma))runtimesecret
endif
export GOEXPERIMENT

# Never let a build or test rewrite go.mod/go.sum, and do not stamp VCS
# information (a clone owned by another user makes git refuse to answer).
ifeq ($(filter -mod=%,$(GOFLAGS)),)
GOFLAGS += -mod=readonly
endif
ifeq ($(filter -buildvcs%,$(GOFLAGS)),)
GOFLAGS += -buildvcs=false
endif
export GOFLAGS

# Packages with unit tests; directories that do not exist yet are left out.
UNIT_DIRS := $(wildcard header blockcipher keyring fs cmd)
UNIT_PKGS := $(addprefix ./,$(addsuffix /...,$(UNIT_DIRS)))

# FUZZTIME is a count of executions per fuzz target, not a duration: with
# a duration Go's fuzz coordinator can report a spurious "context deadline
# exceeded" failure when the time runs out mid-execution (go.dev/issue/75804,
# fixed only in Go 1.27). 300000 executions take 5-40 s per target here.
FUZZTIME ?= 300000x
# Time limit of the integration tests (tests/).
INTEGRATION_TIMEOUT ?= 40m

# VERSION names the release: the nearest v* tag, without its v (0.3.0,
# or 0.3.0-5-gabc1234 five commits after it), or 0.1.0-dev in a history
# without tags; COMMIT is the commit. Both fall back to fixed words where
# git cannot answer (no git, no .git, a clone owned by another user).
# "kmsfs version" prints them; a build without make says "dev" and
# "unknown".
VERSION ?= $(or $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//'),0.1.0-dev)
COMMIT ?= $(or $(shell git rev-parse --short HEAD 2>/dev/null),unknown)
GO_LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# Where "make install" puts things; DESTDIR prefixes every path (for
# packaging). The mount helpers go to SBINDIR whatever PREFIX is:
# mount(8) looks for /sbin/mount.TYPE and nowhere else.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= /sbin
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions

.PHONY: all deps build mount install uninstall test vet fmt-check unit integration fuzz vulncheck bench clean

all: build

# deps installs the programs the tests use, if missing: fuse3
# (fusermount3), sqlite3 and git for tests/apps_test.go, fio and stress-ng
# for tests/stress_test.go, e2fsprogs (mkfs.ext4) for the full-disk test,
# util-linux (setpriv, unshare), gcc and the libc headers for -race (cgo). apt-get update runs only if an install fails
# without it.
deps:
	@need=""; \
	command -v fusermount3 >/dev/null 2>&1 || need="$$need fuse3"; \
	command -v sqlite3 >/dev/null 2>&1 || need="$$need sqlite3"; \
	command -v git >/dev/null 2>&1 || need="$$need git"; \
	command -v fio >/dev/null 2>&1 || need="$$need fio"; \
	command -v stress-ng >/dev/null 2>&1 || need="$$need stress-ng"; \
	command -v mkfs.ext4 >/dev/null 2>&1 || need="$$need e2fsprogs"; \
	command -v setpriv >/dev/null 2>&1 || need="$$need util-linux"; \
	command -v gcc >/dev/null 2>&1 || need="$$need gcc"; \
	[ -e /usr/include/stdlib.h ] || need="$$need libc6-dev"; \
	if [ -n "$$need" ]; then \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		echo "deps: installing$$need"; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$sudo apt-get install -y --no-install-recommends $$need || \
		{ $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends $$need; } || exit 1; \
	fi
	$(GO) mod download

build:
	$(GO) build -ldflags "$(GO_LDFLAGS)" -o bin/kmsfs ./cmd/kmsfs

# install installs kmsfs (BINDIR), the mount helpers mount.fuse.kmsfs and
# mount.kmsfs (SBINDIR, links to kmsfs, which acts as the helper under
# those names), the systemd unit template kmsfs@.service, the man page
# kmsfs(1) and the bash and zsh completions; the last three are made from
# kmsfs's own help texts (cmd/kmsfs/internal/mangen).
install: build
	$(GO) run ./cmd/kmsfs/internal/mangen -o bin/kmsfs.1 man bin/kmsfs
	$(GO) run ./cmd/kmsfs/internal/mangen -o bin/kmsfs.bash bash bin/kmsfs
	$(GO) run ./cmd/kmsfs/internal/mangen -o bin/_kmsfs zsh bin/kmsfs
	sed 's|@BINDIR@|$(BINDIR)|g' cmd/kmsfs/systemd/kmsfs@.service > bin/kmsfs@.service
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(SBINDIR)" "$(DESTDIR)$(MANDIR)/man1" \
		"$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(BASHCOMPDIR)" "$(DESTDIR)$(ZSHCOMPDIR)"
	install -m 0755 bin/kmsfs "$(DESTDIR)$(BINDIR)/kmsfs"
	ln -sfn "$(BINDIR)/kmsfs" "$(DESTDIR)$(SBINDIR)/mount.fuse.kmsfs"
	ln -sfn "$(BINDIR)/kmsfs" "$(DESTDIR)$(SBINDIR)/mount.kmsfs"
	install -m 0644 bin/kmsfs.1 "$(DESTDIR)$(MANDIR)/man1/kmsfs.1"
	install -m 0644 bin/kmsfs@.service "$(DESTDIR)$(UNITDIR)/kmsfs@.service"
	install -m 0644 bin/kmsfs.bash "$(DESTDIR)$(BASHCOMPDIR)/kmsfs"
	install -m 0644 bin/_kmsfs "$(DESTDIR)$(ZSHCOMPDIR)/_kmsfs"

uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/kmsfs" "$(DESTDIR)$(SBINDIR)/mount.fuse.kmsfs" \
		"$(DESTDIR)$(SBINDIR)/mount.kmsfs" "$(DESTDIR)$(MANDIR)/man1/kmsfs.1" \
		"$(DESTDIR)$(UNITDIR)/kmsfs@.service" "$(DESTDIR)$(BASHCOMPDIR)/kmsfs" \
		"$(DESTDIR)$(ZSHCOMPDIR)/_kmsfs"

# mount builds kmsfs, creates the volume CIPHER with the default local key
# (~/.config/kmsfs/local.key) if it is not one yet, and mounts it at PLAIN.
CIPHER ?= $(HOME)/kmsfs-cipher
PLAIN ?= $(HOME)/kmsfs-plain
mount: build
	@mkdir -p "$(CIPHER)" "$(PLAIN)"
	@[ -e "$(CIPHER)/kmsfs.conf" ] || bin/kmsfs init "$(CIPHER)"
	bin/kmsfs mount "$(CIPHER)" "$(PLAIN)"
	@echo "kmsfs: plaintext view $(PLAIN), ciphertext in $(CIPHER); unmount with: bin/kmsfs umount $(PLAIN)"

vet:
	$(GO) vet ./...

fmt-check:
	@files=$$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' | xargs gofmt -l); \
	if [ -n "$$files" ]; then echo "gofmt needed on:"; echo "$$files"; exit 1; fi

unit:
ifneq ($(UNIT_PKGS),)
	CGO_ENABLED=1 $(GO) test -race $(UNIT_PKGS)
endif

# integration runs tests/ (real mounts) with a TMPDIR of its own, then
# checks that no mount was left behind below it, also when the tests
# failed; leftovers are detached and fail the run. Other runs on the same
# machine are not touched.
integration:
	@tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/kmsfs-make.XXXXXX") || exit 1; status=0; \
	echo "TMPDIR=$$tmp CGO_ENABLED=1 $(GO) test -race -count=1 -timeout $(INTEGRATION_TIMEOUT) ./tests/..."; \
	TMPDIR=$$tmp CGO_ENABLED=1 $(GO) test -race -count=1 -timeout $(INTEGRATION_TIMEOUT) ./tests/... || status=$$?; \
	left=$$(awk -v d="$$tmp/" 'index($$2, d) == 1 {print $$2}' /proc/mounts); \
	if [ -n "$$left" ]; then \
		echo "mounts left behind by the tests:"; echo "$$left"; status=1; \
		for m in $$left; do umount -l "$$m" || fusermount3 -u -z "$$m" || true; done; \
	fi; \
	if awk -v d="$$tmp/" 'index($$2, d) == 1 {found=1} END {exit !found}' /proc/mounts; then \
		echo "still mounted below $$tmp: not removing it"; \
	else \
		rm -rf "$$tmp"; \
	fi; \
	exit $$status

# fuzz runs every fuzz target of the module (found by name, so new ones
# are included) for FUZZTIME executions each.
fuzz:
	@for f in $$(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . | grep -v '/testdata/' | sort); do \
		dir=$$(dirname "$$f"); \
		for fn in $$(grep -oE '^func Fuzz[A-Za-z0-9_]*' "$$f" | sed 's/^func //'); do \
			echo "$(GO) test -run='^\$$' -fuzz='^$$fn\$$' -fuzztime=$(FUZZTIME) $$dir"; \
			$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=1x "$$dir" || exit 1; \
		done; \
	done

# vulncheck runs govulncheck against a vulnerability database built from
# golang.org/x/vulndb (vuln.go.dev is not reachable from here).
vulncheck:
	bash tests/internal/vulncheck.sh

test: deps vet fmt-check unit integration fuzz vulncheck

# bench runs the end-to-end benchmarks as root (~30 min; BENCH_FLAGS=--quick
# for a 3-minute run) and rewrites docs/PERFORMANCE.md and
# docs/performance.png; then the key service costs (tests/bench/keylife)
# and the block cipher micro-benchmarks.
bench: build
	bash tests/bench/run.sh $(BENCH_FLAGS)
	$(GO) run ./tests/bench/keylife -kmsfs bin/kmsfs
	$(GO) test -run='^$$' -bench=. ./blockcipher/...

clean:
	rm -rf bin
