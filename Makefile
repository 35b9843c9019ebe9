# ComputeGrid. The two commands a fresh machine needs:
#   make demo   install missing system packages (as root), build, run a whole network on loopback
#   make test   install missing system packages (as root), build, run every test
SWIFT ?= swift

PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?= $(SYSCONFDIR)/systemd/system
# `make install BIN=.build/debug` installs a debug build without building (used by the tests).
# The default is the shipped form, `make release`: the Swift runtime and Foundation linked in.
BIN ?= .build-static/release
BINARIES = grid-controller grid-agent grid-job-shim gridctl

VERSION ?= $(shell $(BIN)/gridctl --version 2>/dev/null | cut -d' ' -f1)
DEB_ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_COMPRESS ?= xz

.PHONY: demo test build deps bench clean install install-files release deb

deps:
	@scripts/deps.sh

build: deps
	$(SWIFT) build

demo: build
	@scripts/demo.sh

test:
	@scripts/deps.sh --test
	$(SWIFT) build --build-tests
	$$(command -v stdbuf >/dev/null && echo stdbuf -oL -eL) $(SWIFT) test --skip-build

bench: deps
	$(SWIFT) build -c release
	.build/release/grid-bench

# The binaries as they ship (as deploy/Dockerfile builds them): the Swift runtime and Foundation
# linked in (--static-swift-stdlib), so a host needs only libzmq5, libsqlite3-0 and libxml2, and
# the agent shares no code pages with other processes (it hands its start-up pages back:
# BENCHMARKS.md, #7). Its own build folder, .build-static: the first build takes ~15 min on 2 cores.
release: deps
	for p in grid-controller grid-agent gridctl grid-job-shim; do \
	  $(SWIFT) build -c release --static-swift-stdlib --build-path .build-static --product $$p || exit 1; done

# Binaries (with their resource bundles: the dashboard, the accelerator catalog), systemd units,
# sample configs (never over ones already there), docs, man pages and shell completions.
install: release install-files

install-files:
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/computegrid \
	  $(DESTDIR)$(PREFIX)/share/doc/computegrid/agent-config $(DESTDIR)$(PREFIX)/share/doc/computegrid/controller-config \
	  $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	  $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	for b in $(BINARIES); do install -m 0755 $(BIN)/$$b $(DESTDIR)$(PREFIX)/bin/$$b || exit 1; done
	for r in $(BIN)/*.resources; do rm -rf $(DESTDIR)$(PREFIX)/bin/$$(basename $$r); cp -R $$r $(DESTDIR)$(PREFIX)/bin/ || exit 1; done
	for u in deploy/*.service; do sed -e 's|/usr/local/|$(PREFIX)/|g' -e 's|/etc/computegrid|$(SYSCONFDIR)/computegrid|g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u); chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u); done
	for c in controller-config/*.yaml; do [ -e $(DESTDIR)$(SYSCONFDIR)/computegrid/$$(basename $$c) ] || install -m 0644 $$c $(DESTDIR)$(SYSCONFDIR)/computegrid/; done
	[ -e $(DESTDIR)$(SYSCONFDIR)/computegrid/agent.yaml ] || install -m 0644 agent-config/host.yaml $(DESTDIR)$(SYSCONFDIR)/computegrid/agent.yaml
	install -m 0644 README.md ARCHITECTURE.md PROTOCOL.md JOBS.md BENCHMARKS.md $(DESTDIR)$(PREFIX)/share/doc/computegrid/
	install -m 0644 agent-config/README.md $(DESTDIR)$(PREFIX)/share/doc/computegrid/agent-config/
	install -m 0644 controller-config/README.md $(DESTDIR)$(PREFIX)/share/doc/computegrid/controller-config/
	install -m 0644 deploy/README.md $(DESTDIR)$(PREFIX)/share/doc/computegrid/deploy.md
	install -m 0644 docs/man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	$(BIN)/gridctl completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/gridctl
	$(BIN)/gridctl completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_gridctl
	$(BIN)/gridctl completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/gridctl.fish
	@echo "installed under $(DESTDIR)$(PREFIX); units in $(DESTDIR)$(UNITDIR); configs in $(DESTDIR)$(SYSCONFDIR)/computegrid"

# A Debian package of the same layout (PREFIX=/usr): `make deb`, or `make deb BIN=.build/debug`
# to package a debug build without building. Configs in /etc/computegrid are conffiles.
deb: $(if $(filter .build-static/release,$(BIN)),release)
	rm -rf .build/deb && mkdir -p .build/deb/root/DEBIAN
	$(MAKE) -s install-files BIN=$(BIN) DESTDIR=$(CURDIR)/.build/deb/root PREFIX=/usr UNITDIR=/lib/systemd/system
	{ echo "Package: computegrid"; echo "Version: $(VERSION)"; echo "Architecture: $(DEB_ARCH)"; \
	  echo "Maintainer: ComputeGrid developers <computegrid@localhost>"; \
	  echo "Depends: libzmq5, libsqlite3-0, libxml2"; echo "Section: admin"; echo "Priority: optional"; \
	  echo "Description: scheduler for a national network of AI accelerators"; \
	  echo " Node agent, regional controller, national scheduler and gridctl, with systemd units."; } > .build/deb/root/DEBIAN/control
	cd .build/deb/root && find etc/computegrid -type f | sed 's|^|/|' > DEBIAN/conffiles
	printf '#!/bin/sh\nset -e\ngetent passwd computegrid >/dev/null || useradd --system --home /var/lib/computegrid --shell /usr/sbin/nologin computegrid\ngetent passwd computegrid-agent >/dev/null || useradd --system --home /var/lib/computegrid/agent --shell /usr/sbin/nologin computegrid-agent\ncommand -v systemctl >/dev/null && systemctl daemon-reload || true\n' > .build/deb/root/DEBIAN/postinst
	chmod 0755 .build/deb/root/DEBIAN/postinst
	dpkg-deb -Z$(DEB_COMPRESS) --root-owner-group --build .build/deb/root .build/computegrid_$(VERSION)_$(DEB_ARCH).deb
	@echo "package: .build/computegrid_$(VERSION)_$(DEB_ARCH).deb"

clean:
	rm -rf .build run
