# ferry — make targets. `make run` and `make test` are all a new machine needs.
CARGO ?= cargo
PORT ?= 8080

.PHONY: build release run test lint fmt bench demo fuzz clean

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## Start a development node: loopback, data under ./.ferry, no Docker, no panel.
run:
	$(CARGO) run --quiet -- serve --dev --dir .ferry --port $(PORT)

## Every test: unit, integration (real nodes, real HTTP, real files), Docker.
test:
	$(CARGO) test --all-targets -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	@if [ -x scripts/bench.sh ]; then scripts/bench.sh; else echo "make bench: not yet (the benchmark lands with the performance issue)"; fi

demo:
	@if [ -x scripts/demo.sh ]; then scripts/demo.sh; else echo "make demo: not yet (the demo lands with the CLI issue)"; fi

clean:
	$(CARGO) clean
	rm -rf .ferry
