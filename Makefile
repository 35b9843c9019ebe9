# ComputeGrid. The two commands a fresh machine needs:
#   make demo   install missing system packages (as root), build, run a whole network on loopback
#   make test   install missing system packages (as root), build, run every test
SWIFT ?= swift

.PHONY: demo test build deps bench clean

deps:
	@scripts/deps.sh

build: deps
	$(SWIFT) build

demo: build
	@scripts/demo.sh

test:
	@scripts/deps.sh --test
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

bench: deps
	$(SWIFT) build -c release
	.build/release/grid-bench

clean:
	rm -rf .build run
