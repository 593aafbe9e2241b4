# Go from PATH, else where the official tarball puts it; the scripts
# called below find it too.
GO            ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export PATH   := $(PATH):$(dir $(GO))
PREFIX        ?= /usr/local
BINDIR        ?= $(PREFIX)/bin
MANDIR        ?= $(PREFIX)/share/man
SPOOLDIR      ?= /var/spool/qbox
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -X qbox/commands.Version=$(VERSION)
# The shipped binary leaves out urfave/cli's man and markdown generators
# (and their package initialisation, paid by every sendmail call); `make man`
# builds a generator without this tag. It is static (CGO_ENABLED=0): the
# dynamic loader cost 1-2 ms per start, more than a C qmqp-source's whole run.
TAGS          := urfave_cli_no_docs
PERSONALITIES := sendmail qmail-inject qmail-qmqpc mailq maildirqmtp maildirsmtp newaliases qmail-queue qmail-remote
FUZZTIME      ?= 20s

.PHONY: build peers test crashtest demo fuzz bench bench-full man lint install deb clean

build:
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o qbox .

# Real peers for the tests (Postfix, mailfront, ucspi-tcp, swaks,
# systemd-socket-activate): installed with apt when missing, nothing
# configured or started (the tests start private instances).
peers:
	bash testdata/peers.sh

# Every test, CI's command: as root, installs the real peers when missing,
# then runs the tests with the build tag peers, which adds the
# *_peers_test.go files (against Postfix, mailfront, tcpserver, swaks, or
# needing root). Each test process starts its own private Postfix on
# loopback ports (proto/testkit/testpeer); the host's Postfix and /etc are left
# alone. A missing peer fails the run, never skips. Plain `go test ./...`
# (no root, no peers) runs the rest.
test: peers
	$(GO) test -tags peers -race -count=1 -timeout 45m ./...

# The power-cut tests, long version: as `make test` runs them (root,
# /dev/fuse, tag peers) but cutting at every recorded file system
# operation, not only at each sync and a sample of the rest.
crashtest:
	$(GO) test -tags peers -count=1 -timeout 30m ./proto/testkit/crashfs/
	QBOX_CRASH_ALL=1 $(GO) test -tags peers -count=1 -timeout 30m -run 'PowerCut' ./commands/... ./proto/...

# The main job on the embedded default: serve into a maildir, inject a
# message, show it arrived.
demo: build
	bash testdata/demo.sh ./qbox

# Every fuzz target for FUZZTIME (a duration, or a count such as 200000x,
# which CI uses). A package whose tests do not build, a crash, or a seed
# that fails makes it fail.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  targets=$$($(GO) test -list '^Fuzz' $$pkg); \
	  for f in $$(echo "$$targets" | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

# The headline benchmarks (about five minutes), each beside a peer or a
# floor measured in the same run; prints one table and the figures against
# their targets, and writes testdata/bench-results.md. bench-full runs
# every benchmark (about sixteen minutes) into testdata/bench-results-full.md.
bench: build peers
	GOFLAGS="$(GOFLAGS) -tags=peers" bash testdata/bench.sh

bench-full: build peers
	GOFLAGS="$(GOFLAGS) -tags=peers" BENCH_SET=full bash testdata/bench.sh

# Manual pages from the CLI definitions: qbox(1), one per command and one
# per personality, into ./man (generated, not committed).
man:
	rm -rf man
	$(GO) run -ldflags "$(LDFLAGS)" . man man >/dev/null

# Both builds of the tests: without the peers tag (what `go test ./...`
# compiles; a helper only peer tests use shows up as unused) and with it;
# and the installed-package test (tag installed).
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags peers ./...
	$(GO) vet -tags $(TAGS) ./...
	$(GO) vet -tags installed ./commands/packaging/
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.6.1 ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.6.1 -tags peers ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.6.1 -tags installed ./commands/packaging/

install: build man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 qbox $(DESTDIR)$(BINDIR)/qbox
	for p in $(PERSONALITIES); do ln -sf qbox $(DESTDIR)$(BINDIR)/$$p; done
	install -m 0644 man/*.1 $(DESTDIR)$(MANDIR)/man1
	install -m 0644 man/*.8 $(DESTDIR)$(MANDIR)/man8
	# The system queue: any user drops into maildrop/ (sticky, not
	# listable), root's sendmail -q picks up into queue/ (root only).
	install -d -m 0755 $(DESTDIR)$(SPOOLDIR)
	install -d -m 1733 $(DESTDIR)$(SPOOLDIR)/maildrop
	install -d -m 0700 $(DESTDIR)$(SPOOLDIR)/queue

# The Debian packages qbox and qbox-mta into dist/, built with dpkg-deb
# (commands/packaging/deb.sh says what goes where): a stripped build of
# the binary, the man pages, shell completion, the systemd units.
deb: man
	rm -rf dist
	mkdir -p dist/build
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(TAGS) -ldflags "$(LDFLAGS) -s -w" -o dist/build/qbox .
	bash commands/packaging/deb.sh dist/build/qbox man dist
	rm -rf dist/build

clean:
	rm -f qbox
	rm -rf man dist
